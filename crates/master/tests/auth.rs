//! Authentication and authorisation on a real in-process 3-master cluster with `[auth]
//! enabled = true` (tokens; no TLS here: certificate identities are tested in the store's Raft
//! authorisation tests and `taurus_protocol::identity`).

use taurus_client::Client;
use taurus_client::ClientError;
use taurus_master::config::AuthConfig;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use tonic::Code;
use tonic::Request;
use tonic::transport::Channel;

mod common;

use common::Cluster;
use common::eventually;
use common::until_end;

/// Three masters with `[auth] enabled = true` and `default_submit_rate`.
async fn start_with_auth(default_submit_rate: Option<u32>) -> Cluster {
    Cluster::builder()
        .configure(move |c| {
            c.auth = AuthConfig {
                enabled: true,
                default_submit_rate,
            }
        })
        .start(3)
        .await
}

/// This file's clients and tokens.
impl Cluster {
    fn client(&self, token: Option<&str>) -> Client {
        let c = Client::new(self.addrs()).expect("client");
        c.with_token(token.unwrap_or("")).expect("token")
    }

    /// A client talking to master `i` (0-based) only.
    fn client_at(&self, i: usize, token: &str) -> Client {
        Client::new(vec![self.addrs()[i].clone()])
            .expect("client")
            .with_token(token)
            .expect("token")
    }

    async fn bootstrap(&self) -> String {
        let anon = self.client(None);
        let secret = eventually("bootstrap", || {
            let anon = anon.clone();
            async move { anon.acl_bootstrap("root").await.ok().map(|r| r.secret) }
        })
        .await;
        assert!(secret.starts_with("tau_"), "{secret}");
        secret
    }

    async fn token(&self, admin: &str, name: &str, role: &str, agent: &str, rate: u32) -> (String, String) {
        let r = self
            .client(Some(admin))
            .create_token(v1::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                agent: agent.into(),
                ttl_ms: 0,
                rate_per_sec: rate,
            })
            .await
            .expect("create token");
        let info = r.token.expect("token info");
        (info.id, r.secret)
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.code().unwrap_or_else(|| panic!("no code in {e}")),
    }
}

fn message(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn spec(id: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        command: vec!["taurus:noop".into()],
        max_attempts: 1,
        ..Default::default()
    }
}

async fn agent_channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().expect("ascii"));
    }
    r
}

