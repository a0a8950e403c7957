//! Three real masters in one process, on random loopback ports, with real sled directories.
//! Partitions are injected in the transport (`Channels::block`); nothing here sleeps to hope:
//! every wait polls for an observable event with a bound and a message saying what never came.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use taurus_master::config::RaftTuning;
use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_protocol::v1::task_service_server::TaskService;
use taurus_protocol::v1::task_service_server::TaskServiceServer;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;

mod common;

use common::Cluster;
use common::eventually;

fn spec(id: &str, deps: &[&str]) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        command: vec!["true".into()],
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    }
}

fn submit_req(tasks: Vec<v1::TaskSpec>) -> v1::SubmitTasksRequest {
    keyed_req(tasks, "")
}

/// A submit request with idempotency key `request_id`.
fn keyed_req(tasks: Vec<v1::TaskSpec>, request_id: &str) -> v1::SubmitTasksRequest {
    v1::SubmitTasksRequest {
        tasks,
        request_id: request_id.into(),
    }
}

async fn get(
    c: &mut TaskServiceClient<Channel>,
    id: &str,
    stale: bool,
) -> Result<v1::GetTaskResponse, tonic::Status> {
    let consistency = if stale {
        v1::Consistency::Stale
    } else {
        v1::Consistency::Linearizable
    } as i32;
    c.get_task(v1::GetTaskRequest {
        id: id.into(),
        consistency,
    })
    .await
    .map(|r| r.into_inner())
}

