//! Mutual TLS on every channel of real masters in one process, on random loopback ports: a
//! 3-master cluster elects, replicates, forwards and reads over TLS; clients with a foreign CA,
//! without a certificate, or dialling a name the master's certificate does not carry are
//! refused. Nothing sleeps to hope: waits poll for an observable event with a bound.

use std::path::Path;
use std::time::Duration;

use taurus_client::Client;
use taurus_client::ClientError;
use taurus_master::config::AuthConfig;
use taurus_master::config::MasterConfig;
use taurus_master::run_with_listener;
use taurus_protocol::tls::TlsFiles;
use taurus_protocol::tls::generate;
use taurus_protocol::tls::generate::Role;
use taurus_protocol::v1;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_store::network::Channels;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;

mod common;

use common::Cluster;
use common::WAIT;
use common::bind;
use common::eventually;

/// Masters serving TLS, one per `(listener, files)`, all members of one cluster.
fn start(masters: Vec<(TcpListener, TlsFiles)>) -> Cluster {
    start_with(masters, false)
}

/// Like [`start`], with authentication on (`[auth] enabled`) when `auth`.
fn start_with(masters: Vec<(TcpListener, TlsFiles)>, auth: bool) -> Cluster {
    let (listeners, files): (Vec<TcpListener>, Vec<TlsFiles>) = masters.into_iter().unzip();
    // Each master is handed plain peer channels: it must switch them to TLS itself.
    Cluster::builder()
        .configure(move |c| {
            c.tls = Some(files[c.id as usize - 1].clone());
            c.auth = AuthConfig {
                enabled: auth,
                ..Default::default()
            };
        })
        .start_on(listeners)
}

/// This file's wait for a leader, over TLS.
impl Cluster {
    /// Waits until every master sees the same leader (which needs Raft over TLS).
    async fn leader_over_tls(&self, client_files: &TlsFiles) -> u64 {
        eventually("every master sees one leader", || async {
            let mut leaders = Vec::new();
            for addr in self.addrs() {
                let c = Client::with_tls(vec![addr], client_files)
                    .expect("client")
                    .with_deadline(Duration::from_secs(1));
                leaders.push(c.cluster_status().await.ok()?.leader);
            }
            (leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])).then_some(leaders[0])
        })
        .await
    }
}

/// A CA with `masters` master certificates and the client certificates `clients` in `dir`.
fn certs(dir: &Path, masters: usize, clients: &[&str]) -> (Vec<TlsFiles>, Vec<TlsFiles>) {
    let names: Vec<String> = (1..=masters).map(|i| format!("master-{i}")).collect();
    let mut holders: Vec<(Role, &str)> = names.iter().map(|n| (Role::Master, n.as_str())).collect();
    holders.extend(clients.iter().map(|c| (Role::Client, *c)));
    let mut files = generate::write_set(dir, &holders, false).expect("certificates");
    let clients = files.split_off(masters);
    (files, clients)
}

fn spec(id: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        command: vec!["true".into()],
        ..Default::default()
    }
}

/// The message of a call that no master served.
fn unavailable(e: ClientError) -> String {
    match e {
        ClientError::Unavailable { last, .. } => last,
        other => panic!("expected no master to serve the call, got {other:?}"),
    }
}

