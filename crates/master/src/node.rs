//! Starting and stopping a master.

use std::future::Future;

use crate::config::MasterConfig;
use crate::error::MasterError;

/// Runs a master until `shutdown` resolves, then stops it cleanly.
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), MasterError> {
    config.validate()?;
    shutdown.await;
    Err(MasterError::Raft("not implemented yet".into()))
}
