//! Taurus master: one Raft node plus the public gRPC services.
//!
//! `node` starts everything: opens the sled store, builds the openraft node, forms the cluster
//! on first start, and serves `TaskService`, `ClusterService` and the internal Raft service on
//! one port. `batcher` coalesces concurrent submissions into one Raft entry, `forward` sends
//! writes from a follower to the leader, `read` implements linearizable and stale reads, and
//! `service` is the only place where errors become `tonic::Status`.

pub mod config;
pub mod error;
pub mod node;

pub use config::MasterConfig;
pub use error::MasterError;
pub use node::run;
