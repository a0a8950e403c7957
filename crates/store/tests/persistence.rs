//! Durability of the sled store across reopen, snapshot transfer between stores, and rejection
//! of damaged, corrupt or foreign on-disk data (errors, never panics). Cut files and flipped
//! bits at scale: `damage.rs`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use openraft::BasicNode;
use openraft::EntryPayload;
use openraft::Membership;
use openraft::StorageHelper;
use openraft::alias::EntryOf;
use openraft::alias::LeaderIdOf;
use openraft::alias::LogIdOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use taurus_core::Command;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::SubmitRequest;
use taurus_store::LogStore;
use taurus_store::StateMachineStore;
use taurus_store::StoreError;
use taurus_store::TypeConfig;
use taurus_store::log_store::SCHEMA_VERSION;
use taurus_store::log_store::open;
use tempfile::TempDir;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const NODE: u64 = 1;

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(LeaderIdOf::<TypeConfig>::new_committed(term, NODE), index)
}

fn submit(ids: &[&str]) -> Command {
    Command::SubmitTasks {
        requests: vec![SubmitRequest {
            request_id: String::new(),
            queue_limit: None,
            submitted_by: String::new(),
            tasks: ids
                .iter()
                .map(|id| TaskSpec {
                    id: id.to_string(),
                    command: vec!["echo".into(), id.to_string()],
                    // TaskSpec::default() has max_attempts 0, which validation rejects.
                    max_attempts: 1,
                    ..TaskSpec::default()
                })
                .collect(),
        }],
        now_ms: 1_700_000_000_000,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let nodes: BTreeMap<u64, BasicNode> = [(NODE, BasicNode::new("127.0.0.1:7001"))].into_iter().collect();
    let m = Membership::new(vec![[NODE].into_iter().collect()], nodes).expect("valid membership");
    Entry::new_membership(lid(term, index), m)
}

/// Log: 0 membership, 1 blank, 2..=4 one SubmitTasks each (t2, t3, t4), 5 blank.
fn sample_log() -> Vec<Entry> {
    vec![
        membership(1, 0),
        Entry::new_blank(lid(1, 1)),
        Entry::new_normal(lid(1, 2), submit(&["t2"])),
        Entry::new_normal(lid(2, 3), submit(&["t3"])),
        Entry::new_normal(lid(2, 4), submit(&["t4"])),
        Entry::new_blank(lid(2, 5)),
    ]
}

async fn apply(sm: &mut StateMachineStore, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
    let items: Vec<_> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(futures::stream::iter(items)).await
}

fn tasks(sm: &StateMachineStore) -> Vec<String> {
    sm.read(|s| {
        s.list(&[], None, 1000)
            .tasks
            .iter()
            .map(|t| t.spec.id.clone())
            .collect()
    })
}

fn run<F: Future<Output = ()>>(f: F) {
    TypeConfig::run(f)
}

fn must_open(dir: &Path) -> (LogStore, StateMachineStore) {
    match open(dir) {
        Ok(x) => x,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

#[test]
fn reopen_restores_vote_log_committed_snapshot_and_state() {
    run(async {
        let dir = TempDir::new().unwrap();
        let vote = Vote::new_committed(2, NODE);
        let snapshot_meta;
        {
            let (mut log, mut sm) = must_open(dir.path());
            let mut applied_rx = sm.subscribe();
            log.save_vote(&vote).await.unwrap();
            log.blocking_append(sample_log()).await.unwrap();
            log.save_committed(Some(lid(2, 4))).await.unwrap();

            apply(&mut sm, sample_log().into_iter().take(3)).await.unwrap();
            assert_eq!(sm.applied_index(), 2);
            assert!(applied_rx.has_changed().unwrap());
            assert_eq!(*applied_rx.borrow_and_update(), 2);

            let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            assert_eq!(snap.meta.last_log_id, Some(lid(1, 2)));
            assert_eq!(snap.meta.last_membership.log_id(), &Some(lid(1, 0)));
            snapshot_meta = snap.meta;

            // Applied after the snapshot: only the log (and committed id) carry these.
            apply(&mut sm, sample_log().into_iter().skip(3).take(2))
                .await
                .unwrap();
            assert_eq!(tasks(&sm), ["t2", "t3", "t4"]);
            assert_eq!(*applied_rx.borrow(), 4);
        }

        // Everything dropped: reopen the same dir.
        let (mut log, mut sm) = must_open(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, None);
        assert_eq!(st.last_log_id, Some(lid(2, 5)));
        assert_eq!(log.read_committed().await.unwrap(), Some(lid(2, 4)));
        let entries = log.try_get_log_entries(0..6).await.unwrap();
        assert_eq!(entries, sample_log());

        let cur = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("snapshot survives restart");
        assert_eq!(cur.meta, snapshot_meta);
        // The snapshot is loaded on open: applied state is the snapshot's.
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(1, 2)));
        assert_eq!(mem.log_id(), &Some(lid(1, 0)));
        assert_eq!(tasks(&sm), ["t2"]);
        assert_eq!(sm.applied_index(), 2);
        assert_eq!(*sm.subscribe().borrow(), 2);

        // What openraft does when the Raft is created: re-apply (applied, committed].
        let state = StorageHelper::new(&mut log, &mut sm)
            .with_id(NODE)
            .get_initial_state()
            .await
            .unwrap();
        assert_eq!(state.vote_ref(), &vote);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, 4)));
        assert_eq!(tasks(&sm), ["t2", "t3", "t4"]);
        assert_eq!(sm.applied_index(), 4);
        assert_eq!(
            sm.read(|s| s.get("t4").map(|t| (t.state, t.created_index))),
            Some((TaskState::Pending, 4))
        );
    });
}

