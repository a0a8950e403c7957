//! A master restarted on a damaged data directory refuses to start: `run` returns at once with
//! [`StoreError::Damaged`], whose message names the damaged path and the recovery procedure
//! (what `taurus master start` prints on stderr before exiting non-zero), and it never serves.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use taurus_master::MasterError;
use taurus_master::config::MasterConfig;
use taurus_master::run_with_listener;
use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_store::StoreError;
use taurus_store::network::Channels;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

async fn config(dir: &Path) -> (MasterConfig, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let config = MasterConfig {
        id: 1,
        listen: addr,
        data_dir: dir.to_path_buf(),
        peers: BTreeMap::from([(1, addr.to_string())]),
        ..MasterConfig::default()
    };
    (config, listener)
}

/// Runs a one-master cluster on `dir` until it has acknowledged a few submits, then stops it.
async fn run_once(dir: &Path) {
    let (config, listener) = config(dir).await;
    let addr = config.listen.to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let master = tokio::spawn(run_with_listener(config, listener, Channels::default(), async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + WAIT;
    let mut acknowledged = 0;
    while acknowledged < 5 {
        assert!(
            Instant::now() < deadline,
            "the master never acknowledged 5 submits"
        );
        let Ok(mut client) = TaskServiceClient::connect(format!("http://{addr}")).await else {
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        };
        let req = v1::SubmitTasksRequest {
            tasks: vec![v1::TaskSpec {
                id: format!("t{acknowledged}"),
                command: vec!["true".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        match client.submit_tasks(req).await {
            Ok(_) => acknowledged += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    let _ = stop.send(());
    let result = tokio::time::timeout(WAIT, master)
        .await
        .expect("the master stops");
    result.expect("master task").expect("clean stop");
}

/// Starts the master on `dir` again, expecting the damage report for `damaged`.
async fn expect_refusal(dir: &Path, damaged: &Path) {
    let (config, listener) = config(dir).await;
    let started = Instant::now();
    let result = tokio::time::timeout(
        WAIT,
        run_with_listener(config, listener, Channels::default(), async {}),
    )
    .await
    .expect("a damaged master returns instead of serving");
    let err = result.expect_err("a damaged data dir must not start");
    assert!(
        matches!(err, MasterError::Store(StoreError::Damaged { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&damaged.display().to_string()), "{msg}");
    for step in ["remove-master", "delete", "NEW id", "add-master"] {
        assert!(msg.contains(step), "{step:?} missing from {msg}");
    }
    assert!(
        started.elapsed() < WAIT,
        "refused only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_damaged_snapshot_file_keeps_the_master_down() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("m1");
    run_once(&dir).await;
    let snapshot = dir.join(taurus_store::state_machine::SNAPSHOT_FILE);
    std::fs::write(&snapshot, b"TAURSNP2 but not really a snapshot").unwrap();
    expect_refusal(&dir, &snapshot).await;
}

#[tokio::test]
async fn a_cut_raft_log_keeps_the_master_down() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("m1");
    run_once(&dir).await;
    let db = dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // sled reports the damage for the directory as a whole, or the check names its log file.
    expect_refusal(&dir, &dir).await;
}
