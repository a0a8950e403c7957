//! Seeding a new master's data dir from a backup (`taurus master restore`): what the directory
//! holds afterwards, as the store and openraft read it back on start. (A separate test binary:
//! opening a data dir touches the process-wide panic hook that a unit test of `verify` counts.)

use std::collections::BTreeMap;

use openraft::StorageHelper;
use openraft::alias::LeaderIdOf;
use openraft::alias::LogIdOf;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderIdExt;
use taurus_core::Command;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::command::SubmitRequest;
use taurus_store::NodeId;
use taurus_store::TypeConfig;
use taurus_store::backup::Backup;
use taurus_store::backup::RESTORE_INDEX_GAP;
use taurus_store::backup::decode_backup;
use taurus_store::backup::encode_backup;
use taurus_store::backup::seed_data_dir;

type LogId = LogIdOf<TypeConfig>;

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(LeaderIdOf::<TypeConfig>::new_committed(term, node), index)
}

/// A backup of 50 pending tasks, taken at log id (3, 1, 41) in term 4.
fn backup() -> Backup {
    let mut st = State::new();
    st.apply(
        1,
        Command::SubmitTasks {
            requests: vec![SubmitRequest {
                request_id: "r1".into(),
                queue_limit: None,
                submitted_by: String::new(),
                tasks: (0..50)
                    .map(|i| TaskSpec {
                        id: format!("t-{i}"),
                        command: vec!["true".into()],
                        max_attempts: 1,
                        ..TaskSpec::default()
                    })
                    .collect(),
            }],
            now_ms: 1_700_000_000_000,
        },
    );
    let members = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
    let encoded = encode_backup(&st, log_id(3, 1, 41), 4, members, 1, 1_700_000_000_123).unwrap();
    let file: Vec<u8> = encoded.chunks(1 << 20).flatten().copied().collect();
    decode_backup(&file).unwrap()
}

#[tokio::test]
async fn seeding_refuses_a_used_dir_and_a_foreign_id() {
    let backup = backup();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    let peers = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
    let err = seed_data_dir(dir.path(), &backup, 1, &peers).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let err = seed_data_dir(&dir.path().join("new"), &backup, 2, &peers)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("id: master 2"), "{err}");
    assert!(
        !dir.path().join("new").exists(),
        "nothing created for a refused id"
    );
}

#[tokio::test]
async fn a_seeded_dir_starts_after_the_backup_with_the_new_membership() {
    let backup = backup();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("m7");
    let peers = BTreeMap::from([
        (7, "127.0.0.1:7007".to_string()),
        (8, "127.0.0.1:7008".to_string()),
    ]);
    let seeded = seed_data_dir(&data_dir, &backup, 7, &peers).await.unwrap();
    let start = log_id(3, 1, 41 + RESTORE_INDEX_GAP);
    assert_eq!(seeded.last_log_id, start);
    assert_eq!(seeded.vote_term, 5, "above the backup's term 4");

    // A master opening it: verified, at the restored log id, with the new members.
    // (`open` waits out the lock of the seeding handles going away.)
    let (mut log, mut sm) = taurus_store::log_store::open(&data_dir).unwrap();
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(start));
    let voters: Vec<NodeId> = membership.membership().voter_ids().collect();
    assert_eq!(voters, vec![7, 8]);
    let addrs: Vec<String> = membership
        .membership()
        .nodes()
        .map(|(_, n)| n.addr.clone())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:7007", "127.0.0.1:7008"]);
    assert_eq!(sm.read(|s| s.len()), 50);
    assert_eq!(log.committed().unwrap(), Some(start));

    // What openraft makes of it when the Raft is created: the vote as written, everything up
    // to the restored log id committed, the (empty) log purged up to it.
    let state = StorageHelper::new(&mut log, &mut sm)
        .with_id(7)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(state.vote_ref().leader_id().term, 5);
    assert_eq!(state.local_committed(), Some(&start));
    let log_state = log.get_log_state().await.unwrap();
    assert_eq!(log_state.last_purged_log_id, Some(start));
    assert_eq!(log_state.last_log_id, Some(start));
}
