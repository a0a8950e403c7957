//! Damaged data dirs: cut files and flipped bits in sled's files, the snapshot file and the
//! watermark, after a clean close and after a crash. The guarantee checked for every case:
//!
//! - **never a panic**: `open` returns, and no thread panics (sled's own panics are caught);
//! - **either refused**: `open` fails with [`StoreError::Damaged`] whose message names the data
//!   dir and the recovery procedure;
//! - **or exact**: the reopened store holds exactly the vote, the log entries above the purge
//!   point and the snapshot that were written and flushed; entries at or below the purge point
//!   may reappear (a purge cut short), with their written content; only the committed id may be
//!   older than written, and the state openraft rebuilds from it (snapshot plus re-applied log)
//!   is then exactly the state at that older committed index.
//!
//! A crash is simulated by writing the data in a child process (this test binary, re-run with
//! [`CHILD_DIR_ENV`]) that exits without running any destructor, so sled never closes cleanly,
//! like a master killed with SIGKILL after its last fsync.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::hash::Hash;
use std::hash::Hasher;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use openraft::BasicNode;
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
use taurus_core::command::SubmitRequest;
use taurus_store::StateMachineStore;
use taurus_store::StoreError;
use taurus_store::TypeConfig;
use taurus_store::log_store::open;
use taurus_store::state_machine::SNAPSHOT_FILE;
use taurus_store::watermark::WATERMARK_FILE;
use tempfile::TempDir;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const NODE: u64 = 1;
/// Entries of term 1 written first; then `TAIL` more of term 2 after a vote for term 2.
const HEAD: u64 = 600;
const TAIL: u64 = 64;
const PURGED: u64 = HEAD / 4;
const SNAPSHOT_AT: u64 = HEAD / 2;
const COMMITTED: u64 = HEAD + TAIL - 8;
/// Set in the child process: the data dir to write into before "crashing".
const CHILD_DIR_ENV: &str = "TAURUS_DAMAGE_TEST_CHILD_DIR";

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics that reach the process's hook (the store's caught sled panics do not).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(LeaderIdOf::<TypeConfig>::new_committed(term, NODE), index)
}

fn entry(i: u64) -> Entry {
    let term = if i < HEAD { 1 } else { 2 };
    match i {
        0 => {
            let nodes: BTreeMap<u64, BasicNode> =
                [(NODE, BasicNode::new("127.0.0.1:7001"))].into_iter().collect();
            let m = Membership::new(vec![[NODE].into_iter().collect()], nodes).expect("valid membership");
            Entry::new_membership(lid(term, 0), m)
        }
        1 => Entry::new_blank(lid(term, 1)),
        _ => Entry::new_normal(
            lid(term, i),
            Command::SubmitTasks {
                requests: vec![SubmitRequest {
                    request_id: String::new(),
                    queue_limit: None,
                    submitted_by: String::new(),
                    tasks: (0..8)
                        .map(|k| TaskSpec {
                            id: format!("t{i:05}-{k}"),
                            command: vec!["sh".into(), "-c".into(), format!("echo {i} {k}")],
                            max_attempts: 3,
                            ..TaskSpec::default()
                        })
                        .collect(),
                }],
                now_ms: 1_700_000_000_000 + i,
            },
        ),
    }
}

/// Writes the workload: vote 1, the head of the log, a snapshot, a purge, vote 2, the tail, a
/// committed id, and a last flushed append (every write acknowledged as durable).
fn write_workload(dir: &Path, crash: bool) {
    TypeConfig::run(async {
        let (mut log, mut sm) = open(dir).expect("fresh dir opens");
        log.save_vote(&Vote::new_committed(1, NODE)).await.unwrap();
        for start in (0..HEAD).step_by(16) {
            let batch: Vec<Entry> = (start..(start + 16).min(HEAD)).map(entry).collect();
            log.blocking_append(batch).await.unwrap();
        }
        let items: Vec<_> = (0..=SNAPSHOT_AT).map(|i| Ok((entry(i), None))).collect();
        sm.apply(futures::stream::iter(items)).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        log.purge(lid(1, PURGED)).await.unwrap();
        log.save_vote(&Vote::new_committed(2, NODE)).await.unwrap();
        log.blocking_append((HEAD..HEAD + TAIL - 4).map(entry))
            .await
            .unwrap();
        log.save_committed(Some(lid(2, COMMITTED))).await.unwrap();
        log.blocking_append((HEAD + TAIL - 4..HEAD + TAIL).map(entry))
            .await
            .unwrap();
        if crash {
            // SIGKILL after the last fsync: no destructor runs, sled is never closed.
            std::process::exit(0);
        }
    });
}