fn tuning() -> RaftTuning {
    RaftTuning::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_forwards_writes_and_every_replica_serves_reads() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();

    let mut tasks: Vec<v1::TaskSpec> = (0..20).map(|i| spec(&format!("t{i:02}"), &[])).collect();
    tasks[1].depends_on = vec!["t00".into()];
    let first = cluster
        .tasks(followers[0])
        .submit_tasks(submit_req(tasks.clone()))
        .await
        .expect("submit via follower");
    let first = first.into_inner();
    assert_eq!(first.results.len(), 20);
    assert!(
        first
            .results
            .iter()
            .all(|r| r.created && r.log_index == first.log_index && r.log_index > 0)
    );

    // Linearizable reads from every replica see the write at once.
    for id in 1..=3 {
        let r = get(&mut cluster.tasks(id), "t05", false)
            .await
            .expect("linearizable read");
        let task = r.task.expect("task");
        assert_eq!(task.log_index, first.log_index);
        assert_eq!(task.state, v1::TaskState::Pending as i32);
        let read = r.read.expect("read info");
        assert!(!read.stale && read.served_by == id && read.applied_index >= first.log_index);
    }
    // A stale read is labelled as such.
    let stale = eventually("stale read on a follower", || async {
        get(&mut cluster.tasks(followers[1]), "t05", true).await.ok()
    })
    .await;
    assert!(stale.read.expect("read info").stale);

    // Resubmitting the same ids through the other follower creates nothing new.
    let again = cluster
        .tasks(followers[1])
        .submit_tasks(submit_req(tasks))
        .await
        .expect("resubmit")
        .into_inner();
    assert!(
        again
            .results
            .iter()
            .all(|r| !r.created && r.log_index == first.log_index)
    );

    // Paging walks all 20 exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = cluster
            .tasks(leader)
            .list_tasks(v1::ListTasksRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.total, 20);
        seen.extend(page.tasks.into_iter().map(|t| t.spec.expect("spec").id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, expected);

    // Cancelling through a follower cancels the dependent too, with the reason.
    let c = cluster
        .tasks(followers[0])
        .cancel_task(v1::CancelTaskRequest {
            id: "t00".into(),
            reason: "test".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(c.cancelled && c.log_index > first.log_index);
    let dep = get(&mut cluster.tasks(followers[1]), "t01", false)
        .await
        .expect("read")
        .task
        .expect("task");
    assert_eq!(dep.state, v1::TaskState::Cancelled as i32);
    assert!(
        dep.reason.contains("t00"),
        "reason names the dependency: {}",
        dep.reason
    );
    assert_eq!(dep.log_index, c.log_index);

    // Watching a terminal task yields its state and ends.
    let mut stream = cluster
        .tasks(followers[1])
        .watch_task(v1::WatchTaskRequest { id: "t01".into() })
        .await
        .expect("watch")
        .into_inner();
    let ev = stream.message().await.expect("event").expect("one event");
    assert_eq!(ev.task.expect("task").state, v1::TaskState::Cancelled as i32);
    assert!(stream.message().await.expect("clean end").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_streams_changes_until_terminal() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .tasks(leader)
        .submit_tasks(submit_req(vec![spec("w1", &[])]))
        .await
        .expect("submit");
    let mut stream = cluster
        .tasks(follower)
        .watch_task(v1::WatchTaskRequest { id: "w1".into() })
        .await
        .expect("watch")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("event")
        .expect("initial state")
        .task
        .expect("task");
    assert_eq!(first.state, v1::TaskState::Pending as i32);
    cluster
        .tasks(follower)
        .cancel_task(v1::CancelTaskRequest {
            id: "w1".into(),
            reason: String::new(),
        })
        .await
        .expect("cancel");
    let next = stream
        .message()
        .await
        .expect("event")
        .expect("the change")
        .task
        .expect("task");
    assert_eq!(next.state, v1::TaskState::Cancelled as i32);
    assert!(next.log_index > first.log_index);
    assert_eq!(next.reason, "cancelled by request");
    assert!(stream.message().await.expect("clean end").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_rejected_naming_the_field() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let via = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut c = cluster.tasks(via);

    let mut empty = spec("e1", &[]);
    empty.command.clear();
    let mut attempts = spec("e2", &[]);
    attempts.max_attempts = 1000;
    let cases: Vec<(Vec<v1::TaskSpec>, &str)> = vec![
        (vec![spec("ok", &[]), empty], "tasks[1].command"),
        (vec![spec("u1", &["missing"])], "tasks[0].depends_on[0]"),
        (vec![spec("c1", &["c2"]), spec("c2", &["c1"])], "dependency cycle"),
        (vec![attempts], "tasks[0].max_attempts"),
        (vec![spec("bad id!", &[])], "tasks[0].id"),
        (vec![], "tasks"),
    ];
    for (tasks, field) in cases {
        let err = c
            .submit_tasks(submit_req(tasks))
            .await
            .expect_err("must be rejected");
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().contains(field),
            "message {:?} should name {field}",
            err.message()
        );
    }
    // Nothing of any rejected request was created (requests are atomic).
    let list = c
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 0);

    let err = get(&mut c, "nope", false).await.expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .cancel_task(v1::CancelTaskRequest {
            id: "nope".into(),
            reason: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .list_tasks(v1::ListTasksRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect_err("page");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("page_size"));
    let err = c
        .list_tasks(v1::ListTasksRequest {
            states: vec![99],
            ..Default::default()
        })
        .await
        .expect_err("state");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("states[0]"));
    let mut admin = cluster.cluster_api(via);
    let err = admin
        .add_master(v1::AddMasterRequest {
            id: 9,
            addr: "bogus".into(),
        })
        .await
        .expect_err("addr");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("addr"));
    let err = admin
        .remove_master(v1::RemoveMasterRequest { id: 42 })
        .await
        .expect_err("unknown member");
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .transfer_leader(v1::TransferLeaderRequest { to: 42 })
        .await
        .expect_err("not a voter");
    assert!(err.code() == Code::InvalidArgument && err.message().contains("to"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_cannot_commit_and_catches_up_after_healing() {
    let cluster = Cluster::start(3, tuning()).await;
    let old = cluster.leader_seen_by(1, |_| true).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    cluster
        .tasks(old)
        .submit_tasks(submit_req(vec![spec("before", &[])]))
        .await
        .expect("submit before partition");

    cluster.partition(&[old]);
    // The minority cannot acknowledge a write.
    let mut req = tonic::Request::new(submit_req(vec![spec("minority", &[])]));
    req.set_timeout(Duration::from_millis(1500));
    let r = cluster.tasks(old).submit_tasks(req).await;
    assert!(r.is_err(), "an isolated master acknowledged a write: {r:?}");
    // Nor serve a linearizable read.
    let mut req = tonic::Request::new(v1::GetTaskRequest {
        id: "before".into(),
        consistency: 0,
    });
    req.set_timeout(Duration::from_millis(1500));
    assert!(
        cluster.tasks(old).get_task(req).await.is_err(),
        "isolated master served a linearizable read"
    );

    // The majority elects a new leader and keeps working.
    let new = cluster.leader_seen_by(others[0], |l| l != old).await;
    assert!(others.contains(&new));
    let ids: Vec<String> = (0..10).map(|i| format!("after{i}")).collect();
    let batch = ids.iter().map(|i| spec(i, &[])).collect();
    let acked = cluster
        .tasks(others[1])
        .submit_tasks(submit_req(batch))
        .await
        .expect("majority write")
        .into_inner();

    cluster.heal();
    // The old leader catches up: it applies the majority's writes...
    eventually("old leader applies the majority's writes", || async {
        let mut c = cluster.tasks(old);
        for id in &ids {
            let t = get(&mut c, id, true).await.ok()?.task?;
            (t.log_index == acked.log_index).then_some(())?;
        }
        Some(())
    })
    .await;
    // ...and what it could not commit while isolated never became a task.
    let err = get(&mut cluster.tasks(new), "minority", false)
        .await
        .expect_err("never committed");
    assert_eq!(err.code(), Code::NotFound);
    assert!(get(&mut cluster.tasks(old), "before", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_master_catches_up_from_a_snapshot() {
    let tuning = RaftTuning {
        snapshot_every_entries: 20,
        keep_log_entries: 5,
        ..RaftTuning::default()
    };
    let mut cluster = Cluster::start(3, tuning).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .tasks(leader)
        .submit_tasks(submit_req(vec![spec("s000", &[])]))
        .await
        .expect("first write");
    let before = eventually("lagging master applied the first write", || async {
        let s = cluster.status(leader).await?;
        let m = s.members.iter().find(|m| m.id == lagging)?;
        (m.applied_index >= 1 && m.reachable).then_some(m.last_log_index)
    })
    .await;
    cluster.stop(lagging).await;

    // One Raft entry per request: submit them one at a time.
    for i in 1..=80 {
        cluster
            .tasks(leader)
            .submit_tasks(submit_req(vec![spec(&format!("s{i:03}"), &[])]))
            .await
            .expect("write");
    }
    let purged = eventually("leader purges its log past the lagging master", || async {
        let s = cluster.status(leader).await?;
        let m = s.members.iter().find(|m| m.id == leader)?;
        (m.purged_index > before).then_some(m.purged_index)
    })
    .await;

    cluster.restart(lagging).await;
    eventually("restarted master has every task", || async {
        let mut c = cluster.tasks(lagging);
        get(&mut c, "s080", true).await.ok()?;
        get(&mut c, "s001", true).await.ok()?;
        Some(())
    })
    .await;
    let s = eventually("restarted master reports its snapshot", || async {
        let s = cluster.status(lagging).await?;
        let m = s.members.iter().find(|m| m.id == lagging)?.clone();
        (m.snapshot_index > 0).then_some(m)
    })
    .await;
    assert!(
        s.snapshot_index >= purged.min(before + 1),
        "the lagging master could only catch up through a snapshot (snapshot {} purged {purged} before {before})",
        s.snapshot_index
    );
    // Linearizable reads work on it again.
    assert!(get(&mut cluster.tasks(lagging), "s040", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn masters_are_added_promoted_removed_and_leadership_transferred_at_run_time() {
    let mut cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster
        .tasks(leader)
        .submit_tasks(submit_req(vec![spec("m1", &[])]))
        .await
        .expect("write before the change");

    // Add master 4 through a follower (forwarded to the leader): learner, catch up, promote.
    let addr = cluster.start_extra(4).await;
    let status = cluster
        .cluster_api(follower)
        .add_master(v1::AddMasterRequest { id: 4, addr })
        .await
        .expect("add master 4")
        .into_inner();
    let m4 = status.members.iter().find(|m| m.id == 4).expect("4 is a member");
    assert!(m4.voter, "master 4 was promoted to voter: {m4:?}");
    // It has the data written before it joined.
    eventually("master 4 has the earlier task", || async {
        get(&mut cluster.tasks(4), "m1", true).await.ok()
    })
    .await;
    let err = cluster
        .cluster_api(leader)
        .add_master(v1::AddMasterRequest {
            id: 4,
            addr: cluster.addr(4).to_string(),
        })
        .await
        .expect_err("already a voter");
    assert_eq!(err.code(), Code::AlreadyExists);

    // Hand leadership to the newcomer.
    let status = cluster
        .cluster_api(follower)
        .transfer_leader(v1::TransferLeaderRequest { to: 4 })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(status.leader, 4);
    assert_eq!(cluster.leader_seen_by(follower, |l| l == 4).await, 4);

    // Remove one of the original masters; the cluster keeps accepting writes.
    let removed = (1..=3).find(|id| *id != follower).expect("another original");
    let status = cluster
        .cluster_api(follower)
        .remove_master(v1::RemoveMasterRequest { id: removed })
        .await
        .expect("remove")
        .into_inner();
    assert!(
        status.members.iter().all(|m| m.id != removed),
        "removed master still listed: {status:?}"
    );
    cluster.stop(removed).await;
    let r = cluster
        .tasks(follower)
        .submit_tasks(submit_req(vec![spec("m2", &[])]))
        .await
        .expect("write after the change")
        .into_inner();
    assert!(r.results[0].created);
    for id in [follower, 4] {
        assert!(
            get(&mut cluster.tasks(id), "m2", false).await.is_ok(),
            "master {id} serves the new task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_many_keeps_each_request_atomic_and_separate() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut empty = spec("bad-1", &[]);
    empty.command.clear();
    let requests = vec![
        submit_req(vec![spec("a-1", &[]), spec("a-2", &["a-1"])]),
        submit_req(vec![spec("bad-0", &[]), empty]),
        submit_req(vec![spec("c-1", &["missing"])]),
        submit_req(vec![spec("d-1", &["a-2"])]),
    ];
    // Through a follower: the whole call is forwarded, outcomes stay per request.
    let resp = cluster
        .tasks(follower)
        .submit_many(v1::SubmitManyRequest { requests })
        .await
        .expect("submit many")
        .into_inner();
    let o = &resp.outcomes;
    assert_eq!(o.len(), 4);
    assert_eq!(o[0].code, Code::Ok as i32);
    assert_eq!(o[1].code, Code::InvalidArgument as i32);
    assert!(o[1].message.contains("tasks[1].command"), "{}", o[1].message);
    assert_eq!(o[2].code, Code::InvalidArgument as i32);
    assert!(
        o[2].message.contains("tasks[0].depends_on[0]"),
        "{}",
        o[2].message
    );
    assert_eq!(
        o[3].code,
        Code::Ok as i32,
        "a request may depend on an earlier one of the same call"
    );
    let a = o[0].response.as_ref().expect("response");
    let d = o[3].response.as_ref().expect("response");
    assert_eq!(a.results.len(), 2);
    assert_eq!(
        a.log_index, d.log_index,
        "accepted requests travel in one Raft entry"
    );
    // The rejected requests left nothing behind, not even their valid tasks.
    let err = get(&mut cluster.tasks(leader), "bad-0", false)
        .await
        .expect_err("atomic rejection");
    assert_eq!(err.code(), Code::NotFound);
    assert!(get(&mut cluster.tasks(leader), "d-1", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_client_submits_are_coalesced_without_mixing_results() {
    let cluster = Cluster::start(3, tuning()).await;
    cluster.leader_seen_by(1, |_| true).await;
    let client = taurus_client::Client::new(cluster.addrs()).expect("client");
    let mut calls = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let mut tasks = vec![spec(&format!("k{i:02}-a"), &[]), spec(&format!("k{i:02}-b"), &[])];
            if i == 7 {
                tasks[1].command.clear(); // this caller's request alone is invalid
            }
            (i, client.submit(tasks).await)
        }));
    }
    for call in calls {
        let (i, result) = call.await.expect("task");
        if i == 7 {
            let err = result.expect_err("invalid request rejected");
            assert_eq!(err.code(), Some(Code::InvalidArgument));
            assert!(err.to_string().contains("tasks[1].command"), "{err}");
        } else {
            let r = result.unwrap_or_else(|e| panic!("caller {i}: {e}"));
            let ids: Vec<&str> = r.results.iter().map(|x| x.id.as_str()).collect();
            assert_eq!(
                ids,
                [format!("k{i:02}-a"), format!("k{i:02}-b")],
                "caller {i} got its own results"
            );
            assert!(r.results.iter().all(|x| x.created));
        }
    }
    let list = client.list_tasks(&[], 1000, "", false).await.expect("list");
    assert_eq!(list.total, 63 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_isolated_follower_does_not_depose_the_leader() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let before = cluster.status(leader).await.expect("status").term;
    cluster.partition(&[follower]);
    // What is tested is an absence (no campaign that bumps the term), so there is no event to
    // await: give the isolated follower five maximal election timeouts to try.
    tokio::time::sleep(tuning().election_timeout_max * 5).await;
    let isolated = cluster
        .status(follower)
        .await
        .expect("status of the isolated follower");
    let me = isolated
        .members
        .iter()
        .find(|m| m.id == follower)
        .expect("itself");
    assert_eq!(
        me.role, "follower",
        "without Pre-Vote it would be a candidate by now: {me:?}"
    );
    assert_eq!(me.term, before, "an isolated follower must not raise its term");
    // Writes go on meanwhile.
    cluster
        .tasks(leader)
        .submit_tasks(submit_req(vec![spec("p1", &[])]))
        .await
        .expect("write while partitioned");
    cluster.heal();
    eventually("the follower rejoins and applies the write", || async {
        get(&mut cluster.tasks(follower), "p1", true).await.ok()
    })
    .await;
    // Pre-Vote: its failed campaigns never raised the term, so the leader was never deposed.
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(after.leader, leader, "leadership moved: {after:?}");
    assert_eq!(
        after.term, before,
        "the term moved from {before} to {}",
        after.term
    );
}

/// `created` of every result of an OK `SubmitMany` outcome.
fn created_flags(outcome: &v1::SubmitOutcome) -> Vec<bool> {
    assert_eq!(outcome.code, Code::Ok as i32, "{outcome:?}");
    let response = outcome.response.as_ref().expect("response");
    response.results.iter().map(|r| r.created).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_with_the_same_request_id_is_told_created_and_creates_nothing() {
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let tasks = vec![spec("r-1", &[]), spec("r-2", &["r-1"])];

    let first = cluster
        .tasks(leader)
        .submit_tasks(keyed_req(tasks.clone(), "req-1"))
        .await
        .expect("submit")
        .into_inner();
    assert!(first.results.iter().all(|r| r.created), "{first:?}");
    // The retry (after, say, a lost answer and a leader change) arrives at a follower, which
    // forwards it with its key: the same answer as the original, and no second task.
    let retry = cluster
        .tasks(followers[0])
        .submit_tasks(keyed_req(tasks.clone(), "req-1"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry.results, first.results);
    assert!(
        retry.log_index > first.log_index,
        "the retry is an entry of its own"
    );

    // Another request, or one without a key, is told the tasks existed.
    for key in ["req-2", ""] {
        let other = cluster
            .tasks(followers[1])
            .submit_tasks(keyed_req(tasks.clone(), key))
            .await
            .expect("resubmit")
            .into_inner();
        assert!(other.results.iter().all(|r| !r.created), "key {key:?}: {other:?}");
    }

    // In a SubmitMany (what the client's coalescing sends), each request has its own key.
    let requests = vec![
        keyed_req(tasks.clone(), "req-1"),
        keyed_req(tasks.clone(), "req-3"),
        keyed_req(vec![spec("r-3", &[])], "req-4"),
        keyed_req(vec![spec("r-3", &[])], "req-4"),
        keyed_req(vec![spec("r-4", &[])], &"k".repeat(65)),
    ];
    let many = cluster
        .tasks(followers[0])
        .submit_many(v1::SubmitManyRequest { requests })
        .await
        .expect("submit many")
        .into_inner();
    let o = &many.outcomes;
    assert_eq!(o.len(), 5);
    assert_eq!(created_flags(&o[0]), [true, true], "a retry of req-1");
    assert_eq!(created_flags(&o[1]), [false, false], "another request");
    assert_eq!(created_flags(&o[2]), [true]);
    assert_eq!(created_flags(&o[3]), [true], "a retry in the same entry");
    assert_eq!(o[4].code, Code::InvalidArgument as i32);
    assert!(o[4].message.contains("request_id"), "{}", o[4].message);

    let err = cluster
        .tasks(followers[1])
        .submit_tasks(keyed_req(vec![spec("r-4", &[])], &"k".repeat(65)))
        .await
        .expect_err("a key over 64 bytes");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("request_id"), "{}", err.message());

    let list = cluster
        .tasks(leader)
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 3, "r-1, r-2 and r-3, each once");
}

/// A `TaskService` in front of one master that loses the answer to the first submit it
/// forwards: the request commits, and the caller sees `UNAVAILABLE` (the answer lost to a
/// timeout or a leader change). Remembers the `request_id` of every submit it forwarded.
struct LossyProxy {
    upstream: TaskServiceClient<Channel>,
    forwarded: Arc<Mutex<Vec<String>>>,
}

impl LossyProxy {
    /// Records `request_id`; true for the first submit (whose answer is to be lost).
    fn record(&self, request_id: &str) -> bool {
        let mut seen = self.forwarded.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(request_id.to_string());
        seen.len() == 1
    }
}

#[tonic::async_trait]
impl TaskService for LossyProxy {
    async fn submit_tasks(
        &self,
        req: tonic::Request<v1::SubmitTasksRequest>,
    ) -> Result<tonic::Response<v1::SubmitTasksResponse>, Status> {
        let msg = req.into_inner();
        let lose = self.record(&msg.request_id);
        let answer = self.upstream.clone().submit_tasks(msg).await?;
        if lose {
            return Err(Status::unavailable("the answer was lost"));
        }
        Ok(answer)
    }

    async fn submit_many(
        &self,
        req: tonic::Request<v1::SubmitManyRequest>,
    ) -> Result<tonic::Response<v1::SubmitManyResponse>, Status> {
        let msg = req.into_inner();
        let mut lose = false;
        for r in &msg.requests {
            lose |= self.record(&r.request_id);
        }
        let answer = self.upstream.clone().submit_many(msg).await?;
        if lose {
            return Err(Status::unavailable("the answer was lost"));
        }
        Ok(answer)
    }

    async fn get_task(
        &self,
        _: tonic::Request<v1::GetTaskRequest>,
    ) -> Result<tonic::Response<v1::GetTaskResponse>, Status> {
        Err(Status::unimplemented("not proxied"))
    }

    async fn list_tasks(
        &self,
        _: tonic::Request<v1::ListTasksRequest>,
    ) -> Result<tonic::Response<v1::ListTasksResponse>, Status> {
        Err(Status::unimplemented("not proxied"))
    }

    async fn cancel_task(
        &self,
        _: tonic::Request<v1::CancelTaskRequest>,
    ) -> Result<tonic::Response<v1::CancelTaskResponse>, Status> {
        Err(Status::unimplemented("not proxied"))
    }

    type WatchTaskStream = tokio_stream::Empty<Result<v1::WatchTaskEvent, Status>>;

    async fn watch_task(
        &self,
        _: tonic::Request<v1::WatchTaskRequest>,
    ) -> Result<tonic::Response<Self::WatchTaskStream>, Status> {
        Err(Status::unimplemented("not proxied"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_retry_after_a_lost_answer_reports_its_submit_as_created() {
    // The Jepsen finding: one submit of t147, its first attempt committed but the answer was
    // lost, the client library retried, and the caller was told the task already existed.
    let cluster = Cluster::start(3, tuning()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let proxy = LossyProxy {
        upstream: cluster.tasks(follower),
        forwarded: forwarded.clone(),
    };
    let listener = common::bind("127.0.0.1").await;
    let proxy_addr = listener.local_addr().expect("local addr").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TaskServiceServer::new(proxy))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let client = taurus_client::Client::new(vec![proxy_addr]).expect("client");
    let r = client
        .submit(vec![spec("t147", &[])])
        .await
        .expect("submit, retried once");
    assert!(
        r.results[0].created,
        "the caller's only submit created t147: {r:?}"
    );
    let keys = forwarded.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(keys.len(), 2, "the lost attempt and the retry: {keys:?}");
    assert!(
        !keys[0].is_empty() && keys[0] == keys[1],
        "one key for both attempts: {keys:?}"
    );

    // A second, separate submit of the same id is a new logical request: it did not create it.
    let again = client
        .submit(vec![spec("t147", &[])])
        .await
        .expect("second submit");
    assert!(!again.results[0].created, "{again:?}");
    let keys = forwarded.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_ne!(keys[2], keys[0], "a new logical request gets a new key");

    let list = cluster
        .tasks(leader)
        .list_tasks(v1::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 1);
    server.abort();
}
