//! The fuzz targets as proptest properties: random inputs on stable Rust, with shrinking to a
//! minimal failing input when one fails. Cheap next to cargo-fuzz (no coverage feedback), but
//! it runs in every `cargo test`.

use proptest::prelude::*;
use taurus_fuzz_targets::config::fuzz_config;
use taurus_fuzz_targets::protocol::fuzz_protocol;
use taurus_fuzz_targets::raft_codec::fuzz_raft_codec;
use taurus_fuzz_targets::state_machine::fuzz_state_machine;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random command sequences never panic and keep every invariant.
    #[test]
    fn command_sequences_keep_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_state_machine(&data);
    }

    /// Random protobuf messages never panic the decoding, conversion and validation path.
    #[test]
    fn protocol_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_protocol(&data);
    }

    /// Random MessagePack never panics the Raft codec.
    #[test]
    fn raft_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_raft_codec(&data);
    }

    /// Configurations made of plausible keys and values never panic the parsers and checks.
    #[test]
    fn configs_never_panic(
        lines in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "id", "listen", "heartbeat_interval", "lease_timeout", "masters_agent_ttl",
                    "election_timeout_min", "agent_ttl", "max_tasks", "masters", "rpc_timeout",
                ]),
                prop::sample::select(vec![
                    "1", "0", "\"1s\"", "\"0s\"", "\"18446744073709551615s\"", "\"500000000years\"",
                    "\"127.0.0.1:1\"", "[\"a:1\"]", "-1", "\"x\"",
                ]),
                prop::sample::select(vec!["", "[raft]", "[scheduler]", "[batch]", "[labels]"]),
            ),
            0..8,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(k, v, section)| format!("{section}\n{k} = {v}\n"))
            .collect();
        fuzz_config(text.as_bytes());
    }
}
