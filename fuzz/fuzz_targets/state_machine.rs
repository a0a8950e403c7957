#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taurus_fuzz_targets::state_machine::fuzz_state_machine(data);
});