/// Not a test on its own: the crash writer, run in a child process by [`pristine`].
#[test]
fn child_writes_then_crashes() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        write_workload(Path::new(&dir), true);
    }
}

/// A data dir holding the workload, closed cleanly or left as a crash leaves it.
fn pristine(base: &Path, crash: bool) -> PathBuf {
    let dir = base.join(if crash { "crashed" } else { "closed" });
    std::fs::create_dir_all(&dir).unwrap();
    if crash {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["child_writes_then_crashes", "--exact", "--test-threads=1"])
            .env(CHILD_DIR_ENV, &dir)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "crash writer: {status}");
    } else {
        write_workload(&dir, false);
        // Wait until every handle is gone (the flusher thread lets go last), then open and
        // close sled once more on this thread, so the copies below see what a clean close leaves.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sled::Config::new().path(&dir).open() {
                Ok(db) => break drop(db),
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("waiting for the store to close: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("store never closed: {e}"),
            }
        }
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Task count and a digest of every task.
fn digest(sm: &StateMachineStore) -> (usize, u64) {
    sm.read(|s| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let page = s.list(&[], None, usize::MAX);
        for t in &page.tasks {
            format!("{t:?}").hash(&mut h);
        }
        (page.tasks.len(), h.finish())
    })
}

/// The state after applying entries `0..=index` (cached).
fn state_at(index: u64) -> (usize, u64) {
    static CACHE: Mutex<Option<HashMap<u64, (usize, u64)>>> = Mutex::new(None);
    if let Some(v) = CACHE.lock().unwrap().get_or_insert_default().get(&index) {
        return *v;
    }
    let tmp = TempDir::new().unwrap();
    let v = TypeConfig::run(async {
        let (_log, mut sm) = open(tmp.path()).unwrap();
        let items: Vec<_> = (0..=index).map(|i| Ok((entry(i), None))).collect();
        sm.apply(futures::stream::iter(items)).await.unwrap();
        digest(&sm)
    });
    CACHE.lock().unwrap().get_or_insert_default().insert(index, v);
    v
}

/// What a reopened store holds, or why it could not be read through the API.
#[derive(Debug)]
struct Reopened {
    vote: Option<Vote>,
    purged: Option<LogId>,
    entries: Vec<Entry>,
    committed: Option<LogId>,
    snapshot: Option<(Option<LogId>, Vec<u8>)>,
    /// After openraft's start-up: applied index and state digest.
    rebuilt: (u64, (usize, u64)),
}

async fn reopen(dir: &Path) -> Result<Reopened, StoreError> {
    let (mut log, mut sm) = open(dir)?;
    fn api<T>(r: Result<T, std::io::Error>) -> T {
        r.unwrap_or_else(|e| panic!("a verified store failed a read: {e}"))
    }
    let vote = api(log.read_vote().await);
    let state = api(log.get_log_state().await);
    let entries = api(log.try_get_log_entries(..).await);
    let committed = api(log.read_committed().await);
    let snapshot = api(sm.get_current_snapshot().await).map(|s| (s.meta.last_log_id, s.snapshot));
    StorageHelper::new(&mut log, &mut sm)
        .with_id(NODE)
        .get_initial_state()
        .await
        .unwrap_or_else(|e| panic!("openraft refused a verified store: {e}"));
    Ok(Reopened {
        vote,
        purged: state.last_purged_log_id,
        entries,
        committed,
        snapshot,
        rebuilt: (sm.applied_index(), digest(&sm)),
    })
}