fn register(id: &str) -> v1::RegisterAgentRequest {
    v1::RegisterAgentRequest {
        id: id.into(),
        address: String::new(),
        resources: Some(v1::Resources {
            cpu_millis: 1000,
            memory_mb: 1024,
            disk_mb: 1024,
        }),
        max_tasks: 4,
        labels: Default::default(),
        pool: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_refuses_the_unauthenticated_and_the_under_privileged() {
    let c = start_with_auth(None).await;
    let anon = c.client(None);
    // Before bootstrap, everything but Bootstrap says how to bootstrap.
    let early = eventually("a leader", || {
        let anon = anon.clone();
        async move {
            match anon.list_tasks(&[], 0, "", false).await {
                Err(e) if e.code() == Some(Code::Unauthenticated) => Some(e.to_string()),
                _ => None,
            }
        }
    })
    .await;
    assert!(early.contains("taurus acl bootstrap"), "{early}");

    let admin = c.bootstrap().await;
    // Only once.
    assert_eq!(code(anon.acl_bootstrap("again").await), Code::FailedPrecondition);
    let (_, read) = c.token(&admin, "viewer", "read", "", 0).await;
    let reader = c.client(Some(&read));

    // Task service.
    assert_eq!(code(anon.get_task("t1", false).await), Code::Unauthenticated);
    assert_eq!(code(anon.submit(vec![spec("t1")]).await), Code::Unauthenticated);
    let denied = message(reader.submit(vec![spec("t1")]).await);
    assert!(
        denied.contains("permission denied") && denied.contains("submit role"),
        "{denied}"
    );
    assert_eq!(code(reader.cancel_task("t1", "").await), Code::PermissionDenied);
    assert_eq!(
        code(reader.get_task("t1", false).await),
        Code::NotFound,
        "read may read"
    );
    // A wrong secret is unauthenticated, not denied.
    let bogus = c.client(Some("tau_0000"));
    assert_eq!(
        code(bogus.list_tasks(&[], 0, "", false).await),
        Code::Unauthenticated
    );

    // Cluster service.
    assert_eq!(code(anon.cluster_status().await), Code::Unauthenticated);
    reader.cluster_status().await.expect("read may see the status");
    assert_eq!(code(anon.monitoring(false).await), Code::Unauthenticated);
    let seen = reader
        .monitoring(false)
        .await
        .expect("read may see the monitoring report");
    assert!(
        seen.leader_view,
        "forwarded to the leader with the reader's token: {seen:?}"
    );
    assert_eq!(code(reader.transfer_leader(2).await), Code::PermissionDenied);
    assert_eq!(
        code(reader.add_master(9, "127.0.0.1:1").await),
        Code::PermissionDenied
    );
    assert_eq!(code(reader.remove_master(3).await), Code::PermissionDenied);

    // Agent service.
    assert_eq!(code(anon.list_agents(false).await), Code::Unauthenticated);
    reader.list_agents(false).await.expect("read may list agents");
    assert_eq!(
        code(reader.set_agent_drain("w1", true, "").await),
        Code::PermissionDenied
    );
    let mut agents = AgentServiceClient::new(agent_channel(c.addr(1)).await);
    let s = agents
        .register_agent(with_token(register("w1"), None))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = agents
        .register_agent(with_token(register("w1"), Some(&read)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");

    // ACL service.
    assert_eq!(code(anon.list_tokens(false).await), Code::Unauthenticated);
    assert_eq!(code(reader.list_tokens(false).await), Code::PermissionDenied);
    assert_eq!(code(reader.revoke_token("acl-1").await), Code::PermissionDenied);
    let create = reader
        .create_token(v1::CreateTokenRequest {
            name: "x".into(),
            role: "admin".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(create), Code::PermissionDenied);
    assert_eq!(code(anon.who_am_i().await), Code::Unauthenticated);
    let me = reader.who_am_i().await.expect("whoami");
    assert_eq!(
        (me.kind.as_str(), me.name.as_str(), me.role.as_str()),
        ("user", "viewer", "read")
    );
    assert!(me.auth_enabled);

    // ListTokens never shows a secret or its hash.
    let tokens = c.client(Some(&admin)).list_tokens(false).await.expect("list");
    assert_eq!(tokens.tokens.len(), 2);
    let shown = format!("{:?}", tokens.tokens);
    assert!(!shown.contains(&read) && !shown.contains(&taurus_master::auth::secret_hash(&read)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_on_every_replica() {
    let c = start_with_auth(None).await;
    let admin = c.bootstrap().await;
    let (id, secret) = c.token(&admin, "ci", "submit", "", 0).await;
    for i in 0..3 {
        // Each master knows it (a follower may first catch up with the leader).
        let r = c.client_at(i, &secret).get_task("nope", false).await;
        assert_eq!(code(r), Code::NotFound, "master {i}");
    }
    c.client(Some(&admin)).revoke_token(&id).await.expect("revoke");
    for i in 0..3 {
        let client = c.client_at(i, &secret);
        let read = message(client.get_task("nope", false).await);
        assert!(read.contains("unauthenticated"), "master {i}: {read}");
        assert_eq!(
            code(client.list_tasks(&[], 0, "", false).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(
                client
                    .submit_direct(&v1::SubmitTasksRequest {
                        tasks: vec![spec(&format!("r{i}"))],
                        request_id: String::new(),
                    })
                    .await
            ),
            Code::Unauthenticated,
            "master {i}"
        );
    }
    // Revoked ids are gone for good.
    assert_eq!(
        code(c.client(Some(&admin)).revoke_token(&id).await),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitter_and_canceller_are_recorded_and_submit_cancels_only_its_own() {
    let c = start_with_auth(None).await;
    let admin = c.bootstrap().await;
    let (_, alice) = c.token(&admin, "alice", "submit", "", 0).await;
    let (_, bob) = c.token(&admin, "bob", "submit", "", 0).await;
    let (_, ops) = c.token(&admin, "ops", "operator", "", 0).await;
    let alice = c.client(Some(&alice));
    alice.submit(vec![spec("a1"), spec("a2")]).await.expect("submit");
    let bob = c.client(Some(&bob));
    let denied = message(bob.cancel_task("a1", "mine now").await);
    assert!(
        denied.contains("permission denied") && denied.contains("alice"),
        "{denied}"
    );
    alice.cancel_task("a2", "").await.expect("own task");
    c.client(Some(&ops))
        .cancel_task("a1", "ops")
        .await
        .expect("operator cancels any");
    let a1 = alice
        .get_task("a1", false)
        .await
        .expect("get")
        .task
        .expect("task");
    assert_eq!(
        (a1.submitted_by.as_str(), a1.cancelled_by.as_str()),
        ("alice", "ops")
    );
    let a2 = alice
        .get_task("a2", false)
        .await
        .expect("get")
        .task
        .expect("task");
    assert_eq!(
        (a2.submitted_by.as_str(), a2.cancelled_by.as_str()),
        ("alice", "alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submit_rate_of_a_token_is_limited() {
    let c = start_with_auth(Some(1000)).await;
    let admin = c.bootstrap().await;
    let (_, slow) = c.token(&admin, "slow", "submit", "", 3).await;
    let slow = c.client(Some(&slow));
    slow.submit_direct(&v1::SubmitTasksRequest {
        tasks: vec![spec("s1"), spec("s2"), spec("s3")],
        request_id: String::new(),
    })
    .await
    .expect("within the burst");
    let r = slow
        .submit_direct(&v1::SubmitTasksRequest {
            tasks: vec![spec("s4"), spec("s5"), spec("s6")],
            request_id: String::new(),
        })
        .await;
    let m = message(r);
    assert!(m.contains("resource exhausted") && m.contains("3 tasks/s"), "{m}");
    // The default (1000/s) applies to a token without its own rate.
    let (_, fast) = c.token(&admin, "fast", "submit", "", 0).await;
    c.client(Some(&fast))
        .submit_direct(&v1::SubmitTasksRequest {
            tasks: (0..50).map(|i| spec(&format!("f{i}"))).collect(),
            request_id: String::new(),
        })
        .await
        .expect("default rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_acts_only_as_itself() {
    let c = start_with_auth(None).await;
    let admin = c.bootstrap().await;
    let (_, w1) = c.token(&admin, "w1-join", "agent", "w1", 0).await;
    let (_, w2) = c.token(&admin, "w2-join", "agent", "w2", 0).await;
    let (_, sub) = c.token(&admin, "sub", "submit", "", 0).await;
    for addr in &c.addrs() {
        let mut agents = AgentServiceClient::new(agent_channel(addr).await);
        let s = agents
            .register_agent(with_token(register("w2"), Some(&w1)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{addr}: {s:?}");
        assert!(s.message().contains("w1"), "{s:?}");
    }
    let mut agents = AgentServiceClient::new(agent_channel(c.addr(2)).await);
    let e1 = agents
        .register_agent(with_token(register("w1"), Some(&w1)))
        .await
        .expect("w1 registers as itself")
        .into_inner()
        .epoch;
    let s = agents
        .watch_assignments(with_token(
            v1::WatchAssignmentsRequest {
                agent_id: "w2".into(),
                epoch: e1,
            },
            Some(&w1),
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    // A task placed on w1 (the only agent, kept alive by heartbeats).
    c.client(Some(&sub))
        .submit(vec![spec("job")])
        .await
        .expect("submit");
    let reader = c.client(Some(&admin));
    let token = eventually("job assigned to w1", || {
        let reader = reader.clone();
        let mut agents = agents.clone();
        let w1 = w1.clone();
        async move {
            let _ = agents
                .heartbeat(with_token(
                    v1::HeartbeatRequest {
                        agent_id: "w1".into(),
                        epoch: e1,
                        ..Default::default()
                    },
                    Some(&w1),
                ))
                .await;
            let t = reader.get_task("job", false).await.ok()?.task?;
            let a = t.attempts.last()?;
            (a.agent_id == "w1").then_some(a.fencing_token)
        }
    })
    .await;
    // w2 registers as itself, then claims w1's attempt: refused at the boundary.
    agents
        .register_agent(with_token(register("w2"), Some(&w2)))
        .await
        .expect("w2 registers as itself");
    let report = |agent: &str| v1::ReportTaskStatusRequest {
        agent_id: agent.into(),
        reports: vec![v1::TaskStatusReport {
            task_id: "job".into(),
            fencing_token: token,
            kind: v1::ReportKind::Started as i32,
            ..Default::default()
        }],
    };
    for addr in &c.addrs() {
        let mut a = AgentServiceClient::new(agent_channel(addr).await);
        let s = a
            .report_task_status(with_token(report("w2"), Some(&w2)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{addr}: {s:?}");
        // Nor may it pretend to be w1.
        let s = a
            .report_task_status(with_token(report("w1"), Some(&w2)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{addr}: {s:?}");
    }
    let t = reader
        .get_task("job", false)
        .await
        .expect("get")
        .task
        .expect("task");
    assert_eq!(t.state, v1::TaskState::Assigned as i32, "nothing changed");
    // w1 itself may.
    let ok = agents
        .report_task_status(with_token(report("w1"), Some(&w1)))
        .await
        .expect("w1 reports on its own attempt")
        .into_inner();
    assert_eq!(ok.results.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_ends_the_streams_its_token_opened() {
    use taurus_protocol::v1::task_service_client::TaskServiceClient;
    let c = start_with_auth(None).await;
    let admin = c.bootstrap().await;
    let (join_id, join) = c.token(&admin, "w1-join", "agent", "w1", 0).await;
    let (read_id, read) = c.token(&admin, "watcher", "read", "", 0).await;
    c.client(Some(&admin))
        .submit(vec![spec("watched")])
        .await
        .expect("submit");
    // Streams opened on a follower and on the leader alike: open both on every master. One
    // registration; every master's stream serves that epoch once the master has applied it (a
    // master that has not yet applies it answers "re-register" and ends the stream: retried).
    let mut agents0 = AgentServiceClient::new(agent_channel(c.addr(1)).await);
    let epoch = agents0
        .register_agent(with_token(register("w1"), Some(&join)))
        .await
        .expect("w1 registers")
        .into_inner()
        .epoch;
    let mut assignments = Vec::new();
    let mut watches = Vec::new();
    for addr in &c.addrs() {
        let stream = eventually(&format!("an assignment stream on {addr}"), || {
            let join = join.clone();
            async move {
                let mut agents = AgentServiceClient::new(agent_channel(addr).await);
                let mut stream = agents
                    .watch_assignments(with_token(
                        v1::WatchAssignmentsRequest {
                            agent_id: "w1".into(),
                            epoch,
                        },
                        Some(&join),
                    ))
                    .await
                    .ok()?
                    .into_inner();
                let first = stream.message().await.ok()??;
                (!first.reregister).then_some(stream)
            }
        })
        .await;
        assignments.push(stream);
        let mut tasks = TaskServiceClient::new(agent_channel(addr).await);
        let mut watch = tasks
            .watch_task(with_token(
                v1::WatchTaskRequest { id: "watched".into() },
                Some(&read),
            ))
            .await
            .expect("watch task opens")
            .into_inner();
        assert!(watch.message().await.expect("first event").is_some());
        watches.push(watch);
    }
    let admin_client = c.client(Some(&admin));
    admin_client
        .revoke_token(&join_id)
        .await
        .expect("revoke join token");
    admin_client
        .revoke_token(&read_id)
        .await
        .expect("revoke read token");
    // The next change anywhere in the state wakes the streams; each ends UNAUTHENTICATED.
    admin_client
        .submit(vec![spec("poke")])
        .await
        .expect("a change to wake the streams");
    for (i, mut open) in assignments.into_iter().enumerate() {
        let ended = until_end(&format!("the assignment stream on master {i}"), &mut open).await;
        let status = ended.expect_err("ended by an error, not a clean end");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "stream on master {i}: {status:?}"
        );
    }
    for (i, mut w) in watches.into_iter().enumerate() {
        let ended = until_end(&format!("the watch on master {i}"), &mut w).await;
        let status = ended.expect_err("ended by an error");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "watch on master {i}: {status:?}"
        );
    }
}
