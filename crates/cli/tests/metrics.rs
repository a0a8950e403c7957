//! An agent process's `/metrics` (`taurus agent start --http-listen`) after it ran a task for a
//! real 3-master cluster: attempt counters and run time, slots, and the agent process's own
//! resource use.

mod common;

use std::io::Read as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;
use std::time::Instant;

use common::Agents;
use common::FAST_SCHEDULER_TOML;
use common::Masters;
use common::run;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `GET path` (HTTP/1.1, `Connection: close`): the status code and the body, or why not.
fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((status, body.to_string()))
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn an_agent_serves_its_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut masters = Masters::start_in(dir.path(), FAST_SCHEDULER_TOML);
    masters.wait_for_leader();
    let mut agents = Agents::new(dir.path());
    // Port 0: the agent binds a free port itself and logs it.
    agents.start(
        "metrics-agent",
        &masters.flag(),
        &["--http-listen", "127.0.0.1:0"],
    );
    let http = agents.http_addr("metrics-agent");

    let m = masters.flag();
    let taurus = |args: &[&str]| run(&[&["--masters", m.as_str()][..], args].concat());
    let submitted = taurus(&["task", "submit", "--json", "--", "sh", "-c", "echo hi"]);
    assert_eq!(submitted.code, Some(0), "{submitted:?}");
    let submitted: Value = serde_json::from_str(&submitted.stdout).expect("JSON");
    let id = submitted["id"].as_str().expect("id").to_string();
    let waited = taurus(&["--timeout", "30s", "task", "wait", &id]);
    assert_eq!(
        waited.code,
        Some(0),
        "{waited:?}{}{}",
        masters.logs(),
        agents.logs(20)
    );

    // The report may reach the masters a moment before the counter is scraped: poll.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let last = match get(&http, "/metrics") {
            Ok((200, body))
                if value(
                    &body,
                    "taurus_agent_attempts_finished_total{outcome=\"succeeded\"}",
                ) == Some(1.0) =>
            {
                break body;
            }
            other => format!("{other:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "no succeeded attempt in the agent's metrics; last: {last}{}",
            agents.logs(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(v("taurus_agent_attempts_started_total"), 1.0);
    assert_eq!(v("taurus_agent_attempts_finished_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(v("taurus_agent_attempt_duration_seconds_count"), 1.0);
    assert_eq!(v("taurus_agent_attempts_running"), 0.0);
    assert_eq!(v("taurus_agent_slots"), 8.0, "--max-tasks 8");
    assert!(v("taurus_agent_epoch") > 0.0, "registered");
    assert_eq!(v("taurus_agent_fenced_total"), 0.0);
    assert!(v("process_resident_memory_bytes") > 1e6);
    assert!(v("process_open_fds") >= 3.0);
    // Present and sane; it can still read 0 when the agent has used less than one clock tick.
    assert!(v("process_cpu_seconds_total") >= 0.0);
    assert!(v("process_start_time_seconds") > 1.6e9);
    assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(get(&http, "/healthz").map(|(c, _)| c), Ok(200));
    drop(agents);
    drop(masters);
}