/// Applies `damage` to a copy of `pristine`, reopens it, and checks the guarantee (module doc).
/// Returns a one-line outcome.
fn check_case(pristine: &Path, truth: &Reopened, name: &str, damage: &dyn Fn(&Path)) -> String {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(pristine, &dir);
    damage(&dir);
    let before = PANICS.load(Ordering::SeqCst);
    let result = std::panic::catch_unwind(|| TypeConfig::run(reopen(&dir)));
    let Ok(result) = result else {
        panic!("{name}: reopening panicked");
    };
    assert_eq!(PANICS.load(Ordering::SeqCst), before, "{name}: a thread panicked");
    let got = match result {
        Err(err) => {
            let StoreError::Damaged { dir: d, path, .. } = &err else {
                panic!("{name}: not reported as damage: {err}");
            };
            let msg = err.to_string();
            assert_eq!(d, &dir, "{name}: {msg}");
            assert!(path.starts_with(&dir), "{name}: {msg}");
            assert!(msg.contains(&dir.display().to_string()) && msg.contains("remove-master"));
            let file = path.strip_prefix(&dir).unwrap_or(path).display().to_string();
            return format!(
                "refused: {}",
                if file.is_empty() {
                    "the data dir (sled)"
                } else {
                    &file
                }
            );
        }
        Ok(got) => got,
    };
    assert_eq!(got.vote, truth.vote, "{name}: vote");
    assert_eq!(got.purged, truth.purged, "{name}: purge point");
    let above = |e: &&Entry| e.index() > PURGED;
    let got_above: Vec<&Entry> = got.entries.iter().filter(above).collect();
    let truth_above: Vec<&Entry> = truth.entries.iter().filter(above).collect();
    assert!(
        got_above == truth_above,
        "{name}: log entries above the purge point differ"
    );
    for e in &got.entries {
        assert!(*e == entry(e.index()), "{name}: entry {} differs", e.index());
    }
    assert!(got.snapshot == truth.snapshot, "{name}: snapshot differs");
    assert!(
        got.committed <= truth.committed,
        "{name}: committed id from the future"
    );
    let applied = got.rebuilt.0;
    let want = got
        .committed
        .as_ref()
        .map_or(SNAPSHOT_AT, |c| c.index.max(SNAPSHOT_AT));
    assert_eq!(applied, want, "{name}: rebuilt to the wrong index");
    assert_eq!(got.rebuilt.1, state_at(applied), "{name}: rebuilt state differs");
    if got.committed == truth.committed {
        "recovered exactly".to_string()
    } else {
        format!(
            "recovered (committed id older: {:?})",
            got.committed.map(|c| c.index)
        )
    }
}

/// Damage done to a copy of the data dir.
type Damage = Box<dyn Fn(&Path)>;

fn truncate_to(file: &'static str, len: u64) -> Damage {
    Box::new(move |dir| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(file))
            .unwrap();
        f.set_len(len).unwrap();
    })
}

fn flip_at(file: String, offset: u64) -> Damage {
    Box::new(move |dir| {
        let path = dir.join(&file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
    })
}

fn len_of(dir: &Path, file: &str) -> u64 {
    std::fs::metadata(dir.join(file)).unwrap().len()
}

/// Every damage case for `pristine`.
fn cases(pristine: &Path) -> Vec<(String, Damage)> {
    let mut cases: Vec<(String, Damage)> = Vec::new();
    let db = len_of(pristine, "db");
    let mut cuts = vec![0, 4096, db / 4, db / 2, 3 * db / 4];
    cuts.extend([65536, 4096, 1000, 100, 10, 1].map(|k| db.saturating_sub(k)));
    for len in cuts {
        cases.push((format!("db cut to {len}"), truncate_to("db", len)));
    }
    let mut flips = vec![0, 100, db / 3, db / 2, 2 * db / 3];
    flips.extend([65536, 1000, 100, 10, 1].map(|k| db.saturating_sub(k)));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        flips.push(x % db);
    }
    for offset in flips {
        cases.push((format!("db bit flip at {offset}"), flip_at("db".into(), offset)));
    }
    let snap = len_of(pristine, SNAPSHOT_FILE);
    for len in [0, 20, snap / 2, snap - 1] {
        cases.push((format!("snapshot cut to {len}"), truncate_to(SNAPSHOT_FILE, len)));
    }
    for offset in [0, 10, 30, snap / 2, snap - 1] {
        cases.push((
            format!("snapshot bit flip at {offset}"),
            flip_at(SNAPSHOT_FILE.into(), offset),
        ));
    }
    let conf = len_of(pristine, "conf");
    cases.push(("conf emptied".into(), truncate_to("conf", 0)));
    cases.push(("conf cut in half".into(), truncate_to("conf", conf / 2)));
    cases.push(("conf bit flip".into(), flip_at("conf".into(), 0)));
    // Flips inside conf's values (found by the jepsen suite: sled then answers `Unsupported`).
    for at in [11, 25, 38] {
        cases.push((
            format!("conf bit flip at {at}"),
            flip_at("conf".into(), at.min(conf.saturating_sub(1))),
        ));
    }
    cases.push((
        "conf deleted".into(),
        Box::new(|d: &Path| std::fs::remove_file(d.join("conf")).unwrap()),
    ));
    cases.push((
        "sled snap.* deleted".into(),
        Box::new(|d: &Path| {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().starts_with("snap.") {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        }),
    ));
    for e in std::fs::read_dir(pristine).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") {
            let len = len_of(pristine, &name);
            cases.push((format!("{name} bit flip"), flip_at(name.clone(), len / 2)));
        }
    }
    cases.push(("watermark emptied".into(), truncate_to(WATERMARK_FILE, 0)));
    cases.push(("watermark cut to 300".into(), truncate_to(WATERMARK_FILE, 300)));
    cases.push((
        "watermark bit flip at 10".into(),
        flip_at(WATERMARK_FILE.into(), 10),
    ));
    cases.push((
        "watermark bit flip at 300".into(),
        flip_at(WATERMARK_FILE.into(), 300),
    ));
    cases.push((
        "watermark deleted".into(),
        Box::new(|d: &Path| std::fs::remove_file(d.join(WATERMARK_FILE)).unwrap()),
    ));
    cases
}