#[test]
fn reopen_without_snapshot_reapplies_the_whole_committed_log() {
    run(async {
        let dir = TempDir::new().unwrap();
        {
            let (mut log, mut sm) = must_open(dir.path());
            log.save_vote(&Vote::new_committed(2, NODE)).await.unwrap();
            log.blocking_append(sample_log()).await.unwrap();
            log.save_committed(Some(lid(2, 5))).await.unwrap();
            apply(&mut sm, sample_log()).await.unwrap();
            assert_eq!(tasks(&sm), ["t2", "t3", "t4"]);
        }
        let (mut log, mut sm) = must_open(dir.path());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        assert!(tasks(&sm).is_empty());

        StorageHelper::new(&mut log, &mut sm)
            .with_id(NODE)
            .get_initial_state()
            .await
            .unwrap();
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(2, 5)));
        assert_eq!(mem.log_id(), &Some(lid(1, 0)));
        assert_eq!(tasks(&sm), ["t2", "t3", "t4"]);
    });
}

#[test]
fn purge_and_truncate_survive_reopen() {
    run(async {
        let dir = TempDir::new().unwrap();
        {
            let (mut log, mut sm) = must_open(dir.path());
            // As Raft does it: a vote before entries of its term, a snapshot before a purge.
            log.save_vote(&Vote::new_committed(2, NODE)).await.unwrap();
            log.blocking_append(sample_log()).await.unwrap();
            apply(&mut sm, sample_log().into_iter().take(2)).await.unwrap();
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            log.purge(lid(1, 1)).await.unwrap();
            log.truncate_after(Some(lid(2, 3))).await.unwrap();
        }
        let (mut log, _sm) = must_open(dir.path());
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 1)));
        assert_eq!(st.last_log_id, Some(lid(2, 3)));
        let got: Vec<u64> = log
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.index())
            .collect();
        assert_eq!(got, [2, 3]);
    });
}

