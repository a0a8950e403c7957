//! Fuzz targets as ordinary library code.
//!
//! Each target is a `fn(&[u8])` that must never panic on any input: a panic is a finding.
//! `fuzz/` (a cargo-fuzz project, nightly only) wraps each in a `fuzz_target!`, and the stable
//! test `tests/corpus.rs` replays every file of the committed corpus `fuzz/corpus/<target>/`
//! through the same functions, so the corpus and the reproducers of past findings are checked on
//! every CI run even where nightly is missing.
//!
//! - [`state_machine::fuzz_state_machine`]: bytes → a sequence of interacting commands applied to
//!   a [`taurus_core::State`], with the state's invariants checked after every command, and
//!   determinism and snapshot round trips checked at the end.
//! - [`protocol::fuzz_protocol`]: bytes → prost decoding of the request messages (and the
//!   replies agents and clients decode) → the conversions of `taurus_protocol::convert` →
//!   `taurus_core::validate` → apply.
//! - [`raft_codec::fuzz_raft_codec`]: bytes → the MessagePack decoding of Raft messages, log
//!   entries and snapshots (`taurus_store::codec`), and `State::from_image`.
//! - [`config::fuzz_config`]: text → the master and agent TOML parsers and their checks, and the
//!   `--peers` / `--labels` flag parsers.

pub mod config;
pub mod protocol;
pub mod raft_codec;
pub mod state_machine;

/// One fuzz target: its name (the cargo-fuzz target and corpus directory) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order CI runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "state_machine",
        run: state_machine::fuzz_state_machine,
    },
    Target {
        name: "protocol",
        run: protocol::fuzz_protocol,
    },
    Target {
        name: "raft_codec",
        run: raft_codec::fuzz_raft_codec,
    },
    Target {
        name: "config",
        run: config::fuzz_config,
    },
];
