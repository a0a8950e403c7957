//! SIGKILL of the leader of a real 3-process cluster while clients keep submitting.
//!
//! Checks, from the outside and with the real binary and real sled directories:
//! - the client library rides through the failover: no submit fails, only some are delayed;
//! - every acknowledged task is present on every master afterwards, including on the killed
//!   one once it restarts from its data directory and catches up.
//!
//! The failover cost (the longest gap between acknowledgements across the kill) is printed, never
//! asserted: timing goals live in benchmarks.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use taurus_client::Client;
use taurus_client::v1;

const WAIT: Duration = Duration::from_secs(30);

struct Proc {
    child: Option<Child>,
}

struct Cluster {
    dir: tempfile::TempDir,
    addrs: Vec<String>,
    procs: Vec<Proc>,
}

impl Cluster {
    fn start() -> Cluster {
        // Reserve three free ports (bind, read, release), then start the masters on them.
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
            .collect();
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        drop(listeners);
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs,
            procs: Vec::new(),
        };
        for id in 1..=3 {
            let child = c.spawn(id);
            c.procs.push(Proc { child: Some(child) });
        }
        c
    }

    fn peers(&self) -> String {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&self, id: u64) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("master-{id}.log")))
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_taurus"))
            .args(["master", "start", "--id", &id.to_string()])
            .args(["--listen", &self.addrs[id as usize - 1]])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{id}")))
            .args(["--peers", &self.peers()])
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start taurus master")
    }

    /// SIGKILL: no shutdown hook, no flush, nothing graceful.
    fn kill(&mut self, id: u64) {
        let p = &mut self.procs[id as usize - 1];
        if let Some(mut child) = p.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    fn restart(&mut self, id: u64) {
        let child = self.spawn(id);
        self.procs[id as usize - 1].child = Some(child);
    }

    fn client(&self) -> Client {
        Client::new(self.addrs.clone())
            .expect("client")
            .with_deadline(Duration::from_secs(15))
    }

    fn client_of(&self, id: u64) -> Client {
        Client::new(vec![self.addrs[id as usize - 1].clone()])
            .expect("client")
            .with_deadline(Duration::from_secs(5))
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for id in 1..=3 {
            let text =
                std::fs::read_to_string(self.dir.path().join(format!("master-{id}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- master-{id} (last lines)\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn wait_leader(c: &Cluster, not: Option<u64>) -> u64 {
    let client = c.client();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = client.cluster_status().await
            && s.leader != 0
            && Some(s.leader) != not
        {
            return s.leader;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {WAIT:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every task id `client` lists (stale reads of that one master).
async fn all_ids(client: &Client) -> Option<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client.list_tasks(&[], 1000, &token, true).await.ok()?;
        ids.extend(page.tasks.into_iter().filter_map(|t| t.spec.map(|s| s.id)));
        if page.next_page_token.is_empty() {
            return Some(ids);
        }
        token = page.next_page_token;
    }
}

fn noop(id: String) -> v1::TaskSpec {
    v1::TaskSpec {
        id,
        command: vec!["true".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_under_load_loses_no_acknowledged_task() {
    let mut cluster = Cluster::start();
    let leader = wait_leader(&cluster, None).await;

    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = cluster.client();
        let (acked, failures, stop) = (acked.clone(), failures.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut max_latency = Duration::ZERO;
            // Bounded: at most 100k requests per worker, and the test stops us much earlier.
            for i in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w{w}-{i:06}");
                let started = Instant::now();
                match client.submit(vec![noop(id.clone())]).await {
                    Ok(_) => {
                        max_latency = max_latency.max(started.elapsed());
                        acked.lock().expect("lock").push((id, Instant::now()));
                    }
                    Err(e) => failures.lock().expect("lock").push(format!("{id}: {e}")),
                }
            }
            max_latency
        }));
    }

    // Let some load build up, then SIGKILL the leader.
    let deadline = Instant::now() + WAIT;
    while acked.lock().expect("lock").len() < 200 {
        assert!(Instant::now() < deadline, "no load built up\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = wait_leader(&cluster, Some(leader)).await;
    // Keep submitting until acknowledgements flow again, and a little longer.
    loop {
        let after = acked
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, t)| *t > killed_at)
            .count();
        if after >= 200 {
            break;
        }
        assert!(
            killed_at.elapsed() < WAIT,
            "writes did not resume after the kill\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut max_latency = Duration::ZERO;
    for w in workers {
        max_latency = max_latency.max(w.await.expect("worker"));
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "the client surfaced errors during failover: {failures:?}"
    );
    let acked = acked.lock().expect("lock").clone();
    // The outage clients saw: the longest stretch without any acknowledgement that ends after
    // the kill.
    let mut times: Vec<Instant> = acked.iter().map(|(_, t)| *t).collect();
    times.sort();
    let gap = times
        .windows(2)
        .filter(|w| w[1] > killed_at)
        .map(|w| w[1] - w[0])
        .max()
        .expect("acknowledgements after the kill");
    eprintln!(
        "killed leader {leader}; new leader {new_leader}; longest acknowledgement gap across the kill \
         {gap:?}; slowest submit {max_latency:?}; {} tasks acknowledged",
        acked.len()
    );

    // Restart the killed master from its data directory; it must catch up.
    cluster.restart(leader);
    let expected: BTreeSet<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    for id in 1..=3u64 {
        let client = cluster.client_of(id);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(ids) = all_ids(&client).await {
                let missing: Vec<&String> = expected.difference(&ids).take(5).collect();
                if missing.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "master {id} lacks acknowledged tasks, e.g. {missing:?}\n{}",
                    cluster.logs()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "master {id} does not answer\n{}",
                    cluster.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A linearizable read through the restarted master works too.
    let probe = acked.first().expect("some ack").0.clone();
    cluster
        .client_of(leader)
        .get_task(&probe, false)
        .await
        .expect("linearizable read on the restarted master");
}
