#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    taurus_fuzz_targets::raft_codec::fuzz_raft_codec(data);
});
