//! A master's life as load balancers and operators see it: gRPC health (the whole server, each
//! public service, and the leader-only name), server reflection, a leader that hands its
//! leadership over when it is stopped, and a stopping master ending the streams its callers
//! keep open. Three real masters in one process on random loopback ports; every wait polls an
//! observable event with a bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use taurus_master::MasterError;
use taurus_master::config::MasterConfig;
use taurus_master::config::RaftTuning;
use taurus_master::lifecycle::LEADER_HEALTH_SERVICE;
use taurus_master::lifecycle::PUBLIC_SERVICES;
use taurus_master::run_with_listener;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use taurus_protocol::v1::cluster_service_client::ClusterServiceClient;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_store::network::Channels;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(20);

struct Master {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MasterError>>>,
}

struct Cluster {
    _dir: TempDir,
    peers: BTreeMap<u64, String>,
    masters: BTreeMap<u64, Master>,
}

/// Polls `f` until it yields `Some`, at most `WAIT`; panics naming `what` otherwise.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster {
    async fn start(n: u64, tuning: RaftTuning) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.expect("bind loopback"));
        }
        let peers: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().expect("local addr").to_string()))
            .collect();
        let dir = TempDir::new().expect("tempdir");
        let mut masters = BTreeMap::new();
        for (id, listener) in listeners {
            let config = MasterConfig {
                id,
                listen: listener.local_addr().expect("local addr"),
                data_dir: dir.path().join(format!("m{id}")),
                peers: peers.clone(),
                raft: tuning.clone(),
                ..MasterConfig::default()
            };
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(run_with_listener(config, listener, Channels::default(), async {
                let _ = rx.await;
            }));
            masters.insert(
                id,
                Master {
                    stop: Some(tx),
                    task: Some(task),
                },
            );
        }
        Cluster {
            _dir: dir,
            peers,
            masters,
        }
    }

    fn channel(&self, id: u64) -> Channel {
        taurus_store::network::channel_to(&self.peers[&id]).expect("channel")
    }

    async fn status(&self, via: u64) -> Option<v1::ClusterStatus> {
        let mut req = tonic::Request::new(v1::ClusterStatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        ClusterServiceClient::new(self.channel(via))
            .get_status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until `via` sees a leader that satisfies `ok`; returns (leader, term).
    async fn leader_seen_by(&self, via: u64, ok: impl Fn(u64) -> bool) -> (u64, u64) {
        eventually(&format!("a leader seen by master {via}"), || async {
            let s = self.status(via).await?;
            (s.leader != 0 && ok(s.leader)).then_some((s.leader, s.term))
        })
        .await
    }

    async fn health(&self, id: u64, service: &str) -> Option<ServingStatus> {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        req.set_timeout(Duration::from_secs(2));
        let r = HealthClient::new(self.channel(id)).check(req).await.ok()?;
        ServingStatus::try_from(r.into_inner().status).ok()
    }

    /// Waits until the leader-only health name is `SERVING` on exactly `leader`.
    async fn leader_health_on(&self, leader: u64) {
        eventually(
            &format!("{LEADER_HEALTH_SERVICE} serving on exactly master {leader}"),
            || async {
                for id in self.masters.keys() {
                    let want = if *id == leader {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if self.health(*id, LEADER_HEALTH_SERVICE).await != Some(want) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    fn signal_stop(&mut self, id: u64) -> JoinHandle<Result<(), MasterError>> {
        let m = self.masters.get_mut(&id).expect("known master");
        if let Some(tx) = m.stop.take() {
            let _ = tx.send(());
        }
        m.task.take().expect("running master")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.masters.values_mut() {
            if let Some(tx) = m.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = m.task.take() {
                t.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_leadership_and_reflection_lists_the_public_api() {
    let cluster = Cluster::start(3, RaftTuning::default()).await;
    let (leader, _) = cluster.leader_seen_by(1, |_| true).await;

    // The whole server and every public service serve on every master, without a token.
    for id in 1..=3 {
        for service in std::iter::once("").chain(PUBLIC_SERVICES) {
            assert_eq!(
                cluster.health(id, service).await,
                Some(ServingStatus::Serving),
                "master {id}, service {service:?}"
            );
        }
    }
    cluster.leader_health_on(leader).await;

    // A leadership transfer moves the leader-only name with it.
    let to = (1..=3).find(|id| *id != leader).expect("a follower");
    ClusterServiceClient::new(cluster.channel(leader))
        .transfer_leader(v1::TransferLeaderRequest { to })
        .await
        .expect("transfer leader");
    cluster.leader_seen_by(1, |l| l == to).await;
    cluster.leader_health_on(to).await;

    // Reflection, both protocol versions, lists the public services (not the internal Raft one)
    // and resolves their descriptors.
    use tonic_reflection::pb::v1 as refl;
    let mut client = refl::server_reflection_client::ServerReflectionClient::new(cluster.channel(2));
    let ask = |req: refl::server_reflection_request::MessageRequest| refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![
            ask(refl::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
            ask(
                refl::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "taurus.v1.TaskService".into(),
                ),
            ),
        ]))
        .await
        .expect("reflection v1")
        .into_inner();
    let listed = answers.message().await.expect("list answer").expect("one answer");
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a service list: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in PUBLIC_SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("RaftService")),
        "internal service listed: {names:?}"
    );
    let file = answers.message().await.expect("file answer").expect("one answer");
    match file.message_response {
        Some(refl::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("no descriptor for taurus.v1.TaskService: {other:?}"),
    }

    use tonic_reflection::pb::v1alpha as alpha;
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(cluster.channel(3));
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let listed = answers.message().await.expect("list answer").expect("one answer");
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a service list: {listed:?}");
    };
    assert!(
        list.service.iter().any(|s| s.name == "taurus.v1.TaskService"),
        "{list:?}"
    );
}

/// Election timeouts far above what a hand-over takes: a new leader that shows up well within
/// `election_timeout_min` of the stop can only have been handed leadership.
fn slow_elections() -> RaftTuning {
    RaftTuning {
        heartbeat_interval: Duration::from_millis(300),
        election_timeout_min: Duration::from_secs(8),
        election_timeout_max: Duration::from_secs(9),
        ..RaftTuning::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_hands_leadership_over() {
    let tuning = slow_elections();
    let mut cluster = Cluster::start(3, tuning.clone()).await;
    let (leader, term) = cluster.leader_seen_by(1, |_| true).await;
    let other = (1..=3).find(|id| *id != leader).expect("a follower");
    // Every master knows the leader before it goes (a follower that never heard of it would
    // not count as up to date for this test).
    for id in 1..=3 {
        cluster.leader_seen_by(id, |l| l == leader).await;
    }

    let stopped_at = Instant::now();
    let task = cluster.signal_stop(leader);
    let (new_leader, new_term) = cluster.leader_seen_by(other, |l| l != leader).await;
    let took = stopped_at.elapsed();
    assert!(
        took < tuning.election_timeout_min,
        "a new leader after {took:?}: that is an election timeout ({:?}), not a hand-over",
        tuning.election_timeout_min
    );
    assert_eq!(new_term, term + 1, "one term for the hand-over");
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the old leader stops in time")
        .expect("master task")
        .expect("master ran cleanly");

    // The cluster takes writes at once, through either survivor.
    for via in (1..=3).filter(|id| *id != leader) {
        let mut req = tonic::Request::new(v1::SubmitTasksRequest {
            tasks: vec![v1::TaskSpec {
                id: format!("after-handover-{via}"),
                command: vec!["true".into()],
                ..Default::default()
            }],
            request_id: String::new(),
        });
        req.set_timeout(Duration::from_secs(5));
        TaskServiceClient::new(cluster.channel(via))
            .submit_tasks(req)
            .await
            .unwrap_or_else(|e| panic!("submit via master {via} (leader {new_leader}): {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_goes_not_serving_when_shutdown_begins() {
    let mut cluster = Cluster::start(3, RaftTuning::default()).await;
    let (leader, _) = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(cluster.health(follower, "").await, Some(ServingStatus::Serving));
    // A health watcher sees NOT_SERVING before the connection goes away.
    let mut watch = HealthClient::new(cluster.channel(follower))
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("watch answer")
        .expect("first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let task = cluster.signal_stop(follower);
    let next = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("a status change in time")
        .expect("watch answer")
        .expect("a status before the stream ends");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the follower stops in time")
        .expect("master task")
        .expect("master ran cleanly");
}

/// Reads `stream` until it ends, at most `WAIT`; returns how: `Ok(())` for a clean end, the
/// status otherwise. Messages before the end are skipped.
async fn until_end<T>(what: &str, stream: &mut tonic::Streaming<T>) -> Result<(), tonic::Status> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(status)) => return Err(status),
            Err(_) => panic!("{what}: still open {WAIT:?} after the master began to stop"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_watch_streams_end_when_a_master_stops() {
    let mut cluster = Cluster::start(3, RaftTuning::default()).await;
    let (leader, _) = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.leader_seen_by(follower, |l| l == leader).await;
    let ch = cluster.channel(follower);

    // A task that never ends (no agent runs it): a watch on it would stay open for ever.
    let mut req = tonic::Request::new(v1::SubmitTasksRequest {
        tasks: vec![v1::TaskSpec {
            id: "never-ends".into(),
            command: vec!["true".into()],
            ..Default::default()
        }],
        request_id: String::new(),
    });
    req.set_timeout(Duration::from_secs(5));
    TaskServiceClient::new(ch.clone())
        .submit_tasks(req)
        .await
        .expect("submit");
    let mut task_watch = TaskServiceClient::new(ch.clone())
        .watch_task(v1::WatchTaskRequest {
            id: "never-ends".into(),
        })
        .await
        .expect("task watch")
        .into_inner();
    let first = task_watch
        .message()
        .await
        .expect("watch answer")
        .expect("first event");
    assert_eq!(
        first.task.and_then(|t| t.spec).map(|s| s.id).as_deref(),
        Some("never-ends")
    );

    // An agent's assignment stream, as `taurus agent start` keeps it open.
    let mut agents = AgentServiceClient::new(ch.clone());
    let registered = agents
        .register_agent(v1::RegisterAgentRequest {
            id: "watching-agent".into(),
            address: "127.0.0.1:1".into(),
            max_tasks: 1,
            ..Default::default()
        })
        .await
        .expect("register agent")
        .into_inner();
    // The follower serves it from its own applied state: retried until it has applied the
    // registration (a stream opened before that says `reregister` and ends).
    let epoch = registered.epoch;
    let mut assignments = eventually("an assignment watch on the follower", || {
        let mut agents = agents.clone();
        async move {
            let mut stream = agents
                .watch_assignments(v1::WatchAssignmentsRequest {
                    agent_id: "watching-agent".into(),
                    epoch,
                })
                .await
                .ok()?
                .into_inner();
            let batch = stream.message().await.ok()??;
            (!batch.reregister).then_some(stream)
        }
    })
    .await;

    // A load balancer's health watch.
    let mut health_watch = HealthClient::new(ch)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = health_watch
        .message()
        .await
        .expect("watch answer")
        .expect("first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // None of the three is dropped by the caller: the stopping master ends each one itself.
    let task = cluster.signal_stop(follower);
    let next = tokio::time::timeout(WAIT, health_watch.message())
        .await
        .expect("a status change in time")
        .expect("watch answer")
        .expect("NOT_SERVING before the stream ends");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    if let Err(status) = until_end("the health watch", &mut health_watch).await {
        panic!("the health watch ends cleanly, not with {status:?}");
    }
    for (what, ended) in [
        (
            "the task watch",
            until_end("the task watch", &mut task_watch).await,
        ),
        (
            "the assignment watch",
            until_end("the assignment watch", &mut assignments).await,
        ),
    ] {
        let status = ended.expect_err("ended with a status telling the caller to go elsewhere");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
        // Ended by the stop signal, before Raft shuts down (which would end them too, later).
        assert!(status.message().contains("master stopping"), "{what}: {status:?}");
    }
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the master stops in time with streams open")
        .expect("master task")
        .expect("master ran cleanly");
    drop((task_watch, assignments, health_watch));
}
