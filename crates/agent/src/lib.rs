//! Taurus agent: runs the tasks the masters assign to it, as real processes, and never lets a
//! task run on two agents at once.
//!
//! # Layout
//!
//! - `config`: [`AgentConfig`] (TOML + overrides) and its checked form [`ResolvedConfig`].
//! - `exec`: the [`Executor`], which runs one attempt as a process group with a timeout,
//!   cancellation and bounded output capture. Testable without any master.
//! - `pgroup`: process-group signalling and the `running.pgids` file that lets a restarted agent
//!   kill what its SIGKILLed predecessor left running.
//! - `sandbox`: who a task runs as (a configured or a per-task dynamic uid), its working
//!   directory, its clean environment and its limits (cgroup v2 or rlimits); the threat model is
//!   in `docs/security.md`.
//! - `supervisor`: the per-task supervisor process (`taurus agent supervise`), which kills the
//!   task when the agent dies or its lease runs out, whatever state the agent is in.
//! - `runtime`: [`run`], the actor that registers, follows the assignment feed, claims and
//!   starts attempts, heartbeats, fences itself when its lease lapses, and shuts down.
//! - `reporter`: batches STARTED/FINISHED reports and retries them until acknowledged.
//! - `masters`: channels to every master, one-attempt calls, back-off.
//! - `lease`: the lease and the load average (pure).
//! - `metrics`, `http`: Prometheus metrics (events counted by the runtime, process and task
//!   resource use read at scrape time) and the optional HTTP port serving them.
//!
//! # Safety argument, in short
//!
//! An attempt runs only after its STARTED claim (carrying its fencing token) was applied, and
//! only while the agent's lease holds. The lease is renewed only by an acknowledged heartbeat
//! and lasts `lease_timeout` from when that heartbeat was *sent*, which is before the leader
//! received it; the leader reassigns only `agent_ttl > lease_timeout` after the last heartbeat
//! it received. So an agent that lost contact kills its attempts before anyone else may start
//! them. The agent is not trusted to be around for that: each task runs under a supervisor
//! process that knows the lease deadline and kills the task's whole process group when it
//! passes (the agent may be paused) or when the agent's end of its control socket closes (the
//! agent died, even by SIGKILL). Without a supervisor (the executor alone, in tests) agent death
//! is covered by `PR_SET_PDEATHSIG` (the task's leader) and by the `running.pgids` file (the
//! rest of its group, killed at the next start).
//!
//! **Architecture Invariant:** the agent never reports an attempt it killed because of a
//! master's decision or of fencing (`stop`, `stale`, re-registration, lease expiry): the masters
//! have already given the task to someone else, and only FINISHED reports of attempts that ran
//! to their end (or were killed by the agent's own timeout or shutdown) are sent.

mod config;
mod error;
mod exec;
mod http;
mod lease;
mod machine;
mod masters;
pub mod metrics;
pub mod pgroup;
mod reporter;
mod runtime;
pub mod sandbox;
pub mod supervisor;
mod tail;

pub use config::AgentConfig;
pub use config::DEFAULT_MASTERS_AGENT_TTL;
pub use config::DEFAULT_RPC_TIMEOUT;
pub use config::MAX_REPORT_BATCH_BYTES;
pub use config::Overrides;
pub use config::ResolvedConfig;
pub use config::parse_labels;
pub use error::AgentError;
pub use exec::BUILTIN_PREFIX;
pub use exec::End;
pub use exec::ExecRequest;
pub use exec::Executor;
pub use exec::KillSwitch;
pub use exec::Outcome;
pub use exec::StopReason;
pub use lease::Lease;
pub use lease::LoadAverage;
pub use lease::monotonic_now_ns;
pub use runtime::run;
pub use runtime::run_resolved;
pub use runtime::run_with_http;
pub use sandbox::ExecConfig;
pub use sandbox::ExecSettings;
pub use sandbox::TaskUser;
pub use tail::TailBuffer;
