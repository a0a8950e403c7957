//! `/metrics` and `/healthz` on the HTTP port of three in-process masters (random loopback
//! ports, real sled directories), with tasks submitted through every master and a scripted agent
//! that registers, heartbeats, receives its assignments and claims them. The values scraped over
//! HTTP must match what happened, and the exposition must follow Prometheus conventions.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use taurus_master::config::MasterConfig;
use taurus_master::metrics::sample;
use taurus_master::run_with_listener;
use taurus_protocol::v1;
use taurus_store::network::Channels;
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod common;

use common::Cluster;
use common::WAIT;
use common::eventually;

/// An HTTP/1.1 answer: status, headers (lower-case names), body.
struct HttpAnswer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// `GET path` on `addr`, with `Connection: close` so that the body ends with the stream.
async fn get(addr: &str, path: &str) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the HTTP port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the answer comes in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "this tiny client reads whole bodies only"
    );
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// This file's view of a cluster: `/metrics` of one master.
impl Cluster {
    async fn scrape(&self, id: u64) -> String {
        let answer = get(self.http(id), "/metrics").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    }

    /// Scrapes master `id` until `series` is `want`, the sign that it `what`; returns that scrape.
    async fn scrape_when(&self, id: u64, what: &str, series: &str, want: f64) -> String {
        eventually(&format!("master {id} {what}"), || async {
            let text = self.scrape(id).await;
            (sample(&text, series) == Some(want)).then_some(text)
        })
        .await
    }
}

/// The sum of every sample whose series starts with `prefix`.
fn sum(exposition: &str, prefix: &str) -> f64 {
    taurus_master::metrics::samples(exposition)
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn value(exposition: &str, series: &str) -> f64 {
    sample(exposition, series).unwrap_or_else(|| panic!("no sample {series} in:\n{exposition}"))
}

/// Checks the exposition is well-formed OpenMetrics text that follows Prometheus naming:
/// every sample belongs to a family announced once with HELP and TYPE; counters end in
/// `_total`, histograms have buckets up to `+Inf` equal to their count and are in seconds;
/// gauges do not end in `_total`; every name has the `taurus_` prefix.
fn check_conventions(exposition: &str) {
    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let lines: Vec<&str> = exposition.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("name");
            assert!(help.insert(name.to_string()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            assert!(help.contains(name), "TYPE before HELP for {name}");
        }
    }
    assert_eq!(
        help,
        types.keys().cloned().collect::<BTreeSet<_>>(),
        "HELP and TYPE name the same families"
    );
    // Ours carry the `taurus_` prefix; the process's own use the standard `process_` names.
    let valid_name = |n: &str| {
        (n.starts_with("taurus_") || n.starts_with("process_"))
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    for (name, kind) in &types {
        assert!(valid_name(name), "bad family name {name}");
        match kind.as_str() {
            "counter" => assert!(!name.ends_with("_total"), "{name}: the encoder adds _total"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} named like a counter"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name} not in seconds"),
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().expect("name");
        let family = types
            .iter()
            .filter(|(f, _)| name.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .unwrap_or_else(|| panic!("sample {name} of no announced family"));
        let suffix = &name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[],
        };
        assert!(
            allowed.contains(&suffix),
            "sample {name} in {} family {}",
            family.1,
            family.0
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "labels of {line:?}"
            );
            // Only bounded labels (no task ids).
            let inner = labels.trim_start_matches('{').trim_end_matches('}');
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let key = pair.split('=').next().expect("label name");
                assert!(
                    ["state", "priority", "agent", "role", "le", "kind", "resource"].contains(&key),
                    "unexpected label {key} in {line:?}"
                );
            }
        }
    }
    for (family, _) in types.iter().filter(|(_, k)| k.as_str() == "histogram") {
        let count = value(exposition, &format!("{family}_count"));
        let inf = value(exposition, &format!("{family}_bucket{{le=\"+Inf\"}}"));
        assert_eq!(count, inf, "{family}: +Inf bucket equals the count");
    }
}

