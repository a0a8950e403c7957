//! Writes the seed inputs of the fuzz corpus: valid encodings of real messages, the shipped
//! configuration files, and byte strings for the command generator. Run once by hand (the
//! corpus is committed; fuzzing and `cargo fuzz cmin` take it from there):
//!
//! ```text
//! cargo test -p taurus-fuzz-targets --test seeds -- --ignored
//! ```

use std::path::Path;
use std::path::PathBuf;

use openraft::EntryPayload;
use openraft::Membership;
use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::VoteOf;
use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::vote::RaftLeaderIdExt;
use prost::Message;
use serde::Serialize;
use taurus_core::Command;
use taurus_core::State;
use taurus_protocol::internal;
use taurus_protocol::v1;
use taurus_store::TypeConfig;
use taurus_store::codec;

type C = TypeConfig;

fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("creates the corpus directory");
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("writes a seed");
}

fn with_kind(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(body);
    v
}

fn log_id(term: u64, node: u64, index: u64) -> LogIdOf<C> {
    LogIdOf::<C>::new(openraft::alias::LeaderIdOf::<C>::new_committed(term, node), index)
}

/// A deterministic byte stream (xorshift), for the command generator.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn spec(id: &str, deps: &[&str]) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        name: format!("task {id}"),
        command: vec!["/bin/echo".into(), "hi".into()],
        env: [("K".to_string(), "V".to_string())].into_iter().collect(),
        priority: 2,
        resources: Some(v1::Resources {
            cpu_millis: 500,
            memory_mb: 128,
            disk_mb: 1,
        }),
        timeout_ms: 60_000,
        max_attempts: 3,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        labels: [("team".to_string(), "infra".to_string())].into_iter().collect(),
        backoff_ms: Some(100),
        pool: "batch".into(),
        constraints: [("zone".to_string(), "a".to_string())].into_iter().collect(),
        deadline_ms: 3_600_000,
        trace_parent: String::new(),
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    // state_machine: byte streams of several lengths.
    let dir = corpus("state_machine");
    for (i, len) in [16usize, 64, 256, 1024, 4096].into_iter().enumerate() {
        write(&dir, &format!("bytes-{len}"), &bytes(i as u64 + 1, len));
    }

    // protocol: a selector byte (see `protocol::fuzz_protocol`) and a real message.
    let dir = corpus("protocol");
    let submit = v1::SubmitTasksRequest {
        tasks: vec![spec("t0", &[]), spec("t1", &["t0"]), spec("t3", &["t2"])],
        request_id: "req-1".into(),
    };
    write(&dir, "submit", &with_kind(0, &submit.encode_to_vec()));
    let many = v1::SubmitManyRequest {
        requests: vec![submit.clone(), v1::SubmitTasksRequest::default()],
    };
    write(&dir, "submit-many", &with_kind(1, &many.encode_to_vec()));
    let register = v1::RegisterAgentRequest {
        id: "a1".into(),
        address: "10.0.0.1".into(),
        resources: Some(v1::Resources {
            cpu_millis: 8_000,
            memory_mb: 16_384,
            disk_mb: 100_000,
        }),
        max_tasks: 8,
        labels: [("zone".to_string(), "a".to_string())].into_iter().collect(),
        pool: "batch".into(),
    };
    write(&dir, "register", &with_kind(2, &register.encode_to_vec()));
    let report = v1::ReportTaskStatusRequest {
        agent_id: "a0".into(),
        reports: vec![
            v1::TaskStatusReport {
                task_id: "t0".into(),
                fencing_token: 3,
                kind: v1::ReportKind::Started as i32,
                ..Default::default()
            },
            v1::TaskStatusReport {
                task_id: "t0".into(),
                fencing_token: 3,
                kind: v1::ReportKind::Finished as i32,
                end: "failed".into(),
                exit_code: Some(2),
                error: "boom".into(),
                stdout_tail: "out".into(),
                stderr_tail: "err".into(),
            },
        ],
    };
    write(&dir, "report", &with_kind(3, &report.encode_to_vec()));
    let heartbeat = v1::HeartbeatRequest {
        agent_id: "a0".into(),
        epoch: 1,
        running: vec![v1::RunningAttempt {
            task_id: "t0".into(),
            fencing_token: 3,
        }],
        load: 0.5,
        sent_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    write(&dir, "heartbeat", &with_kind(4, &heartbeat.encode_to_vec()));
    let list = v1::ListTasksRequest {
        states: vec![1, 3],
        page_size: 2,
        page_token: "t0".into(),
        ..Default::default()
    };
    write(&dir, "list", &with_kind(5, &list.encode_to_vec()));
    let cancel = v1::CancelTaskRequest {
        id: "t1".into(),
        reason: "no longer needed".into(),
    };
    write(&dir, "cancel", &with_kind(6, &cancel.encode_to_vec()));
    let drain = v1::SetAgentDrainRequest {
        id: "a0".into(),
        drain: true,
        reason: "maintenance".into(),
        ..Default::default()
    };
    write(&dir, "drain", &with_kind(10, &drain.encode_to_vec()));
    let batch = v1::AssignmentBatch {
        assign: vec![v1::Assignment {
            spec: Some(spec("t0", &[])),
            attempt: 1,
            fencing_token: 3,
        }],
        applied_index: 3,
        ..Default::default()
    };
    write(&dir, "assignments", &with_kind(25, &batch.encode_to_vec()));

    // raft_codec: a selector byte (see `raft_codec::fuzz_raft_codec`) and MessagePack.
    let rdir = corpus("raft_codec");
    let cmd = submit_command();
    let seed = |kind: u8, name: &str, v: &dyn erased::Encode| {
        let body = v.encode();
        write(&rdir, name, &with_kind(kind, &body));
        if kind == 6 {
            // Also through the protocol target's RaftMessage envelope.
            let envelope = internal::RaftMessage { data: body };
            write(&dir, name, &with_kind(30, &envelope.encode_to_vec()));
        }
    };
    seed(0, "command", &cmd);
    let normal = EntryOf::<C>::new_normal(log_id(3, 1, 7), cmd.clone());
    let blank = EntryOf::<C>::new_blank(log_id(3, 1, 8));
    let members = Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], []);
    let membership = EntryOf::<C>::new_membership(log_id(4, 2, 9), members);
    assert!(matches!(normal.payload, EntryPayload::Normal(_)));
    seed(2, "entry-normal", &normal);
    seed(2, "entry-membership", &membership);
    seed(3, "vote", &VoteOf::<C>::new_committed(6, 3));
    seed(4, "log-id", &log_id(2, 1, 5));
    seed(
        6,
        "append-entries",
        &AppendEntriesRequest::<C> {
            vote: VoteOf::<C>::new_committed(4, 2),
            prev_log_id: Some(log_id(3, 1, 6)),
            entries: vec![normal, blank, membership],
            leader_commit: Some(log_id(3, 1, 6)),
        },
    );
    seed(7, "append-entries-response", &AppendEntriesResponse::<C>::Success);
    seed(
        8,
        "vote-request",
        &VoteRequest::<C>::new(VoteOf::<C>::new(5, 2), Some(log_id(4, 2, 9))),
    );
    seed(
        9,
        "vote-response",
        &VoteResponse::<C>::new(VoteOf::<C>::new(5, 2), Some(log_id(4, 2, 9)), true),
    );
    seed(
        10,
        "transfer-leader",
        &TransferLeaderRequest::<C>::new(VoteOf::<C>::new_committed(5, 1), 2, Some(log_id(5, 1, 10))),
    );
    seed(
        12,
        "snapshot-response",
        &SnapshotResponse::<C>::new(VoteOf::<C>::new_committed(5, 1)),
    );
    seed(
        13,
        "snapshot-header",
        &(VoteOf::<C>::new_committed(5, 1), SnapshotMetaOf::<C>::default()),
    );
    #[derive(Serialize)]
    struct SnapshotImageRef<'a> {
        schema: u32,
        state: taurus_core::state::StateImageRef<'a>,
    }
    let state = sample_state();
    let image = SnapshotImageRef {
        schema: 1,
        state: state.image(),
    };
    seed(14, "snapshot", &image);

    // config: the shipped files.
    let dir = corpus("config");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
    for (name, path) in [
        ("master-1", "local-3-masters/master-1.toml"),
        ("master-3-hosts", "3-hosts/master.toml"),
        ("agent", "agent.toml"),
    ] {
        write(
            &dir,
            name,
            &std::fs::read(root.join(path)).expect("reads a shipped config"),
        );
    }
    write(
        &dir,
        "agent-full",
        br#"id = "worker-7"
masters = ["10.0.0.1:7101", "http://10.0.0.3:7101"]
work_dir = "/var/lib/taurus-agent"
cpu_millis = 8000
memory_mb = 16384
disk_mb = 100000
max_tasks = 64
pool = "batch"
heartbeat_interval = "1s"
lease_timeout = "6s"
rpc_timeout = "1s"
drain_timeout = "0s"
[labels]
zone = "eu-1"
"#,
    );
    write(
        &dir,
        "master-scheduler",
        br#"id = 2
listen = "0.0.0.0:7101"
advertise = "10.0.0.2:7101"
[peers]
1 = "10.0.0.1:7101"
2 = "10.0.0.2:7101"
[scheduler]
policy = "delay-guided"
agent_ttl = "10s"
lease_timeout = "6s"
interval = "100ms"
max_placements = 4096
ageing_per_point = "10s"
"#,
    );
    write(&dir, "peers-flag", b"1=127.0.0.1:7101,2=host-b:7102");
    write(&dir, "labels-flag", b"zone=eu-1,disk=ssd");
}