#[test]
fn snapshot_installs_on_another_store_and_survives_its_restart() {
    run(async {
        let dir_a = TempDir::new().unwrap();
        let dir_b = TempDir::new().unwrap();
        let (_log_a, mut sm_a) = must_open(dir_a.path());
        apply(&mut sm_a, sample_log()).await.unwrap();
        let snap = sm_a.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(2, 5)));

        {
            let (_log_b, mut sm_b) = must_open(dir_b.path());
            let mut rx = sm_b.subscribe();
            sm_b.install_snapshot(&snap.meta, snap.snapshot.clone())
                .await
                .unwrap();
            assert_eq!(tasks(&sm_b), ["t2", "t3", "t4"]);
            assert_eq!(
                sm_b.applied_state().await.unwrap(),
                (snap.meta.last_log_id, snap.meta.last_membership.clone())
            );
            assert_eq!(*rx.borrow_and_update(), 5);
            let cur = sm_b
                .get_current_snapshot()
                .await
                .unwrap()
                .expect("installed snapshot is current");
            assert_eq!(cur.meta, snap.meta);
            assert_eq!(cur.snapshot, snap.snapshot);
        }
        let (_log_b, mut sm_b) = must_open(dir_b.path());
        assert_eq!(tasks(&sm_b), ["t2", "t3", "t4"]);
        assert_eq!(sm_b.applied_index(), 5);
        assert_eq!(
            sm_b.get_current_snapshot().await.unwrap().map(|s| s.meta),
            Some(snap.meta)
        );
    });
}

#[test]
fn an_older_build_never_replaces_a_newer_snapshot() {
    run(async {
        let dir = TempDir::new().unwrap();
        let other = TempDir::new().unwrap();
        let (_log, mut sm) = must_open(dir.path());
        apply(&mut sm, sample_log().into_iter().take(3)).await.unwrap();
        // Captured at index 2 ...
        let mut old_builder = sm.get_snapshot_builder().await;

        // ... but a newer snapshot (index 5) is installed first.
        let (_l2, mut leader) = must_open(other.path());
        apply(&mut leader, sample_log()).await.unwrap();
        let newer = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.install_snapshot(&newer.meta, newer.snapshot).await.unwrap();

        // The builder reads the state when it runs: it now sees index 5 too, and never writes
        // anything older than the stored snapshot.
        let built = old_builder.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(lid(2, 5)));
        let cur = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(cur.meta.last_log_id, Some(lid(2, 5)));
    });
}

#[test]
fn garbage_snapshots_are_rejected_and_change_nothing() {
    run(async {
        let dir = TempDir::new().unwrap();
        let other = TempDir::new().unwrap();
        let (_log, mut sm) = must_open(dir.path());
        apply(&mut sm, sample_log().into_iter().take(3)).await.unwrap();

        let (_l2, mut leader) = must_open(other.path());
        apply(&mut leader, sample_log()).await.unwrap();
        let good = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        for garbage in [
            b"definitely not a snapshot".to_vec(),
            Vec::new(),
            good.snapshot[..good.snapshot.len() / 2].to_vec(),
            // Well-formed MessagePack, wrong shape.
            taurus_store::codec::encode(&("tasks", 3u32)).unwrap(),
        ] {
            let err = sm
                .install_snapshot(&good.meta, garbage)
                .await
                .expect_err("garbage must be rejected");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }

        // A snapshot from another schema version.
        #[derive(serde::Serialize)]
        struct Foreign {
            schema: u32,
            state: Empty,
        }
        #[derive(serde::Serialize)]
        struct Empty {
            next_seq: u64,
            tasks: Vec<u8>,
        }
        let foreign = taurus_store::codec::encode(&Foreign {
            schema: SCHEMA_VERSION + 1,
            state: Empty {
                next_seq: 0,
                tasks: vec![],
            },
        })
        .unwrap();
        let err = sm
            .install_snapshot(&good.meta, foreign)
            .await
            .expect_err("foreign schema");
        assert!(err.to_string().contains("schema version"), "{err}");

        assert_eq!(tasks(&sm), ["t2"]);
        assert_eq!(sm.applied_index(), 2);
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
    });
}

/// The sled database under the store, for tampering (waits for the store's lock to go away).
fn raw_db(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for {}: {e}", dir.display());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open raw sled db {}: {e}", dir.display()),
        }
    }
}

