//! Helpers shared by the CLI tests: running the real `taurus` binary and local masters.

#![allow(dead_code)] // each test file uses a different part

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

/// What one run of `taurus` did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// The `taurus` binary with no `TAURUS_*` settings inherited from the environment.
pub fn taurus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taurus"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TAURUS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `taurus ARGS...` to completion.
pub fn run(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = taurus()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("taurus runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Asserts a failed run printed exactly one line, `error: ...` containing `needle`, on stderr.
pub fn assert_one_error_line(r: &Run, needle: &str) {
    assert_ne!(r.code, Some(0), "expected a failure: {r:?}");
    assert!(r.code.is_some(), "killed by a signal: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {r:?}");
    assert!(lines[0].starts_with("error: "), "{r:?}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {:?}", lines[0]);
    assert!(!r.stderr.contains("panicked"), "{r:?}");
}

/// A port that was free a moment ago (and is closed now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Distinct free ports, all found while holding the others.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Three `taurus master start` processes on free ports with temporary data directories,
/// killed when dropped.
pub struct Masters {
    children: Vec<Child>,
    pub addrs: Vec<String>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Masters {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = free_ports(3)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = (i + 1).to_string();
            let log_path = dir.path().join(format!("master-{id}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let data = dir.path().join(format!("master-{id}"));
            let child = taurus()
                .args([
                    "master",
                    "start",
                    "--id",
                    &id,
                    "--listen",
                    addr,
                    "--peers",
                    &peers,
                    "--data-dir",
                ])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("master starts");
            children.push(child);
            logs.push(log_path);
        }
        Masters {
            children,
            addrs,
            logs,
            _dir: dir,
        }
    }

    /// `--masters A,B,C`.
    pub fn flag(&self) -> String {
        self.addrs.join(",")
    }

    /// The tail of every master's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, path) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("\n--- master {} log (tail) ---\n{tail}", i + 1));
        }
        out
    }

    /// Polls `cluster status --json` until a leader exists; panics with the logs otherwise.
    pub fn wait_for_leader(&mut self) -> serde_json::Value {
        let masters = self.flag();
        let mut last = None;
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("master {} exited early ({status}){}", i + 1, self.logs());
                }
            }
            let r = run(&[
                "--masters",
                &masters,
                "--timeout",
                "1s",
                "cluster",
                "status",
                "--json",
            ]);
            if r.code == Some(0) {
                let status: serde_json::Value = serde_json::from_str(&r.stdout).expect("status is JSON");
                if !status["leader"].is_null() {
                    return status;
                }
            }
            last = Some(r);
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no leader within 30 s; last status run: {last:?}{}", self.logs());
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