/// A state with tasks in several states and two agents, for the snapshot seed.
fn sample_state() -> State {
    let mut st = State::new();
    let data = bytes(7, 4096);
    let mut g = taurus_fuzz_targets::state_machine::CommandGen::new(arbitrary::Unstructured::new(&data));
    for _ in 0..60 {
        let (i, c) = g.command(&st);
        st.apply(i, c);
    }
    st
}

fn submit_command() -> Command {
    codec::decode(&codec::encode(&serde_json_like_submit()).unwrap()).unwrap()
}

/// A `SubmitTasks` command in the serde shape of [`Command`].
fn serde_json_like_submit() -> impl Serialize {
    #[derive(Serialize)]
    enum Shape {
        SubmitTasks {
            requests: Vec<taurus_core::command::SubmitRequest>,
            now_ms: u64,
        },
    }
    Shape::SubmitTasks {
        requests: vec![taurus_core::command::SubmitRequest {
            tasks: vec![taurus_core::TaskSpec {
                id: "t-1".into(),
                command: vec!["echo".into(), "hi".into()],
                ..taurus_core::TaskSpec::default()
            }],
            request_id: "req".into(),
            ..Default::default()
        }],
        now_ms: 1_700_000_000_000,
    }
}

mod erased {
    /// Object-safe encoding, so seeds of different types share one helper.
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            taurus_store::codec::encode(self).expect("encodes")
        }
    }
}