#[test]
fn schema_version_mismatch_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(must_open(dir.path()));
    {
        let db = raw_db(dir.path());
        db.open_tree("raft_meta")
            .unwrap()
            .insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = open(dir.path()).err().expect("newer schema must be refused");
    assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("schema version 2"),
        "{msg}"
    );

    // Data without any version: not ours (or from before versioning).
    let dir = TempDir::new().unwrap();
    {
        let db = raw_db(dir.path());
        db.open_tree("raft_log")
            .unwrap()
            .insert(0u64.to_be_bytes(), b"x".as_slice())
            .unwrap();
        db.flush().unwrap();
    }
    let err = open(dir.path()).err().expect("unversioned data must be refused");
    assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
    assert!(err.to_string().contains("without a schema version"), "{err}");

    // A malformed version key.
    let dir = TempDir::new().unwrap();
    {
        let db = raw_db(dir.path());
        db.open_tree("raft_meta")
            .unwrap()
            .insert("schema_version", b"v1".as_slice())
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(open(dir.path()), Err(StoreError::Schema { .. })));
}

#[test]
fn a_fresh_dir_gets_the_schema_version_and_reopens() {
    let dir = TempDir::new().unwrap();
    drop(must_open(dir.path()));
    drop(must_open(dir.path()));
    let db = raw_db(dir.path());
    let v = db
        .open_tree("raft_meta")
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap();
    assert_eq!(v.as_ref(), SCHEMA_VERSION.to_be_bytes());
}

/// Damages the store in `dir` through a raw sled handle, then expects `open` to refuse it as
/// damaged with `want` in the message (which always names the data dir and the recovery).
fn expect_damaged(dir: &Path, want: &str, tamper: impl FnOnce(&sled::Db)) {
    {
        let db = raw_db(dir);
        tamper(&db);
        db.flush().unwrap();
    }
    let err = open(dir).err().expect("damaged data must not open");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(want), "{want:?} missing from {msg}");
    assert!(
        msg.contains(&dir.display().to_string()) && msg.contains("remove-master"),
        "{msg}"
    );
}

/// A store with a vote, the sample log, its state applied and a snapshot; returns its dir.
fn full_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    run(async {
        let (mut log, mut sm) = must_open(dir.path());
        log.save_vote(&Vote::new_committed(2, NODE)).await.unwrap();
        log.blocking_append(sample_log()).await.unwrap();
        apply(&mut sm, sample_log()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    });
    dir
}

#[test]
fn corrupt_values_are_refused_at_open() {
    let dir = full_dir();
    drop(must_open(dir.path()));

    let garbage = |index: u64| {
        move |db: &sled::Db| {
            db.open_tree("raft_log")
                .unwrap()
                .insert(index.to_be_bytes(), b"\xc1garbage".as_slice())
                .unwrap();
        }
    };
    expect_damaged(dir.path(), "raft log entry 1 does not decode", garbage(1));

    let dir = full_dir();
    expect_damaged(dir.path(), "index 3 holds the entry of index 4", |db| {
        let log = db.open_tree("raft_log").unwrap();
        let four = log.get(4u64.to_be_bytes()).unwrap().unwrap();
        log.insert(3u64.to_be_bytes(), four).unwrap();
    });

    let dir = full_dir();
    expect_damaged(dir.path(), "entries 3..4 are missing", |db| {
        db.open_tree("raft_log")
            .unwrap()
            .remove(3u64.to_be_bytes())
            .unwrap();
    });

    let dir = full_dir();
    expect_damaged(dir.path(), "\"vote\" does not decode", |db| {
        db.open_tree("raft_meta")
            .unwrap()
            .insert("vote", b"\x93".as_slice())
            .unwrap();
    });

    // An older vote than the log's terms: the vote was lost.
    let dir = full_dir();
    expect_damaged(dir.path(), "the vote was lost", |db| {
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert(
            "vote",
            taurus_store::codec::encode(&Vote::new_committed(1, NODE)).unwrap(),
        )
        .unwrap();
    });

    // A purge point the snapshot does not cover.
    let dir = full_dir();
    std::fs::remove_file(dir.path().join(taurus_store::state_machine::SNAPSHOT_FILE)).unwrap();
    expect_damaged(dir.path(), "snapshot covers only nothing", |db| {
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("last_purged", taurus_store::codec::encode(&lid(1, 1)).unwrap())
            .unwrap();
        let log = db.open_tree("raft_log").unwrap();
        log.remove(0u64.to_be_bytes()).unwrap();
        log.remove(1u64.to_be_bytes()).unwrap();
    });

    // A committed id past the end of the log.
    let dir = full_dir();
    expect_damaged(dir.path(), "beyond the end of the log", |db| {
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("committed", taurus_store::codec::encode(&lid(2, 9)).unwrap())
            .unwrap();
    });
}

