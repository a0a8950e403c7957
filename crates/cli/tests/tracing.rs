//! Logs and traces of real processes: JSON log lines carry their spans' fields, and with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, one trace goes from `taurus task submit` through the
//! master to the agent's run of the task (checked with an in-test OTLP/gRPC collector).

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use opentelemetry_proto::tonic::common::v1::any_value;

/// Longest wait for anything in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

/// An OTLP/gRPC trace collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().expect("collector");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Exported {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a free port until the runtime ends; returns the OTLP endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Exported> {
        self.0.lock().expect("collector").clone()
    }
}

/// Child processes killed (and reaped) when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A one-master cluster's `taurus master start` in `dir`, with `--config` of `dir/master.toml`
/// (written with `config_toml`) and `env`; returns the child and its log, `dir/master.log`.
fn start_master(dir: &Path, addr: &str, config_toml: &str, env: &[(&str, &str)]) -> (Child, PathBuf) {
    let config = dir.join("master.toml");
    std::fs::write(&config, config_toml).expect("config");
    let log_path = dir.join("master.log");
    let log = std::fs::File::create(&log_path).expect("master log");
    let child = taurus()
        .args(["master", "start", "--id", "1", "--listen", addr])
        .args(["--peers", &format!("1={addr}")])
        .arg("--data-dir")
        .arg(dir.join("master-1"))
        .arg("--config")
        .arg(&config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("master starts");
    (child, log_path)
}

/// Polls `probe` until it is `Ok`, failing after [`WAIT`] with its last error.
async fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    eventually(what, WAIT, async || probe()).await
}

/// The JSON objects of a log file; every non-empty line must be one.
fn json_lines(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not JSON ({e}): {l}")))
        .collect()
}

/// The value of `field` in the span named `span` of a JSON log line.
fn span_field<'a>(line: &'a serde_json::Value, span: &str, field: &str) -> Option<&'a serde_json::Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == span)
        .map(|s| &s[field])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_node_agent_task_and_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    // The master's format comes from its file, the agent's from the flag.
    let config = format!("{FAST_SCHEDULER_TOML}[log]\nformat = \"json\"\n");
    let (master, master_log) = start_master(dir.path(), &addr, &config, &[]);
    let mut procs = Procs(vec![master]);
    let mut agents = Agents::new(dir.path());
    agents.start(
        "a1",
        &addr,
        &["--log-format", "json", "--log-level", "info,taurus_agent=debug"],
    );

    let lines = poll("the master's leader duties, logged as JSON", || {
        if let Ok(Some(status)) = procs.0[0].try_wait() {
            return Err(format!("master exited ({status}): {}", log_tail(&master_log, 20)));
        }
        let lines = json_lines(&master_log)?;
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "leader duties start")
            .then_some(lines)
            .ok_or_else(|| log_tail(&master_log, 5))
    })
    .await;
    let started = lines
        .iter()
        .find(|l| l["fields"]["message"] == "leader duties start")
        .expect("found");
    assert_eq!(
        span_field(started, "master", "node"),
        Some(&serde_json::json!(1)),
        "{started}"
    );
    assert!(
        started["fields"]["term"].as_u64().is_some_and(|t| t >= 1),
        "{started}"
    );

    let r = run(&[
        "--masters",
        &addr,
        "task",
        "submit",
        "--id",
        "logged",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let r = run(&["--masters", &addr, "--timeout", "60s", "task", "wait", "logged"]);
    assert_eq!(r.code, Some(0), "{r:?}{}", agents.logs(20));

    let agent_log = dir.path().join("a1.log");
    let running = poll("the agent's debug line for the task", || {
        json_lines(&agent_log)?
            .into_iter()
            .find(|l| l["fields"]["message"] == "running")
            .ok_or_else(|| log_tail(&agent_log, 5))
    })
    .await;
    assert_eq!(
        span_field(&running, "agent", "agent"),
        Some(&serde_json::json!("a1")),
        "{running}"
    );
    assert_eq!(
        span_field(&running, "attempt", "task"),
        Some(&serde_json::json!("logged")),
        "{running}"
    );
    assert_eq!(
        span_field(&running, "attempt", "attempt"),
        Some(&serde_json::json!(1)),
        "{running}"
    );
    assert_eq!(running["level"], "DEBUG");
    agents.check_running().expect("agent still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_in_the_trace_of_its_submit() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let otel: [(&str, &str); 2] = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        // Export every 100 ms, not every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let (master, master_log) = start_master(dir.path(), &addr, FAST_SCHEDULER_TOML, &otel);
    let mut procs = Procs(vec![master]);
    let agent_log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
    let agent_dir = dir.path().join("a1");
    procs.0.push(
        taurus()
            .args(["--masters", &addr, "agent", "start", "--id", "a1"])
            .arg("--work-dir")
            .arg(&agent_dir)
            .args(FAST_AGENT_FLAGS)
            .envs(otel)
            .stdin(Stdio::null())
            .stdout(agent_log.try_clone().expect("log"))
            .stderr(agent_log)
            .spawn()
            .expect("agent starts"),
    );

    // The CLI sends its command span's context; it flushes its spans before it exits.
    let submit = poll("a traced submit accepted", || {
        let out = taurus()
            .args([
                "--masters",
                &addr,
                "--timeout",
                "2s",
                "task",
                "submit",
                "--id",
                "traced",
                "--",
                "true",
            ])
            .envs(otel)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        match out.status.code() {
            Some(0) => Ok(()),
            _ => Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                log_tail(&master_log, 5)
            )),
        }
    });
    submit.await;
    let r = run(&["--masters", &addr, "--timeout", "60s", "task", "wait", "traced"]);
    assert_eq!(
        r.code,
        Some(0),
        "{r:?}{}",
        log_tail(&dir.path().join("agent.log"), 20)
    );

    let (cli, rpc, run_span, assign) = poll("the CLI, master and agent spans of the task", || {
        let spans = collector.spans();
        let find = |service: &str, name: &str| {
            spans
                .iter()
                .find(|s| s.service == service && s.name == name)
                .cloned()
        };
        let seen = || {
            spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cli =
            find("taurus-cli", "taurus task submit").ok_or_else(|| format!("no CLI span in [{}]", seen()))?;
        let rpc = spans
            .iter()
            .find(|s| {
                s.service == "taurus-master"
                    && s.name == "/taurus.v1.TaskService/SubmitTasks"
                    && s.trace_id == cli.trace_id
            })
            .cloned()
            .ok_or_else(|| format!("no master submit span in [{}]", seen()))?;
        let run_span = spans
            .iter()
            .find(|s| s.service == "taurus-agent" && s.name == "run" && s.trace_id == cli.trace_id)
            .cloned()
            .ok_or_else(|| format!("no agent run span in [{}]", seen()))?;
        let assign = spans
            .iter()
            .find(|s| s.service == "taurus-master" && s.name == "assign" && s.trace_id == cli.trace_id)
            .cloned()
            .ok_or_else(|| format!("no placement span in [{}]", seen()))?;
        Ok((cli, rpc, run_span, assign))
    })
    .await;
    assert_eq!(
        rpc.parent_span_id, cli.span_id,
        "the master's span is the CLI span's child"
    );
    assert_eq!(
        run_span.parent_span_id, rpc.span_id,
        "the run's parent is the submit call on the master"
    );
    assert_eq!(
        assign.parent_span_id, rpc.span_id,
        "the placement is in the trace too"
    );
    for (i, c) in procs.0.iter_mut().enumerate() {
        assert!(matches!(c.try_wait(), Ok(None)), "process {i} exited early");
    }
}