fn run_all(crash: bool) -> Vec<String> {
    count_panics();
    let base = TempDir::new().unwrap();
    let pristine = pristine(base.path(), crash);
    // The truth, read from a copy (opening the pristine dir itself would rewrite sled's files).
    let scratch = base.path().join("scratch");
    copy_dir(&pristine, &scratch);
    let truth = TypeConfig::run(reopen(&scratch)).expect("the undamaged dir opens");
    assert_eq!(truth.vote, Some(Vote::new_committed(2, NODE)));
    assert_eq!(truth.committed, Some(lid(2, COMMITTED)));
    let last = truth.entries.last().map(|e| e.log_id());
    assert_eq!(last, Some(lid(2, HEAD + TAIL - 1)));
    cases(&pristine)
        .iter()
        .map(|(name, damage)| format!("{name}: {}", check_case(&pristine, &truth, name, damage.as_ref())))
        .collect()
}

#[test]
fn damage_after_a_crash_is_refused_or_recovered_exactly() {
    let outcomes = run_all(true);
    // A cut that loses the last flush (vote 2 and the tail are the last writes) must be refused:
    // it is exactly the silent loss of fsynced data the watermark exists to catch.
    for cut in ["db cut to", "db bit flip at"] {
        let refused_tail = outcomes
            .iter()
            .filter(|o| o.starts_with(cut) && o.contains("refused: db"))
            .count();
        assert!(refused_tail > 0, "{outcomes:#?}");
    }
    println!("{}", outcomes.join("\n"));
}

#[test]
fn damage_after_a_clean_close_is_refused_or_recovered_exactly() {
    let outcomes = run_all(false);
    println!("{}", outcomes.join("\n"));
}

/// A lost tail that leaves the vote intact (only log entries gone) is caught too.
#[test]
fn a_lost_log_tail_is_refused() {
    count_panics();
    let base = TempDir::new().unwrap();
    let pristine = pristine(base.path(), true);
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&pristine, &dir);
    // Drop the last entries through sled itself, as a cut tail would, keeping the vote.
    {
        let db = sled::Config::new().path(&dir).open().unwrap();
        let log = db.open_tree("raft_log").unwrap();
        for i in HEAD + TAIL - 4..HEAD + TAIL {
            log.remove(i.to_be_bytes()).unwrap();
        }
        let meta = db.open_tree("raft_meta").unwrap();
        meta.remove("committed").unwrap();
        db.flush().unwrap();
    }
    let err = open(&dir).err().expect("a lost tail must be refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    assert!(
        msg.contains("lost the tail") && msg.contains(WATERMARK_FILE),
        "{msg}"
    );
}
