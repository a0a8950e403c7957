//! `taurus dev`: a local 3-master cluster as child processes, with a demo.

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use anyhow::bail;
use taurus_client::Client;
use taurus_client::v1;
use tokio::process::Child;
use tokio::process::Command;

use crate::Context;
use crate::args::DevArgs;
use crate::cluster::print_status;
use crate::task::print_task_table;

const MASTERS: u16 = 3;
/// How long to wait for a leader, and the pause between polls of the cluster status.
const LEADER_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a master gets to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

struct Master {
    id: u16,
    addr: String,
    log: PathBuf,
    child: Child,
    exited: bool,
}

/// The child masters; dropping it kills any that are still running.
struct DevCluster {
    masters: Vec<Master>,
}

pub async fn run(args: DevArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    let (dir, temp) = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("taurus-dev-")
                .tempdir()
                .context("cannot create a temp dir")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let ports = match args.base_port {
        Some(base) => (0..MASTERS)
            .map(|i| base.checked_add(i).filter(|p| *p != 0))
            .collect::<Option<Vec<u16>>>()
            .context("--base-port: ports P..P+2 must be between 1 and 65535")?,
        None => free_ports(MASTERS as usize)?,
    };
    let mut cluster = DevCluster::start(&dir, &ports)?;
    let masters: Vec<String> = cluster.masters.iter().map(|m| m.addr.clone()).collect();
    println!("started {} masters: {}", masters.len(), masters.join(", "));
    println!(
        "data and logs: {}{}",
        dir.display(),
        if temp.is_some() { " (removed on exit)" } else { "" }
    );

    // Ctrl-C is handled from here on, so the masters are always stopped in order.
    let shutdown = crate::master::shutdown_signal();
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        outcome = demo(&mut cluster, &masters) => Some(outcome),
        _ = &mut shutdown => None,
    };
    let outcome = match outcome {
        Some(Ok(())) if !args.exit_after_demo => {
            print_usage(&masters, &dir);
            cluster.wait_for_shutdown(shutdown).await;
            Ok(())
        }
        Some(outcome) => outcome,
        None => {
            println!("interrupted");
            cluster.stop().await;
            return Ok(ExitCode::from(130));
        }
    };
    println!("stopping the masters...");
    cluster.stop().await;
    match (outcome, temp) {
        (Ok(()), _) => Ok(ExitCode::SUCCESS),
        (Err(e), Some(temp)) => {
            let kept = temp.keep();
            Err(anyhow::anyhow!(
                "{e:#} (data and logs kept in {})",
                kept.display()
            ))
        }
        (Err(e), None) => Err(e),
    }
}

/// Ports the OS reports free right now (all bound at once, so they are distinct).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl DevCluster {
    fn start(dir: &Path, ports: &[u16]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the taurus binary")?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut masters = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u16 + 1;
            let log = dir.join(format!("master-{id}.log"));
            let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let err = out.try_clone()?;
            let mut command = Command::new(&exe);
            command
                .args([
                    "master",
                    "start",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    addr,
                    "--peers",
                    &peers,
                ])
                .arg("--data-dir")
                .arg(dir.join(format!("master-{id}")))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Own process group: Ctrl-C in the terminal reaches only `taurus dev`, which then
                // stops the masters in order.
                .process_group(0)
                .kill_on_drop(true);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent: the
            // master gets SIGTERM if `taurus dev` dies without stopping it (even by SIGKILL).
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .with_context(|| format!("cannot start master {id} ({})", exe.display()))?;
            masters.push(Master {
                id,
                addr: addr.clone(),
                log,
                child,
                exited: false,
            });
        }
        Ok(DevCluster { masters })
    }

    /// Fails if a master has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.masters {
            if let Some(status) = m.child.try_wait()? {
                m.exited = true;
                bail!(
                    "master {} exited during start-up ({status}); see {}",
                    m.id,
                    m.log.display()
                );
            }
        }
        Ok(())
    }

    async fn wait_for_leader(&mut self, client: &Client) -> anyhow::Result<v1::ClusterStatus> {
        let mut last_error = String::from("no answer yet");
        let give_up = std::time::Instant::now() + LEADER_WAIT;
        while std::time::Instant::now() < give_up {
            self.check_alive()?;
            match client.cluster_status().await {
                Ok(status) if status.leader != 0 => return Ok(status),
                Ok(_) => last_error = "the masters answer but have no leader yet".into(),
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let dir = self.masters[0]
            .log
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        bail!(
            "no leader after {}s ({last_error}); see {dir}/master-N.log",
            LEADER_WAIT.as_secs()
        )
    }

    /// Waits for Ctrl-C or SIGTERM, noting masters that exit meanwhile (someone may be
    /// testing failover by killing one).
    async fn wait_for_shutdown(&mut self, mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>) {
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    for m in self.masters.iter_mut().filter(|m| !m.exited) {
                        if let Ok(Some(status)) = m.child.try_wait() {
                            m.exited = true;
                            eprintln!("note: master {} exited ({status}); see {}", m.id, m.log.display());
                        }
                    }
                }
            }
        }
    }

    /// SIGTERM to every master, then SIGKILL to those still running after the grace period.
    async fn stop(&mut self) {
        for m in &mut self.masters {
            if let (Ok(None), Some(pid)) = (m.child.try_wait(), m.child.id()) {
                // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
        }
        for m in &mut self.masters {
            match tokio::time::timeout(GRACE, m.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!(
                        "master {} did not stop within {}s; killing it",
                        m.id,
                        GRACE.as_secs()
                    );
                    let _ = m.child.kill().await;
                }
            }
        }
    }
}

async fn demo(cluster: &mut DevCluster, masters: &[String]) -> anyhow::Result<()> {
    let client = Client::new(masters.to_vec())?.with_deadline(Duration::from_secs(1));
    let status = cluster.wait_for_leader(&client).await?;
    println!("master {} is the leader (term {})", status.leader, status.term);

    let client = client.with_deadline(Duration::from_secs(10));
    let spec = |name: &str, command: &[&str], priority: i32| v1::TaskSpec {
        name: name.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        priority,
        ..Default::default()
    };
    let mut tasks = vec![
        spec("hello", &["echo", "hello from taurus"], 5),
        spec("build", &["sleep", "2"], 0),
        spec("deploy", &["echo", "deployed"], 0),
        spec("cleanup", &["sh", "-c", "echo low priority"], -1),
    ];
    tasks[1].labels.insert("stage".into(), "build".into());
    taurus_client::fill_missing_ids(&mut tasks);
    tasks[2].depends_on = vec![tasks[1].id.clone()];
    let submitted = client.submit(tasks).await?;
    println!(
        "submitted {} demo tasks (deploy waits for build) in log entry {}",
        submitted.results.len(),
        submitted.log_index
    );

    println!();
    print_status(&client.cluster_status().await?);
    println!();
    let list = client.list_tasks(&[], 100, "", false).await?;
    print_task_table(&list.tasks);
    Ok(())
}

fn print_usage(masters: &[String], dir: &Path) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "taurus".into());
    println!(
        "
The cluster is running. In another terminal (taurus is {exe}):

  export TAURUS_MASTERS={}
  taurus task submit --name hi -- echo hi     # prints the task id
  taurus task list
  taurus task get ID
  taurus task watch ID
  taurus cluster status
  taurus bench submit --tasks 10000 --concurrency 32

Logs: {}/master-N.log. Press Ctrl-C to stop the cluster.",
        masters.join(","),
        dir.display()
    );
}
