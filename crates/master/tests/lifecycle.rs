//! A master's life as load balancers and operators see it: gRPC health (the whole server, each
//! public service, and the leader-only name), server reflection, a leader that hands its
//! leadership over when it is stopped, and a stopping master ending the streams its callers
//! keep open. Three real masters in one process on random loopback ports; every wait polls an
//! observable event with a bound.

use std::time::Duration;
use std::time::Instant;

use taurus_master::config::RaftTuning;
use taurus_master::lifecycle::LEADER_HEALTH_SERVICE;
use taurus_master::lifecycle::PUBLIC_SERVICES;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::HealthCheckResponse;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

mod common;

use common::Cluster;
use common::WAIT;
use common::eventually;
use common::until_end;

/// This file's checks of a cluster's gRPC health.
impl Cluster {
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
                for id in self.ids() {
                    let want = if id == leader {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if self.health(id, LEADER_HEALTH_SERVICE).await != Some(want) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_leadership_and_reflection_lists_the_public_api() {
    let cluster = Cluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;

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
    cluster
        .cluster_api(leader)
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

/// Submits one task, `id`, through `channel`, with a 5 s deadline.
async fn submit_one(
    channel: Channel,
    id: &str,
) -> Result<tonic::Response<v1::SubmitTasksResponse>, tonic::Status> {
    let mut req = tonic::Request::new(v1::SubmitTasksRequest {
        tasks: vec![v1::TaskSpec {
            id: id.into(),
            command: vec!["true".into()],
            ..Default::default()
        }],
        request_id: String::new(),
    });
    req.set_timeout(Duration::from_secs(5));
    TaskServiceClient::new(channel).submit_tasks(req).await
}

/// A health watch of the whole server through `channel`, whose first status was `SERVING`.
async fn serving_health_watch(channel: Channel) -> tonic::Streaming<HealthCheckResponse> {
    let mut watch = HealthClient::new(channel)
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
    watch
}

/// The next status on `watch`, within `WAIT`, is `NOT_SERVING` (a stop has begun).
async fn next_is_not_serving(watch: &mut tonic::Streaming<HealthCheckResponse>) {
    let next = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("a status change in time")
        .expect("watch answer")
        .expect("NOT_SERVING before the stream ends");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
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
    let (leader, term) = cluster.leader_term_seen_by(1, |_| true).await;
    let other = (1..=3).find(|id| *id != leader).expect("a follower");
    // Every master knows the leader before it goes (a follower that never heard of it would
    // not count as up to date for this test).
    for id in 1..=3 {
        cluster.leader_seen_by(id, |l| l == leader).await;
    }

    let stopped_at = Instant::now();
    let task = cluster.signal_stop(leader);
    let (new_leader, new_term) = cluster.leader_term_seen_by(other, |l| l != leader).await;
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
        submit_one(cluster.channel(via), &format!("after-handover-{via}"))
            .await
            .unwrap_or_else(|e| panic!("submit via master {via} (leader {new_leader}): {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_goes_not_serving_when_shutdown_begins() {
    let mut cluster = Cluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    assert_eq!(cluster.health(follower, "").await, Some(ServingStatus::Serving));
    // A health watcher sees NOT_SERVING before the connection goes away.
    let mut watch = serving_health_watch(cluster.channel(follower)).await;
    let task = cluster.signal_stop(follower);
    next_is_not_serving(&mut watch).await;
    drop(watch);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the follower stops in time")
        .expect("master task")
        .expect("master ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_watch_streams_end_when_a_master_stops() {
    let mut cluster = Cluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader_seen_by(1, |_| true).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.leader_seen_by(follower, |l| l == leader).await;
    let ch = cluster.channel(follower);

    // A task that never ends (no agent runs it): a watch on it would stay open for ever.
    submit_one(ch.clone(), "never-ends").await.expect("submit");
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
    let mut health_watch = serving_health_watch(ch).await;

    // None of the three is dropped by the caller: the stopping master ends each one itself.
    let task = cluster.signal_stop(follower);
    next_is_not_serving(&mut health_watch).await;
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
