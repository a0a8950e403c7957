//! `taurus dev`: a local cluster of 3 masters and 2 agents as child processes, with a demo.
//!
//! Everything runs with mutual TLS: `taurus dev` makes a CA and one certificate per master,
//! agent and for the user (`DIR/tls/`), and prints the `TAURUS_CA`/`TAURUS_CERT`/`TAURUS_KEY`
//! the user needs to talk to the cluster.

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
use taurus_protocol::tls::TlsFiles;
use taurus_protocol::tls::generate;
use taurus_protocol::tls::generate::Role;
use tokio::process::Child;
use tokio::process::Command;

use crate::Context;
use crate::args::DevArgs;
use crate::cluster::print_status;
use crate::task::print_task_table;

const MASTERS: u16 = 3;
const AGENTS: u16 = 2;
/// Name of the user's client certificate.
const DEV_USER: &str = "dev-user";
/// Tasks each dev agent runs at once: enough for `bench e2e` to measure the masters, not the slots.
const DEV_AGENT_SLOTS: &str = "256";
/// How long the demo waits for its agents to register and its tasks to finish.
const DEMO_WAIT: Duration = Duration::from_secs(60);
/// How long to wait for a leader, and the pause between polls of the cluster status.
const LEADER_WAIT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a master gets to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// One child process: a master or an agent.
struct Proc {
    /// "master 2", "agent-1".
    name: String,
    addr: String,
    /// `http://HOST:PORT` of its HTTP port (metrics, health, status page).
    http: String,
    log: PathBuf,
    child: Child,
    exited: bool,
}

/// The child processes; dropping it kills any that are still running.
struct DevCluster {
    masters: Vec<Proc>,
    agents: Vec<Proc>,
}

/// The TLS files of a dev cluster: one set per master and agent, and the user's.
struct DevTls {
    masters: Vec<TlsFiles>,
    agents: Vec<TlsFiles>,
    user: TlsFiles,
}

impl DevTls {
    /// A fresh CA and certificates in `dir` (replacing those of an earlier run).
    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let master_names: Vec<String> = (1..=MASTERS).map(|i| format!("master-{i}")).collect();
        let agent_names: Vec<String> = (1..=AGENTS).map(|i| format!("agent-{i}")).collect();
        let mut holders: Vec<(Role, &str)> = Vec::new();
        holders.extend(master_names.iter().map(|n| (Role::Master, n.as_str())));
        holders.extend(agent_names.iter().map(|n| (Role::Agent, n.as_str())));
        holders.push((Role::Client, DEV_USER));
        let mut files = generate::write_set(dir, &holders, true)
            .with_context(|| format!("cannot make TLS certificates in {}", dir.display()))?;
        let user = files.pop().context("no user certificate")?;
        let agents = files.split_off(MASTERS as usize);
        Ok(DevTls {
            masters: files,
            agents,
            user,
        })
    }
}