/// One submit attempt to `addr` (no retries, so the error is the connection's own), which must
/// fail: returns the error message.
async fn refused_submit(addr: &str, tls: Option<ClientTlsConfig>, id: &str) -> String {
    let channel = taurus_protocol::tls::endpoint(addr, tls.as_ref())
        .expect("endpoint")
        .connect_lazy();
    let mut client = TaskServiceClient::new(channel);
    let call = client.submit_tasks(v1::SubmitTasksRequest {
        tasks: vec![spec(id)],
        request_id: String::new(),
    });
    match tokio::time::timeout(WAIT, call).await {
        Ok(Err(status)) => status.message().to_string(),
        Ok(Ok(_)) => panic!("{id}: a client without the cluster's trust was served"),
        Err(_) => panic!("{id}: no answer within {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_masters_over_tls_serve_a_client_end_to_end() {
    let pki = TempDir::new().expect("tempdir");
    let (masters, clients) = certs(pki.path(), 3, &["alice"]);
    let mut pairs = Vec::new();
    for files in masters {
        pairs.push((bind("127.0.0.1").await, files));
    }
    let cluster = start(pairs);
    let alice = &clients[0];
    let leader = cluster.leader_over_tls(alice).await;

    // Submit through a follower (forwarded to the leader over TLS).
    let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let via_follower = Client::with_tls(vec![cluster.addr(follower).to_string()], alice).expect("client");
    assert!(via_follower.masters()[0].starts_with("https://"));
    let submitted = via_follower
        .submit(vec![spec("tls-1"), spec("tls-2")])
        .await
        .expect("submit");
    assert_eq!(submitted.results.len(), 2);
    assert!(submitted.results.iter().all(|r| r.created && r.log_index > 0));

    // A linearizable read on every master (read index from the leader over TLS) sees it.
    for addr in &cluster.addrs() {
        let c = Client::with_tls(vec![addr.clone()], alice).expect("client");
        let got = c.get_task("tls-2", false).await.expect("linearizable read");
        let task = got.task.expect("task");
        assert_eq!(task.log_index, submitted.log_index);
        assert_eq!(task.state, v1::TaskState::Pending as i32);
    }

    // The whole cluster through one client, as the CLI uses it.
    let all = Client::with_tls(cluster.addrs(), alice).expect("client");
    let again = all.submit(vec![spec("tls-1")]).await.expect("resubmit");
    assert!(
        !again.results[0].created,
        "an existing id is returned, not re-created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_without_the_clusters_trust_are_refused() {
    let pki = TempDir::new().expect("tempdir");
    let (masters, clients) = certs(pki.path(), 1, &["alice"]);
    let foreign_pki = TempDir::new().expect("tempdir");
    let (_, foreign) = certs(foreign_pki.path(), 0, &["mallory"]);
    let files = masters.into_iter().next().expect("master certificate");
    let cluster = start(vec![(bind("127.0.0.1").await, files)]);
    let alice = &clients[0];
    cluster.leader_over_tls(alice).await;
    let addrs = cluster.addrs();
    let refused = |tls: Option<ClientTlsConfig>, id: &'static str| refused_submit(&addrs[0], tls, id);
    let ca = std::fs::read(&alice.ca_file).expect("CA file");
    let trusting = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.clone()));

    // A client trusting another CA refuses the master's certificate. (Both CAs are named
    // `taurus-ca`, so rustls finds the foreign one's signature bad rather than unknown.)
    let e = refused(Some(foreign[0].client_config().expect("files")), "foreign-ca").await;
    assert!(e.contains("invalid peer certificate"), "{e}");
    // Through the client library too: every master refused, until the deadline.
    let foreign_client = Client::with_tls(addrs.clone(), &foreign[0])
        .expect("client")
        .with_deadline(Duration::from_secs(1));
    unavailable(foreign_client.cluster_status().await.expect_err("refused"));

    // A client certificate from another CA (trusting the right one) is refused by the master,
    // which aborts the TLS 1.3 connection after the handshake: depending on timing the client
    // sees its call cancelled or the connection broken. (Below: nothing was created.)
    let mallory = std::fs::read(&foreign[0].cert_file).expect("cert");
    let mallory_key = std::fs::read(&foreign[0].key_file).expect("key");
    let wrong_cert = trusting().identity(Identity::from_pem(mallory, mallory_key));
    let e = refused(Some(wrong_cert), "foreign-cert").await;
    assert!(e.contains("cancel") || e.contains("transport error"), "{e}");

    // No client certificate at all: refused the same way.
    let e = refused(Some(trusting()), "no-cert").await;
    assert!(e.contains("cancel") || e.contains("transport error"), "{e}");

    // Plain HTTP/2 to a TLS master: refused.
    refused(None, "plain").await;

    // The right files still work after all that, and none of the refused submits happened.
    let ok = Client::with_tls(addrs, alice).expect("client");
    for id in ["foreign-ca", "foreign-cert", "no-cert", "plain"] {
        let e = ok.get_task(id, false).await.expect_err("never created");
        assert!(e.is_not_found(), "{id}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_certificate_for_another_host_fails_server_name_checking() {
    // Both masters listen on 127.0.0.2 (loopback). Only the second one's certificate names it;
    // the first carries the default names (master-1, localhost, 127.0.0.1).
    let pki = TempDir::new().expect("tempdir");
    let ca = generate::ca("taurus-ca", 1).expect("CA");
    let (ca_file, _) = generate::write_pair(pki.path(), "ca", &ca, false).expect("write CA");
    let write = |role, name: &str, sans: &[String]| {
        let pem = generate::leaf(&ca, role, name, sans, 1).expect("certificate");
        let (cert_file, key_file) =
            generate::write_pair(pki.path(), &generate::stem(role, name), &pem, false).expect("write");
        TlsFiles {
            ca_file: ca_file.clone(),
            cert_file,
            key_file,
        }
    };
    let default_names = write(Role::Master, "master-1", &[]);
    let right_name = write(Role::Master, "master-2", &["127.0.0.2".to_string()]);
    let alice = write(Role::Client, "alice", &[]);

    let wrong = start(vec![(bind("127.0.0.2").await, default_names)]);
    let right = start(vec![(bind("127.0.0.2").await, right_name)]);

    let ok = Client::with_tls(right.addrs(), &alice).expect("client");
    eventually("the master whose certificate names 127.0.0.2 answers", || async {
        ok.cluster_status().await.ok()
    })
    .await;

    let e = refused_submit(wrong.addr(1), Some(alice.client_config().expect("files")), "x").await;
    assert!(e.contains("not valid for name \"127.0.0.2\""), "{e}");
}

#[tokio::test]
async fn a_master_with_unusable_tls_files_refuses_to_start_naming_the_file() {
    let pki = TempDir::new().expect("tempdir");
    let (masters, _) = certs(pki.path(), 1, &[]);
    let mut files = masters.into_iter().next().expect("master certificate");
    files.key_file = pki.path().join("missing.key");
    let l = bind("127.0.0.1").await;
    let config = MasterConfig {
        listen: l.local_addr().expect("local addr"),
        data_dir: pki.path().join("data"),
        tls: Some(files),
        ..MasterConfig::default()
    };
    let e = run_with_listener(config, l, Channels::default(), async {})
        .await
        .expect_err("cannot start")
        .to_string();
    assert!(e.contains("tls.key_file") && e.contains("missing.key"), "{e}");
}

/// One raw `Vote` RPC to `addr` over TLS with `files` as the caller's certificate, as candidate
/// `node` in `term`.
async fn raw_vote(addr: &str, files: &TlsFiles, node: u64, term: u64) -> Result<(), tonic::Status> {
    use openraft::alias::VoteOf;
    use openraft::raft::VoteRequest;
    use taurus_protocol::internal;
    use taurus_protocol::internal::raft_service_client::RaftServiceClient;
    type C = taurus_store::TypeConfig;
    let tls = files.client_config().expect("client tls");
    let channel = taurus_protocol::tls::endpoint(addr, Some(&tls))
        .expect("endpoint")
        .connect_lazy();
    let rpc = VoteRequest::<C>::new(VoteOf::<C>::new(term, node), None);
    let data = taurus_store::codec::encode(&rpc).expect("encode");
    let mut client = RaftServiceClient::new(channel);
    let call = client.vote(internal::RaftMessage { data });
    match tokio::time::timeout(WAIT, call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => panic!("no answer to a vote within {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_is_not_a_member_cannot_vote_even_with_a_valid_certificate() {
    let pki = TempDir::new().expect("tempdir");
    // One CA: three members, a user, and a fourth master certificate that was never added.
    let holders = [
        (Role::Master, "master-1"),
        (Role::Master, "master-2"),
        (Role::Master, "master-3"),
        (Role::Client, "alice"),
        (Role::Master, "master-9"),
        (Role::Agent, "worker-1"),
    ];
    let files = generate::write_set(pki.path(), &holders, false).expect("certificates");
    let mut pairs = Vec::new();
    for f in &files[..3] {
        pairs.push((bind("127.0.0.1").await, f.clone()));
    }
    let cluster = start(pairs);
    let (alice, rogue, agent) = (&files[3], &files[4], &files[5]);
    let leader = cluster.leader_over_tls(alice).await;
    let status = Client::with_tls(cluster.addrs(), alice)
        .expect("client")
        .cluster_status()
        .await
        .expect("status");
    let term = status.term;

    for addr in &cluster.addrs() {
        // A valid master certificate, but node 9 is no member: refused before Raft sees it.
        let e = raw_vote(addr, rogue, 9, term + 100)
            .await
            .expect_err("non-member vote");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("not a member"), "{e:?}");
        // A client or agent certificate may not speak Raft at all, whatever id it claims.
        for who in [alice, agent] {
            let e = raw_vote(addr, who, 2, term + 100)
                .await
                .expect_err("not a master cert");
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            assert!(e.message().contains("OU=master"), "{e:?}");
        }
        // Control: the same message from a member's certificate and id, with a stale term, is
        // let through to Raft and answered (not granted): the refusals above are the checks.
        raw_vote(addr, &files[1], 2, 0)
            .await
            .expect("a member's (stale) vote is answered");
    }
    // Nothing reached Raft: the term did not jump and the leader stayed.
    let after = Client::with_tls(cluster.addrs(), alice)
        .expect("client")
        .cluster_status()
        .await
        .expect("status");
    assert!(
        after.term < term + 100,
        "a refused vote moved the term: {after:?}"
    );
    assert_eq!(after.leader, leader, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_certificate_acts_only_as_the_agent_it_names() {
    use taurus_protocol::v1::agent_service_client::AgentServiceClient;
    let pki = TempDir::new().expect("tempdir");
    let holders = [
        (Role::Master, "master-1"),
        (Role::Client, "alice"),
        (Role::Agent, "worker-1"),
    ];
    let files = generate::write_set(pki.path(), &holders, false).expect("certificates");
    let cluster = start_with(vec![(bind("127.0.0.1").await, files[0].clone())], true);
    let (alice, worker) = (&files[1], &files[2]);
    // The first admin token (allowed once, without a token, to a holder of a CA certificate).
    let admin = eventually("the ACL bootstrapped", || async {
        Client::with_tls(cluster.addrs(), alice)
            .ok()?
            .with_deadline(Duration::from_secs(1))
            .acl_bootstrap("admin")
            .await
            .ok()
    })
    .await;
    assert!(!admin.secret.is_empty());

    let tls = worker.client_config().expect("client tls");
    let channel = taurus_protocol::tls::endpoint(cluster.addr(1), Some(&tls))
        .expect("endpoint")
        .connect_lazy();
    let mut agent = AgentServiceClient::new(channel);
    let register = |id: &str| v1::RegisterAgentRequest {
        id: id.into(),
        resources: Some(v1::Resources {
            cpu_millis: 1000,
            memory_mb: 512,
            disk_mb: 512,
        }),
        max_tasks: 2,
        ..Default::default()
    };
    // As itself: its certificate is its identity, no token needed.
    let me = agent
        .register_agent(register("worker-1"))
        .await
        .expect("an agent registers as the name its certificate carries")
        .into_inner();
    // As anyone else: refused, for every agent call.
    let e = agent
        .register_agent(register("worker-2"))
        .await
        .expect_err("other name");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("worker-1"), "{e:?}");
    let e = agent
        .heartbeat(v1::HeartbeatRequest {
            agent_id: "worker-2".into(),
            epoch: me.epoch,
            ..Default::default()
        })
        .await
        .expect_err("heartbeat as another");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = agent
        .report_task_status(v1::ReportTaskStatusRequest {
            agent_id: "worker-2".into(),
            reports: vec![v1::TaskStatusReport {
                task_id: "t".into(),
                fencing_token: 1,
                kind: v1::ReportKind::Finished as i32,
                end: "succeeded".into(),
                ..Default::default()
            }],
        })
        .await
        .expect_err("report as another");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // An agent certificate is no user: it may not submit.
    let mut tasks = TaskServiceClient::new(
        taurus_protocol::tls::endpoint(cluster.addr(1), Some(&tls))
            .expect("endpoint")
            .connect_lazy(),
    );
    let e = tasks
        .submit_tasks(v1::SubmitTasksRequest {
            tasks: vec![spec("by-agent")],
            ..Default::default()
        })
        .await
        .expect_err("agents do not submit");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}
