#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taurus_fuzz_targets::config::fuzz_config(data);
});