fn spec(id: &str, priority: i32) -> v1::TaskSpec {
    v1::TaskSpec {
        id: id.into(),
        command: vec!["true".into()],
        priority,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_report_what_the_cluster_did() {
    let cluster = Cluster::builder().http().start(3).await;
    let leader = cluster.leader().await;

    for id in cluster.ids() {
        let health = get(cluster.http(id), "/healthz").await;
        assert_eq!(health.status, 200, "master {id} /healthz");
    }

    // Ten tasks in three submit calls, one through each master (two are forwarded).
    let priorities = [100, 50, 5, 5, 0, 0, 0, -3, -50, -2000];
    let mut ids = Vec::new();
    for (call, (via, range)) in [(1u64, 0..4), (2, 4..7), (3, 7..10)].into_iter().enumerate() {
        let tasks: Vec<v1::TaskSpec> = range
            .map(|i| {
                ids.push(format!("t{i}"));
                spec(&format!("t{i}"), priorities[i])
            })
            .collect();
        let n = tasks.len();
        let answer = cluster
            .tasks(via)
            .submit_tasks(v1::SubmitTasksRequest {
                tasks,
                request_id: format!("call-{call}"),
            })
            .await
            .unwrap_or_else(|s| panic!("submit through master {via}: {s}"))
            .into_inner();
        assert_eq!(answer.results.len(), n);
    }

    // Nothing placed yet: ten pending tasks, all of them queued, on every master.
    for id in 1..=3 {
        let text = cluster
            .scrape_when(
                id,
                "applies every submit",
                "taurus_tasks{state=\"pending\"}",
                10.0,
            )
            .await;
        check_conventions(&text);
        let queued = sum(&text, "taurus_queue_tasks{");
        assert_eq!(queued, 10.0, "master {id}: every pending task is queued");
        assert_eq!(value(&text, "taurus_queue_tasks{priority=\"100..999\"}"), 1.0);
        assert_eq!(value(&text, "taurus_queue_tasks{priority=\"<=-1000\"}"), 1.0);
        assert_eq!(value(&text, "taurus_queue_tasks{priority=\"1..9\"}"), 2.0);
    }

    // An agent with two slots gets the two most urgent tasks and claims them.
    let agent = "metrics-agent";
    let mut agents = cluster.agents(leader);
    let epoch = agents
        .register_agent(v1::RegisterAgentRequest {
            id: agent.into(),
            address: "test".into(),
            resources: Some(v1::Resources {
                cpu_millis: 4000,
                memory_mb: 2048,
                disk_mb: 1024,
            }),
            max_tasks: 2,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .epoch;
    agents
        .heartbeat(v1::HeartbeatRequest {
            agent_id: agent.into(),
            epoch,
            ..Default::default()
        })
        .await
        .expect("heartbeat");
    let mut feed = agents
        .watch_assignments(v1::WatchAssignmentsRequest {
            agent_id: agent.into(),
            epoch,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut assigned: BTreeMap<String, u64> = BTreeMap::new();
    tokio::time::timeout(WAIT, async {
        while assigned.len() < 2 {
            let batch = feed.message().await.expect("feed").expect("feed open");
            for a in batch.assign {
                assigned.insert(a.spec.expect("spec").id, a.fencing_token);
            }
        }
    })
    .await
    .expect("two assignments in time");
    assert_eq!(
        assigned.keys().cloned().collect::<Vec<_>>(),
        ["t0", "t1"],
        "the highest priorities go first"
    );
    let reports = assigned
        .iter()
        .map(|(id, token)| v1::TaskStatusReport {
            task_id: id.clone(),
            fencing_token: *token,
            kind: v1::ReportKind::Started as i32,
            ..Default::default()
        })
        .collect();
    let results = agents
        .report_task_status(v1::ReportTaskStatusRequest {
            agent_id: agent.into(),
            reports,
        })
        .await
        .expect("report")
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.outcome == "accepted"), "{results:?}");

    // Every master's state: two running, eight pending, one alive agent with both slots used.
    let mut scrapes = BTreeMap::new();
    for id in 1..=3 {
        let text = cluster
            .scrape_when(id, "applies the starts", "taurus_tasks{state=\"running\"}", 2.0)
            .await;
        check_conventions(&text);
        let by_state = sum(&text, "taurus_tasks{state=");
        assert_eq!(
            by_state, 10.0,
            "master {id}: tasks by state sum to what was submitted"
        );
        assert_eq!(value(&text, "taurus_tasks{state=\"pending\"}"), 8.0);
        assert_eq!(value(&text, "taurus_queue_tasks{priority=\"100..999\"}"), 0.0);
        assert_eq!(value(&text, "taurus_agents{state=\"alive\"}"), 1.0);
        let a = |name: &str| value(&text, &format!("{name}{{agent=\"{agent}\"}}"));
        assert_eq!(a("taurus_agent_slots"), 2.0);
        assert_eq!(a("taurus_agent_slots_used"), 2.0);
        assert_eq!(a("taurus_agent_cpu_cores"), 4.0);
        assert_eq!(a("taurus_agent_memory_bytes"), 2048.0 * 1024.0 * 1024.0);
        assert_eq!(
            a("taurus_agent_cpu_used_cores"),
            0.0,
            "the tasks declared no resources"
        );
        assert_eq!(value(&text, "taurus_raft_members{role=\"voter\"}"), 3.0);
        assert!(value(&text, "taurus_raft_applied_index") > 0.0);
        assert!(value(&text, "taurus_raft_commit_index") >= value(&text, "taurus_raft_applied_index"));
        assert!(value(&text, "taurus_raft_log_entries") > 0.0);
        assert!(value(&text, "taurus_store_size_bytes") > 0.0);
        // No snapshot yet at this point of the test: no index, no file.
        assert_eq!(value(&text, "taurus_raft_snapshot_index"), 0.0);
        assert_eq!(value(&text, "taurus_raft_snapshot_size_bytes"), 0.0);
        assert!(value(&text, "process_resident_memory_bytes") > 0.0);
        assert!(value(&text, "process_open_fds") > 0.0);
        assert!(value(&text, "taurus_raft_leader_changes_total") >= 1.0);
        assert_eq!(value(&text, "taurus_raft_id"), id as f64);
        scrapes.insert(id, text);
    }

    let is_leader: Vec<u64> = scrapes
        .iter()
        .filter(|(_, t)| value(t, "taurus_raft_is_leader") == 1.0)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(is_leader, [leader], "exactly the leader says it leads");
    let terms: BTreeSet<u64> = scrapes
        .values()
        .map(|t| value(t, "taurus_raft_term") as u64)
        .collect();
    assert_eq!(terms.len(), 1, "one term on every master: {terms:?}");
    for (id, t) in &scrapes {
        assert_eq!(value(t, "taurus_raft_leader_id"), leader as f64, "master {id}");
    }

    // Events: counted where they happened.
    let submits: f64 = scrapes
        .values()
        .map(|t| value(t, "taurus_submit_duration_seconds_count"))
        .sum();
    assert_eq!(submits, 3.0, "each client call counted once, where it arrived");
    for (id, t) in &scrapes {
        assert_eq!(
            value(t, "taurus_submit_duration_seconds_count"),
            1.0,
            "master {id} received one call"
        );
    }
    let on_leader = &scrapes[&leader];
    assert_eq!(value(on_leader, "taurus_tasks_placed_total"), 2.0);
    assert_eq!(value(on_leader, "taurus_schedule_latency_seconds_count"), 2.0);
    assert_eq!(value(on_leader, "taurus_start_latency_seconds_count"), 2.0);
    assert!(value(on_leader, "taurus_agent_heartbeats_total") >= 1.0);
    assert!(value(on_leader, "taurus_scheduling_round_duration_seconds_count") >= 1.0);
    assert_eq!(value(on_leader, "taurus_agent_heartbeat_timeouts_total"), 0.0);

    let answer = get(cluster.http(leader), "/metrics").await;
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some(taurus_master::metrics::CONTENT_TYPE)
    );
    // An open assignment stream would hold its master's gRPC server open.
    drop(feed);
    drop(agents);
    cluster.stop_all().await;
}

#[tokio::test]
async fn an_http_address_in_use_is_a_config_error_naming_http_listen() {
    let dir = TempDir::new().expect("tempdir");
    let taken = common::bind("127.0.0.1").await;
    let grpc = common::bind("127.0.0.1").await;
    let mut config = MasterConfig {
        listen: grpc.local_addr().expect("addr"),
        data_dir: dir.path().join("m1"),
        ..MasterConfig::default()
    };
    config.http.listen = Some(taken.local_addr().expect("addr"));
    let e = tokio::time::timeout(
        WAIT,
        run_with_listener(config, grpc, Channels::default(), async {}),
    )
    .await
    .expect("fails at once")
    .expect_err("the HTTP address is taken");
    let e = e.to_string();
    assert!(e.contains("http.listen") && e.contains("127.0.0.1:"), "{e}");
}
