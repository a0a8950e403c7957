//! Taurus master: one Raft node plus the public gRPC services.
//!
//! `node` starts everything: opens the sled store, builds the openraft node, forms the cluster
//! on first start, and serves `TaskService`, `ClusterService`, health and the internal Raft
//! service on one port. `batcher` coalesces concurrent submissions into one Raft entry,
//! `write` classifies failed proposals, `node::Node::read_barrier` implements linearizable
//! reads from any replica, and `service` holds the gRPC handlers: the only place where errors
//! become `tonic::Status` and where followers forward writes to the leader. `http` serves the
//! optional HTTP port (`/metrics` from `metrics`, `/healthz`, the status page).

pub mod auth;
pub mod batcher;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod service;
pub mod status_page;
pub mod trace;
pub mod write;

pub use config::MasterConfig;
pub use error::MasterError;
pub use node::run;
pub use node::run_with_listener;
pub use node::run_with_listeners;