/// `--tls-ca F --tls-cert F --tls-key F`.
fn tls_args(command: &mut Command, files: &TlsFiles) {
    command
        .arg("--tls-ca")
        .arg(&files.ca_file)
        .arg("--tls-cert")
        .arg(&files.cert_file)
        .arg("--tls-key")
        .arg(&files.key_file);
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
    // gRPC ports of the masters, then HTTP ports of the masters and the agents: found at once,
    // so they are distinct.
    let mut free = free_ports(usize::from(MASTERS * 2 + AGENTS))?;
    let http_ports = free.split_off(usize::from(MASTERS));
    let ports = match args.base_port {
        Some(base) => (0..MASTERS)
            .map(|i| base.checked_add(i).filter(|p| *p != 0))
            .collect::<Option<Vec<u16>>>()
            .context("--base-port: ports P..P+2 must be between 1 and 65535")?,
        None => free,
    };
    let (master_http, agent_http) = http_ports.split_at(usize::from(MASTERS));
    let tls = DevTls::create(&dir.join("tls"))?;
    println!(
        "made a CA and certificates in {} (one per master and agent, and yours: {})",
        dir.join("tls").display(),
        tls.user.cert_file.display()
    );
    let mut cluster = DevCluster::start(&dir, &ports, master_http, &tls)?;
    let masters: Vec<String> = cluster.masters.iter().map(|m| m.addr.clone()).collect();
    println!(
        "started {} masters (mutual TLS): {}",
        masters.len(),
        masters.join(", ")
    );
    cluster.start_agents(&dir, &masters, agent_http, &tls)?;
    println!(
        "started {} agents: {}",
        cluster.agents.len(),
        cluster
            .agents
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in cluster.masters.iter().chain(&cluster.agents) {
        let page = if p.name.starts_with("master") {
            format!("status page {}/ ", p.http)
        } else {
            String::new()
        };
        println!("  {:<9} {page}metrics {}/metrics", p.name, p.http);
    }
    println!(
        "data and logs: {}{}",
        dir.display(),
        if temp.is_some() { " (removed on exit)" } else { "" }
    );

    // Ctrl-C is handled from here on, so the masters are always stopped in order.
    let shutdown = crate::master::shutdown_signal();
    tokio::pin!(shutdown);
    let token_file = dir.join("admin.token");
    let outcome = tokio::select! {
        outcome = demo(&mut cluster, &masters, &tls.user, &token_file) => Some(outcome),
        _ = &mut shutdown => None,
    };
    let outcome = match outcome {
        Some(Ok(())) if !args.exit_after_demo => {
            print_usage(&masters, &dir, &tls.user, &token_file);
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
    println!("stopping the agents and masters...");
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
    fn start(dir: &Path, ports: &[u16], http_ports: &[u16], tls: &DevTls) -> anyhow::Result<Self> {
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
            let mut command = child_command(&exe, out, err);
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
                    // Every call needs a token or an agent certificate, as in production.
                    "--auth",
                    "--http-listen",
                    &format!("127.0.0.1:{}", http_ports[i]),
                ])
                .arg("--data-dir")
                .arg(dir.join(format!("master-{id}")));
            tls_args(&mut command, &tls.masters[i]);
            let child = command
                .spawn()
                .with_context(|| format!("cannot start master {id} ({})", exe.display()))?;
            masters.push(Proc {
                name: format!("master {id}"),
                addr: addr.clone(),
                http: format!("http://127.0.0.1:{}", http_ports[i]),
                log,
                child,
                exited: false,
            });
        }
        Ok(DevCluster {
            masters,
            agents: Vec::new(),
        })
    }

    /// Starts the agents, each with its own work directory, pointed at every master.
    fn start_agents(
        &mut self,
        dir: &Path,
        masters: &[String],
        http_ports: &[u16],
        tls: &DevTls,
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the taurus binary")?;
        for i in 1..=AGENTS {
            let name = format!("agent-{i}");
            let log = dir.join(format!("{name}.log"));
            let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let err = out.try_clone()?;
            let mut command = child_command(&exe, out, err);
            command
                .args(["--masters", &masters.join(","), "agent", "start", "--id", &name])
                .args(["--max-tasks", DEV_AGENT_SLOTS])
                .args([
                    "--http-listen",
                    &format!("127.0.0.1:{}", http_ports[usize::from(i) - 1]),
                ])
                .arg("--work-dir")
                .arg(dir.join(&name));
            tls_args(&mut command, &tls.agents[usize::from(i) - 1]);
            let child = command
                .spawn()
                .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
            self.agents.push(Proc {
                name,
                addr: String::new(),
                http: format!("http://127.0.0.1:{}", http_ports[usize::from(i) - 1]),
                log,
                child,
                exited: false,
            });
        }
        Ok(())
    }

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.agents.iter_mut().chain(self.masters.iter_mut())
    }

    /// Fails if a master or an agent has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in self.procs_mut() {
            if let Some(status) = m.child.try_wait()? {
                m.exited = true;
                bail!(
                    "{} exited during start-up ({status}); see {}",
                    m.name,
                    m.log.display()
                );
            }
        }
        Ok(())
    }

    /// Waits until `n` agents are alive.
    async fn wait_for_agents(&mut self, client: &Client, n: usize) -> anyhow::Result<()> {
        let give_up = std::time::Instant::now() + DEMO_WAIT;
        let mut last = String::from("no answer yet");
        while std::time::Instant::now() < give_up {
            self.check_alive()?;
            match client.list_agents(false).await {
                Ok(list) => {
                    let alive = list
                        .agents
                        .iter()
                        .filter(|a| a.state == v1::AgentState::Alive as i32)
                        .count();
                    if alive >= n {
                        return Ok(());
                    }
                    last = format!("{alive} of {n} agents registered");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        bail!("agents did not register within {}s ({last})", DEMO_WAIT.as_secs())
    }

    /// Creates the cluster's first admin token once a leader takes writes; returns its secret.
    async fn bootstrap(&mut self, client: &Client) -> anyhow::Result<String> {
        let mut last_error = String::from("no answer yet");
        let give_up = std::time::Instant::now() + LEADER_WAIT;
        while std::time::Instant::now() < give_up {
            self.check_alive()?;
            match client.acl_bootstrap("dev-admin").await {
                Ok(token) => return Ok(token.secret),
                // Refused for good (a retry after a lost answer, or a reused --dir).
                Err(e) if e.to_string().contains("already bootstrapped") => {
                    bail!("cannot bootstrap access control: {e}; start with a fresh --dir")
                }
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        bail!(
            "could not bootstrap access control within {}s ({last_error})",
            LEADER_WAIT.as_secs()
        )
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
                    for m in self.procs_mut().filter(|m| !m.exited) {
                        if let Ok(Some(status)) = m.child.try_wait() {
                            m.exited = true;
                            eprintln!("note: {} exited ({status}); see {}", m.name, m.log.display());
                        }
                    }
                }
            }
        }
    }

    /// Stops the agents (they kill their tasks and flush their reports), then the masters.
    async fn stop(&mut self) {
        stop_all(&mut self.agents).await;
        stop_all(&mut self.masters).await;
    }
}

/// SIGTERM to every process, then SIGKILL to those still running after the grace period.
async fn stop_all(procs: &mut [Proc]) {
    for m in procs.iter_mut() {
        if let (Ok(None), Some(pid)) = (m.child.try_wait(), m.child.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is involved.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for m in procs.iter_mut() {
        if tokio::time::timeout(GRACE, m.child.wait()).await.is_err() {
            eprintln!("{} did not stop within {}s; killing it", m.name, GRACE.as_secs());
            let _ = m.child.kill().await;
        }
    }
}

/// A child process of `taurus dev`, logging to `out`/`err`.
fn child_command(exe: &Path, out: File, err: File) -> Command {
    let mut command = Command::new(exe);
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: Ctrl-C in the terminal reaches only `taurus dev`, which then stops
        // the agents and masters in order.
        .process_group(0)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent: the child gets
    // SIGTERM if `taurus dev` dies without stopping it (even by SIGKILL).
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
}

async fn demo(
    cluster: &mut DevCluster,
    masters: &[String],
    tls: &TlsFiles,
    token_file: &Path,
) -> anyhow::Result<()> {
    let client = Client::with_tls(masters.to_vec(), tls)?
        .with_deadline(Duration::from_secs(1))
        .with_token("")?;
    let secret = cluster.bootstrap(&client).await?;
    write_secret(token_file, &secret)?;
    println!(
        "bootstrapped access control: the admin token is in {}",
        token_file.display()
    );
    let client = client.with_token(&secret)?;
    let status = cluster.wait_for_leader(&client).await?;
    println!("master {} is the leader (term {})", status.leader, status.term);

    cluster.wait_for_agents(&client, AGENTS as usize).await?;
    println!("{AGENTS} agents registered");

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
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let submitted = client.submit(tasks).await?;
    println!(
        "submitted {} demo tasks (deploy waits for build) in log entry {}; waiting for them to run...",
        submitted.results.len(),
        submitted.log_index
    );
    let mut finished = Vec::new();
    for id in &ids {
        let task = tokio::time::timeout(DEMO_WAIT, client.wait_task(id))
            .await
            .with_context(|| format!("task {id} did not finish within {}s", DEMO_WAIT.as_secs()))??;
        finished.push(task);
    }

    println!();
    print_status(&client.cluster_status().await?);
    println!();
    print_task_table(&finished);
    for t in &finished {
        let (Some(spec), Some(attempt)) = (&t.spec, t.attempts.last()) else {
            continue;
        };
        println!(
            "  {:<8} ran on {} (attempt {}), exit {}: {}",
            spec.name,
            attempt.agent_id,
            attempt.number,
            attempt
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            attempt.stdout_tail.trim_end()
        );
    }
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("cannot write {}", path.display()))
}

fn print_usage(masters: &[String], dir: &Path, tls: &TlsFiles, token_file: &Path) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "taurus".into());
    println!(
        "
The cluster is running. In another terminal (taurus is {exe}):

  export TAURUS_MASTERS={}
  export TAURUS_CA={} TAURUS_CERT={} TAURUS_KEY={}
  export TAURUS_TOKEN=$(cat {})
  taurus task submit --name hi -- echo hi     # prints the task id
  taurus task wait ID && taurus task logs ID
  taurus task list
  taurus task get ID                           # every attempt, exit code, agent
  taurus agent list
  taurus cluster status
  taurus bench e2e --tasks 20000               # no-op tasks through the agents

Logs: {}/master-N.log and agent-N.log. Press Ctrl-C to stop the cluster.",
        masters.join(","),
        tls.ca_file.display(),
        tls.cert_file.display(),
        tls.key_file.display(),
        token_file.display(),
        dir.display()
    );
}
