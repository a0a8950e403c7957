//! Taurus Jepsen: the evidence that Taurus keeps its promises under faults.
//!
//! This crate is the *checking* half of the failure-injection suite (issue 4): a pure library
//! that reads what a test run recorded and decides whether the invariants of
//! `architecture.md` §6 held. It does no I/O beyond parsing strings, starts nothing and reads no
//! clock (except the optional wall-clock budget of the linearizability search).
//!
//! * [`history`]: the operation history (JSON lines of invoke / ok / fail / info events) and
//!   its pairing into [`history::Op`]s, with Jepsen's crashed-process convention;
//! * [`execlog`]: the execution log that tasks append themselves, per agent;
//! * [`checker`]: one module per invariant, all behind [`checker::Checker`], each returning a
//!   [`checker::Verdict`] (`valid`: true / false / unknown, anomalies, stats);
//! * [`error`]: the crate's single error type.
//!
//! The runner half (a first, loopback-only cut; see `jepsen-tests/README.md`):
//! * [`recorder`]: records a history from many tasks on one monotonic clock;
//! * [`workload`]: concurrent clients submitting, reading and cancelling tasks;
//! * [`proxy`]: a loopback TCP proxy that cuts and heals connections (agent partitions);
//! * the `taurus-jepsen` binary (`src/main.rs`): starts the cluster, runs the workload and the
//!   nemeses, checks, reports.

pub mod checker;
pub mod error;
pub mod execlog;
pub mod history;
pub mod net;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod workload;

#[cfg(test)]
pub(crate) mod testkit;

pub use checker::CheckInput;
pub use checker::Checker;
pub use checker::Valid;
pub use checker::Verdict;
pub use error::Error;
pub use execlog::Execution;
pub use history::History;
pub use history::Op;
