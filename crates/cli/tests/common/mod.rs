//! Helpers shared by the CLI tests: running the real `taurus` binary and local masters.

#![allow(dead_code)] // each test file uses a different part

use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use taurus_client::Client;

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

/// An address nothing accepts connections on for as long as the returned socket lives: its port
/// is bound (no other process can take it) but not listening, so connecting is refused.
pub fn refused_addr() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind loopback");
    let addr = socket.local_addr().expect("local addr").to_string();
    (socket, addr)
}

/// The address a child process logged as `FIELD=HOST:PORT` on the last complete line of its
/// log at `path` that contains `message`: how a test learns a port that the process bound
/// itself (`--http-listen 127.0.0.1:0`), with no window in which another test can take it.
/// Polls for at most `limit`; panics with the log's tail otherwise.
pub fn logged_addr(path: &Path, message: &str, field: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let prefix = format!("{field}=");
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // A line still being written has no newline yet: only complete lines count.
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        let found = complete
            .lines()
            .rev()
            .filter(|l| l.contains(message))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix(prefix.as_str())));
        if let Some(addr) = found {
            return addr.trim_matches('"').to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {message:?} line with {prefix}ADDR in {} within {limit:?}; log tail:\n{}",
            path.display(),
            log_tail(path, 20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Master settings for tests of agents and scheduling: agents are declared down after 3.5 s of
/// silence, fence themselves after 1.5 s without an acknowledged heartbeat, and the scheduler
/// runs every 50 ms.
pub const FAST_SCHEDULER_TOML: &str = concat!(
    "[scheduler]\n",
    "agent_ttl = \"3500ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "interval = \"50ms\"\n",
);

/// The agent flags that go with [`FAST_SCHEDULER_TOML`]. They are enough by themselves (the
/// default `rpc_timeout` is a third of a lease this short); [`Agents`] also gives each agent
/// [`FAST_AGENT_TOML`] with `--config`, for settings that have no flag.
pub const FAST_AGENT_FLAGS: [&str; 6] = [
    "--heartbeat-interval",
    "300ms",
    "--lease-timeout",
    "1500ms",
    "--max-tasks",
    "8",
];

/// The agent configuration file that goes with [`FAST_AGENT_FLAGS`]: the masters' agent_ttl
/// (for the agent's check of its lease against it), and a longer `rpc_timeout` than the default
/// 500 ms, for slow debug builds under load.
pub const FAST_AGENT_TOML: &str = concat!(
    "heartbeat_interval = \"300ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "masters_agent_ttl = \"3500ms\"\n",
    "rpc_timeout = \"1s\"\n",
    "connect_timeout = \"500ms\"\n",
    "max_tasks = 8\n",
);

/// Polls `probe` every 20 ms until it returns `Ok`, failing the test after `limit` with what
/// was awaited and the last reason it was not there yet.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits up to `limit` for a leader other than `not`, as `client` sees it; returns its id.
pub async fn wait_leader(client: &Client, not: Option<u64>, limit: Duration) -> u64 {
    eventually("a leader", limit, async || match client.cluster_status().await {
        Ok(s) if s.leader != 0 && Some(s.leader) != not => Ok(s.leader),
        Ok(s) => Err(format!("leader {}", s.leader)),
        Err(e) => Err(e.to_string()),
    })
    .await
}

/// A test's temporary directory, named `PREFIX...`. Dropped while the test panics, it prints the
/// tail of every file at its top (logs, observation and pid files; the data and work
/// directories are below it) and is kept for a look.
pub struct TestDir {
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        TestDir {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|f| f.is_file());
        files.sort();
        let mut out = String::new();
        for f in files {
            let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
            out.push_str(&format!(
                "\n--- {name} (last 40 lines) ---\n{}\n",
                log_tail(&f, 40)
            ));
        }
        eprintln!("{out}");
        if let Some(dir) = self.dir.take() {
            eprintln!("test directory kept: {}", dir.keep().display());
        }
    }
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether process `pid` still exists and is not a zombie (a zombie runs nothing; it only waits
/// for a parent, or for an init that may never reap it in a container).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may contain anything, so look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Three `taurus master start` processes on free ports, killed (SIGKILL) when dropped. Each
/// master logs to `master-N.log` and keeps its data in `master-N/` of its directory.
pub struct Masters {
    children: Vec<Option<Child>>,
    pub addrs: Vec<String>,
    logs: Vec<PathBuf>,
    dir: PathBuf,
    config: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl Masters {
    /// Masters with default settings in a temporary directory of their own.
    pub fn start() -> Self {
        let temp = tempfile::tempdir().unwrap();
        Self::launch(temp.path().to_path_buf(), None, Some(temp))
    }

    /// Masters in `dir` (which the caller owns), all started with `--config` of a file holding
    /// `config_toml`.
    pub fn start_in(dir: &Path, config_toml: &str) -> Self {
        let config = dir.join("master.toml");
        std::fs::write(&config, config_toml).expect("write the master config");
        Self::launch(dir.to_path_buf(), Some(config), None)
    }

    fn launch(dir: PathBuf, config: Option<PathBuf>, temp: Option<tempfile::TempDir>) -> Self {
        let mut masters = Self::prepare(dir, config, temp);
        for id in 1..=3 {
            let child = masters.spawn(id);
            masters.children.push(Some(child));
        }
        masters
    }

    /// Masters on free ports, not started yet.
    fn prepare(dir: PathBuf, config: Option<PathBuf>, temp: Option<tempfile::TempDir>) -> Self {
        let addrs: Vec<String> = free_ports(3)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let logs = (1..=3).map(|id| dir.join(format!("master-{id}.log"))).collect();
        Masters {
            children: Vec::new(),
            addrs,
            logs,
            dir,
            config,
            _temp: temp,
        }
    }

    /// Like [`Masters::start_in`], but each master's data dir is first seeded from the backup
    /// `snapshot` with `taurus master restore` (which must succeed); returns the masters and
    /// the restore runs.
    pub fn restore_in(dir: &Path, config_toml: &str, snapshot: &Path) -> (Self, Vec<Run>) {
        let config = dir.join("master.toml");
        std::fs::write(&config, config_toml).expect("write the master config");
        let mut masters = Self::prepare(dir.to_path_buf(), Some(config.clone()), None);
        let mut runs = Vec::new();
        for id in 1..=3u64 {
            let data_dir = masters.data_dir(id);
            let r = run(&[
                "master",
                "restore",
                "--snapshot",
                snapshot.to_str().expect("utf-8 path"),
                "--config",
                config.to_str().expect("utf-8 path"),
                "--id",
                &id.to_string(),
                "--listen",
                &masters.addrs[id as usize - 1],
                "--peers",
                &masters.peers(),
                "--data-dir",
                data_dir.to_str().expect("utf-8 path"),
            ]);
            assert_eq!(r.code, Some(0), "master restore of master {id}: {r:?}");
            runs.push(r);
        }
        for id in 1..=3 {
            let child = masters.spawn(id);
            masters.children.push(Some(child));
        }
        (masters, runs)
    }

    /// The data directory of master `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("master-{id}"))
    }

    /// `--peers 1=A,2=B,3=C`.
    pub fn peers(&self) -> String {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&self, id: u64) -> Child {
        let peers = self.peers();
        // Appending: a restarted master's log follows its previous life's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[id as usize - 1])
            .expect("master log file");
        let mut cmd = taurus();
        cmd.args(["master", "start", "--id", &id.to_string()])
            .args(["--listen", &self.addrs[id as usize - 1]])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(self.data_dir(id));
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("master starts")
    }

    /// A client of every master, with a 15 s deadline per call.
    pub fn client(&self) -> Client {
        Client::new(self.addrs.clone())
            .expect("client")
            .with_deadline(Duration::from_secs(15))
    }

    /// `--masters A,B,C`.
    pub fn flag(&self) -> String {
        self.addrs.join(",")
    }

    /// The address of master `id` (1-based).
    pub fn addr(&self, id: u64) -> &str {
        &self.addrs[id as usize - 1]
    }

    /// SIGKILL master `id` and reap it: no shutdown hook, no flush.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children[id as usize - 1].take() {
            child.kill().expect("SIGKILL a master");
            child.wait().expect("reap a master");
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to master `id`, which must be running.
    pub fn signal(&self, id: u64, signal: i32) {
        let child = self.children[id as usize - 1]
            .as_ref()
            .unwrap_or_else(|| panic!("master {id} is not running"));
        send_signal(child, signal);
    }

    /// Waits up to `limit` for master `id` to exit by itself, reaps it and returns its status.
    pub fn wait_exit(&mut self, id: u64, limit: Duration) -> std::process::ExitStatus {
        let slot = &mut self.children[id as usize - 1];
        let status = wait_child_exit(slot.as_mut().expect("master running"), limit)
            .unwrap_or_else(|| panic!("master {id} did not exit within {limit:?}"));
        *slot = None;
        status
    }

    /// Starts master `id` again from its data directory (after [`Masters::kill`]).
    pub fn restart(&mut self, id: u64) {
        assert!(self.children[id as usize - 1].is_none(), "master {id} is running");
        let child = self.spawn(id);
        self.children[id as usize - 1] = Some(child);
    }

    /// An error naming the first master that exited by itself.
    pub fn check_running(&mut self) -> Result<(), String> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(c) = c
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!("master {} exited ({status})", i + 1));
            }
        }
        Ok(())
    }

    /// The tail of every master's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, path) in self.logs.iter().enumerate() {
            let tail = log_tail(path, 15);
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
            if let Err(e) = self.check_running() {
                panic!("{e} early{}", self.logs());
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
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `taurus agent start` processes, killed (SIGKILL) when dropped. Agent `ID` logs to `ID.log`
/// and works in `ID/` of the directory; `agent.toml` there holds [`FAST_AGENT_TOML`].
pub struct Agents {
    dir: PathBuf,
    procs: Vec<AgentProc>,
}

struct AgentProc {
    id: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Agents {
    pub fn new(dir: &Path) -> Self {
        Agents {
            dir: dir.to_path_buf(),
            procs: Vec::new(),
        }
    }

    /// Starts `taurus --masters MASTERS agent start --id ID --work-dir DIR/ID` with
    /// `--config DIR/agent.toml`, [`FAST_AGENT_FLAGS`] and then `extra`.
    pub fn start(&mut self, id: &str, masters: &str, extra: &[&str]) {
        let config = self.dir.join("agent.toml");
        if !config.exists() {
            std::fs::write(&config, FAST_AGENT_TOML).expect("write the agent config");
        }
        assert!(
            !self.procs.iter().any(|p| p.id == id && p.child.is_some()),
            "agent {id} is running"
        );
        let log_path = self.dir.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("agent log file");
        let child = taurus()
            .args(["--masters", masters, "agent", "start", "--id", id])
            .arg("--work-dir")
            .arg(self.work_dir(id))
            .arg("--config")
            .arg(&config)
            .args(FAST_AGENT_FLAGS)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        self.procs.retain(|p| p.id != id);
        self.procs.push(AgentProc {
            id: id.to_string(),
            child: Some(child),
            log: log_path,
        });
    }

    /// Where agent `id` runs its tasks.
    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The HTTP address agent `id` serves on, as its log says (start it with
    /// `--http-listen 127.0.0.1:0`); waits up to 30 s for the line.
    pub fn http_addr(&self, id: &str) -> String {
        logged_addr(
            &self.dir.join(format!("{id}.log")),
            "serving /metrics and /healthz",
            "http",
            Duration::from_secs(30),
        )
    }

    /// The process id of agent `id`, while it runs.
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.child.as_ref())
            .map(|c| c.id())
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to agent `id`, which must be running.
    pub fn signal(&self, id: &str, signal: i32) {
        let pid = self
            .pid(id)
            .unwrap_or_else(|| panic!("agent {id} is not running"));
        let pid = i32::try_from(pid).expect("a pid fits in pid_t");
        // SAFETY: kill(2) of our own child, which has not been reaped (it is in `procs`).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `limit` for agent `id` to exit by itself, reaps it and returns its status.
    pub fn wait_exit(&mut self, id: &str, limit: Duration) -> std::process::ExitStatus {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no agent {id}"));
        let status = wait_child_exit(p.child.as_mut().expect("agent running"), limit)
            .unwrap_or_else(|| panic!("agent {id} did not exit within {limit:?}"));
        p.child = None;
        status
    }

    /// SIGKILL agent `id` and reap it.
    pub fn kill(&mut self, id: &str) {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no agent {id}"));
        if let Some(mut child) = p.child.take() {
            child.kill().expect("SIGKILL an agent");
            child.wait().expect("reap an agent");
        }
    }

    /// An error naming the first agent that exited by itself.
    pub fn check_running(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Some(c) = &mut p.child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!("agent {} exited ({status})", p.id));
            }
        }
        Ok(())
    }

    /// The last `n` lines of every agent's log.
    pub fn logs(&self, n: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            out.push_str(&format!("\n--- {} log (tail) ---\n{}", p.id, log_tail(&p.log, n)));
        }
        out
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().filter_map(|p| p.child.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `signal` to `child`, which has not been reaped.
fn send_signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("a pid fits in pid_t");
    // SAFETY: kill(2) of our own child, which has not been reaped.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `child` every 20 ms until it exits (its status) or `limit` passes (`None`).
fn wait_child_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
