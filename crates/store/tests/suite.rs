//! openraft's own storage test suite, run against the sled log store and state machine.

use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use taurus_store::LogStore;
use taurus_store::StateMachineStore;
use taurus_store::TypeConfig;
use tempfile::TempDir;

/// Opens a fresh store in a new temporary directory (removed when the guard drops).
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let (log, sm) = taurus_store::log_store::open(dir.path())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&std::io::Error::from(e))))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    TypeConfig::run(async {
        if let Err(e) = Suite::test_all(Builder).await {
            panic!("openraft storage suite failed: {e}");
        }
    });
}