#[test]
fn a_damaged_snapshot_file_is_refused_at_open() {
    let dir = full_dir();
    let snap = dir.path().join(taurus_store::state_machine::SNAPSHOT_FILE);
    let good = std::fs::read(&snap).expect("a snapshot file was written");
    let check = |bytes: &[u8], want: &str| {
        std::fs::write(&snap, bytes).unwrap();
        let err = open(dir.path()).err().expect("a damaged snapshot must fail open");
        let StoreError::Damaged { path, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path, &snap);
        assert!(err.to_string().contains(want), "{want:?} missing from {err}");
    };
    check(b"nope", "not a Taurus snapshot file");
    check(&good[..good.len() - 1], "checksum mismatch");
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    check(&flipped, "checksum mismatch");
    // Restored, it opens again.
    std::fs::write(&snap, &good).unwrap();
    drop(must_open(dir.path()));
}

/// A data dir that was opened once (so it holds a schema version and a vote).
fn used_dir() -> TempDir {
    let dir = TempDir::new().unwrap();
    run(async {
        let (mut log, _sm) = must_open(dir.path());
        log.save_vote(&Vote::new_committed(1, NODE)).await.unwrap();
    });
    dir
}

#[test]
fn a_damaged_sled_dir_is_an_error_not_a_panic() {
    // sled's config file overwritten: sled refuses it.
    let dir = used_dir();
    std::fs::write(dir.path().join("conf"), b"this is not a sled config file").unwrap();
    let err = open(dir.path()).err().expect("garbage conf");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );

    // sled's log overwritten or emptied: sled "recovers" an empty database without complaint;
    // it must not pass for a fresh data dir.
    for damage in [vec![0xab_u8; 4096], Vec::new()] {
        let dir = used_dir();
        std::fs::write(dir.path().join("db"), damage).unwrap();
        let err = open(dir.path()).err().expect("damaged db file");
        assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
        assert!(err.to_string().contains("damaged or lost"), "{err}");
    }

    // A path that is a file, not a directory.
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = open(&file).err().expect("a file is not a data dir");
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    // An empty existing directory is a fresh data dir.
    let dir = TempDir::new().unwrap();
    drop(must_open(dir.path()));
}

#[test]
fn apply_records_membership_and_blank_entries() {
    run(async {
        let dir = TempDir::new().unwrap();
        let (_log, mut sm) = must_open(dir.path());
        apply(&mut sm, [membership(1, 0), Entry::new_blank(lid(1, 1))])
            .await
            .unwrap();
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(lid(1, 1)));
        assert_eq!(mem.log_id(), &Some(lid(1, 0)));
        assert!(mem.membership().get_node(&NODE).is_some());
        // Normal entries carry their index into the state.
        apply(&mut sm, [Entry::new_normal(lid(1, 2), submit(&["a", "b"]))])
            .await
            .unwrap();
        assert_eq!(sm.read(|s| s.get("b").map(|t| t.created_index)), Some(2));
        assert!(matches!(Entry::new_blank(lid(1, 3)).payload, EntryPayload::Blank));
    });
}
