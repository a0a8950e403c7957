//! The cluster under test: real `taurus` processes, one per network namespace
//! ([`taurus_jepsen::net`]), with the operations the nemeses need (kill, pause, restart,
//! partition, clock offset, rejoin under a new id). Dropping it kills every process and removes
//! every namespace and data directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;

use anyhow::Context as _;
use anyhow::bail;
use taurus_jepsen::net::Grudge;
use taurus_jepsen::net::Net;
use taurus_jepsen::workload::ClientSecurity;
use taurus_protocol::tls::TlsFiles;

/// Port every master listens on (each master has its own address).
pub const MASTER_PORT: u16 = 7000;

const SCHEDULER_TOML: &str = concat!(
    "[scheduler]\n",
    "agent_ttl = \"3500ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "interval = \"50ms\"\n",
);

const AGENT_TOML: &str = concat!(
    "heartbeat_interval = \"300ms\"\n",
    "lease_timeout = \"1500ms\"\n",
    "masters_agent_ttl = \"3500ms\"\n",
    "rpc_timeout = \"1s\"\n",
    "connect_timeout = \"500ms\"\n",
);

/// One `taurus` process; SIGKILLed and reaped on drop.
pub struct Node {
    pub name: String,
    /// Index of its host in [`Net::hosts`].
    pub host: usize,
    pub child: Option<Child>,
    pub paused: bool,
    /// Set when the harness killed it (so exiting is not a crash).
    pub killed: bool,
}

impl Node {
    fn new(name: String, host: usize) -> Node {
        Node {
            name,
            host,
            child: None,
            paused: false,
            killed: false,
        }
    }

    pub fn signal(&mut self, sig: i32) -> anyhow::Result<()> {
        let Some(c) = &self.child else {
            bail!("{} is not running", self.name);
        };
        let pid = i32::try_from(c.id())?;
        // SAFETY: kill(2) of our own child, not reaped yet (we hold its Child).
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) {
        if self.paused {
            let _ = self.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
        self.killed = true;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process ended by itself (the harness did not kill it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master: its process, Raft id (new after each rejoin) and files.
pub struct Master {
    pub node: Node,
    pub id: u64,
    pub addr: String,
    /// Removed from the membership and not (yet) added back.
    pub removed: bool,
}

/// What to start.
pub struct Setup {
    pub taurus: PathBuf,
    pub masters: usize,
    pub agents: usize,
    /// Extra environment of every master / agent (an injected bug).
    pub master_env: Vec<(String, String)>,
    pub agent_env: Vec<(String, String)>,
    /// Each agent's `--max-tasks`.
    pub agent_max_tasks: u32,
    /// Leave the data directories behind.
    pub keep_data: bool,
    /// Run secured (`--secure`): mutual TLS everywhere and authentication on.
    pub secure: bool,
}

/// The certificates of a secured run (`--secure`), made in `<dir>/tls` by one CA: one per
/// master (its IP as a SAN), one per agent (CN = the agent's id), and the harness's client.
pub struct Pki {
    pub masters: Vec<TlsFiles>,
    pub agents: Vec<TlsFiles>,
    pub client: TlsFiles,
}

impl Pki {
    fn create(dir: &Path, master_ips: &[String], agents: &[String]) -> anyhow::Result<Pki> {
        use taurus_protocol::tls::generate;
        std::fs::create_dir_all(dir)?;
        let ca = generate::ca("taurus-jepsen-ca", 30)?;
        let (ca_file, _) = generate::write_pair(dir, "ca", &ca, false)?;
        let leaf = |role: generate::Role, name: &str, sans: &[String]| -> anyhow::Result<TlsFiles> {
            let pem = generate::leaf(&ca, role, name, sans, 30)?;
            let (cert_file, key_file) = generate::write_pair(dir, &generate::stem(role, name), &pem, false)?;
            Ok(TlsFiles {
                ca_file: ca_file.clone(),
                cert_file,
                key_file,
            })
        };
        let masters = master_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                leaf(
                    generate::Role::Master,
                    &format!("m{}", i + 1),
                    std::slice::from_ref(ip),
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let agents = agents
            .iter()
            .map(|a| leaf(generate::Role::Agent, a, &[]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let client = leaf(generate::Role::Client, "jepsen", &[])?;
        Ok(Pki {
            masters,
            agents,
            client,
        })
    }
}

/// `--tls-ca F --tls-cert F --tls-key F`.
fn tls_args(cmd: &mut Command, files: &TlsFiles) {
    cmd.arg("--tls-ca")
        .arg(&files.ca_file)
        .arg("--tls-cert")
        .arg(&files.cert_file)
        .arg("--tls-key")
        .arg(&files.key_file);
}

pub struct Cluster {
    taurus: PathBuf,
    pub dir: PathBuf,
    pub net: Net,
    master_env: Vec<(String, String)>,
    agent_env: Vec<(String, String)>,
    agent_max_tasks: u32,
    pub masters: Vec<Master>,
    pub agents: Vec<Node>,
    next_id: u64,
    /// The partition among hosts now in force.
    pub grudge: Grudge,
    /// Agents cut off from every master (by agent index).
    pub cut_agents: BTreeSet<usize>,
    /// Leave the sled and work directories behind (`--keep-data`).
    keep_data: bool,
    /// Certificates of a secured run; `None`: plain and `--insecure`.
    pub pki: Option<Pki>,
    /// The harness's credentials once the ACL is bootstrapped (secured runs).
    pub security: Option<ClientSecurity>,
}

impl Drop for Cluster {
    /// Kills every node before the namespaces go (field drop order), and removes the data
    /// directories unless asked to keep them.
    fn drop(&mut self) {
        for m in &mut self.masters {
            m.node.kill();
        }
        for a in &mut self.agents {
            a.kill();
        }
        if !self.keep_data {
            self.remove_data();
        }
    }
}

impl Cluster {
    /// Creates the hosts and starts the masters and agents of `setup` in `dir`.
    pub fn start(setup: Setup, dir: &Path) -> anyhow::Result<Cluster> {
        let Setup {
            taurus,
            masters: n_masters,
            agents: n_agents,
            master_env,
            agent_env,
            agent_max_tasks,
            keep_data,
            secure,
        } = setup;
        let names: Vec<String> = (1..=n_masters)
            .map(|i| format!("m{i}"))
            .chain((1..=n_agents).map(|a| format!("a{a}")))
            .collect();
        let net = Net::create(&names)?;
        std::fs::write(dir.join("master.toml"), SCHEDULER_TOML)?;
        std::fs::write(dir.join("agent.toml"), AGENT_TOML)?;
        let masters = (0..n_masters)
            .map(|i| Master {
                node: Node::new(format!("m{}", i + 1), i),
                id: i as u64 + 1,
                addr: format!("{}:{MASTER_PORT}", net.hosts[i].ip),
                removed: false,
            })
            .collect();
        let agents: Vec<Node> = (0..n_agents)
            .map(|a| Node::new(format!("a{}", a + 1), n_masters + a))
            .collect();
        let pki = if secure {
            let ips: Vec<String> = (0..n_masters).map(|i| net.hosts[i].ip.to_string()).collect();
            let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
            Some(Pki::create(&dir.join("tls"), &ips, &names)?)
        } else {
            None
        };
        let mut c = Cluster {
            taurus,
            dir: dir.to_path_buf(),
            net,
            master_env,
            agent_env,
            agent_max_tasks,
            masters,
            agents,
            next_id: n_masters as u64 + 1,
            grudge: Grudge::new(),
            cut_agents: BTreeSet::new(),
            keep_data,
            pki,
            security: None,
        };
        for i in 0..n_masters {
            write_clock(&c.clock_file(i), 0)?;
            c.start_master(i)?;
        }
        for a in 0..n_agents {
            c.start_agent(a)?;
        }
        Ok(c)
    }

    /// A client of `masters` as the harness: over TLS with its token in a secured run.
    pub fn client(&self, masters: Vec<String>) -> anyhow::Result<taurus_client::Client> {
        if self.pki.is_some() && self.security.is_none() {
            bail!("a secured cluster's client before the ACL was bootstrapped");
        }
        Ok(taurus_jepsen::workload::connect(masters, self.security.as_ref())?)
    }

    /// Secured runs: creates the first admin token (bounded wait for a leader) and keeps it as
    /// the harness's credentials. Plain runs: nothing.
    pub async fn bootstrap(cluster: &std::sync::Mutex<Cluster>) -> anyhow::Result<()> {
        let (addrs, tls) = {
            let c = cluster.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &c.pki {
                Some(pki) => (c.master_addrs(), pki.client.clone()),
                None => return Ok(()),
            }
        };
        let anon = taurus_client::Client::with_tls(addrs, &tls)?
            .with_token("")?
            .with_deadline(std::time::Duration::from_secs(2));
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let token = loop {
            match anon.acl_bootstrap("jepsen").await {
                Ok(t) => break t.secret,
                Err(e) if std::time::Instant::now() > give_up => {
                    bail!("could not bootstrap the ACL within 30 s: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        let mut c = cluster.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.security = Some(ClientSecurity { tls, token });
        Ok(())
    }

    pub fn master_addrs(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr.clone()).collect()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{}-data", i + 1))
    }

    pub fn clock_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("m{}.clock", i + 1))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Index of the master with Raft id `id`.
    pub fn master_by_id(&self, id: u64) -> Option<usize> {
        self.masters.iter().position(|m| m.id == id)
    }

    fn command(&self, host: usize, log: &str) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(log))?;
        let mut cmd = Command::new(&self.taurus);
        for (key, _) in std::env::vars() {
            if key.starts_with("TAURUS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.net.enter(host, &mut cmd)?;
        Ok(cmd)
    }

    /// Starts master `i` under its current id.
    pub fn start_master(&mut self, i: usize) -> anyhow::Result<()> {
        let peers = self
            .masters
            .iter()
            .filter(|m| !m.removed || m.id == self.masters[i].id)
            .map(|m| format!("{}={}", m.id, m.addr))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.masters[i];
        let mut cmd = self.command(m.node.host, &m.node.name)?;
        cmd.args(["master", "start", "--id", &m.id.to_string()])
            .args(["--listen", &m.addr]);
        match &self.pki {
            // A node keeps its certificate across wipes and new ids: it names the host.
            Some(pki) => {
                tls_args(&mut cmd, &pki.masters[i]);
                cmd.arg("--auth");
            }
            // The test hosts' addresses are not loopback: a plain run must say --insecure.
            None => {
                cmd.arg("--insecure");
            }
        }
        cmd.args(["--peers", &peers])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--config")
            .arg(self.dir.join("master.toml"))
            .env("TAURUS_CLOCK_OFFSET_FILE", self.clock_file(i));
        cmd.envs(self.master_env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().context("starting a master")?;
        let m = &mut self.masters[i];
        m.node.child = Some(child);
        m.node.killed = false;
        Ok(())
    }

    /// Kills master `i`, deletes its data and starts it empty under a new id (it then waits to
    /// be added with `add_master`): the documented way to replace a master's lost disk.
    pub fn wipe_and_start_new(&mut self, i: usize) -> anyhow::Result<u64> {
        self.masters[i].node.kill();
        let data = self.data_dir(i);
        if data.exists() {
            std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.masters[i].id = id;
        self.masters[i].removed = true;
        self.start_master(i)?;
        Ok(id)
    }

    pub fn start_agent(&mut self, a: usize) -> anyhow::Result<()> {
        let masters = self.master_addrs().join(",");
        let node = &self.agents[a];
        let mut cmd = self.command(node.host, &node.name)?;
        cmd.args(["--masters", &masters, "agent", "start", "--id", &node.name])
            .arg("--work-dir")
            .arg(self.dir.join(&node.name))
            .arg("--config")
            .arg(self.dir.join("agent.toml"))
            .args(["--max-tasks", &self.agent_max_tasks.to_string()]);
        match &self.pki {
            Some(pki) => tls_args(&mut cmd, &pki.agents[a]),
            None => {
                cmd.arg("--insecure");
            }
        }
        cmd.envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().context("starting an agent")?;
        self.agents[a].child = Some(child);
        self.agents[a].killed = false;
        Ok(())
    }

    /// Host indexes of every master.
    pub fn master_hosts(&self) -> Vec<usize> {
        self.masters.iter().map(|m| m.node.host).collect()
    }

    /// Applies a partition among masters (by master index), replacing the previous one, and
    /// keeps cut-off agents cut off.
    pub fn partition(&mut self, grudge: Grudge) -> anyhow::Result<()> {
        let mut full = grudge;
        for &a in &self.cut_agents {
            add_cut(&mut full, self.agents[a].host, &self.master_hosts());
        }
        self.net.set_grudge(&full)?;
        self.grudge = full;
        Ok(())
    }

    /// Cuts agent `a` off from every master (both directions).
    pub fn cut_agent(&mut self, a: usize) -> anyhow::Result<()> {
        self.cut_agents.insert(a);
        let host = self.agents[a].host;
        let masters = self.master_hosts();
        add_cut(&mut self.grudge, host, &masters);
        self.net.set_grudge(&self.grudge)?;
        Ok(())
    }

    pub fn heal_agent(&mut self, a: usize) -> anyhow::Result<()> {
        self.cut_agents.remove(&a);
        let host = self.agents[a].host;
        let masters = self.master_hosts();
        self.grudge.remove(&host);
        for m in masters {
            if let Some(set) = self.grudge.get_mut(&m) {
                set.remove(&host);
            }
        }
        self.net.set_grudge(&self.grudge)?;
        Ok(())
    }

    /// Heals the network, resumes paused nodes, resets clocks, restarts stopped nodes.
    /// Masters removed from the membership are left to the caller (they need `add_master`).
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.cut_agents.clear();
        self.grudge.clear();
        self.net.set_grudge(&Grudge::new())?;
        for i in 0..self.masters.len() {
            self.masters[i].node.resume();
            write_clock(&self.clock_file(i), 0)?;
            if !self.masters[i].node.is_running() {
                self.start_master(i)?;
            }
        }
        for a in 0..self.agents.len() {
            self.agents[a].resume();
            if !self.agents[a].is_running() {
                self.start_agent(a)?;
            }
        }
        Ok(())
    }

    /// Nodes that exited although the harness did not kill them: (name, status, log tail).
    pub fn crashed(&mut self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut names = Vec::new();
        for n in self
            .masters
            .iter_mut()
            .map(|m| &mut m.node)
            .chain(self.agents.iter_mut())
        {
            if let Some(status) = n.exited() {
                names.push((n.name.clone(), status.to_string()));
            }
        }
        for (name, status) in names {
            let tail = log_tail(&self.log_path(&name), 1500);
            out.push((name, status, tail));
        }
        out
    }

    /// Removes every master's data directory and agent work directory (results and logs
    /// stay). Call only with every node stopped.
    fn remove_data(&mut self) {
        for i in 0..self.masters.len() {
            let _ = std::fs::remove_dir_all(self.data_dir(i));
        }
        for a in &self.agents {
            let _ = std::fs::remove_dir_all(self.dir.join(&a.name));
        }
    }
}

/// Writes a master's clock offset file atomically (temp file + rename), so the master's watcher
/// never reads it half-written.
pub fn write_clock(path: &Path, offset_ms: i64) -> std::io::Result<()> {
    let tmp = path.with_extension("clock.tmp");
    std::fs::write(&tmp, format!("{offset_ms}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Adds a symmetric cut between `host` and every one of `others` to `grudge`.
pub fn add_cut(grudge: &mut Grudge, host: usize, others: &[usize]) {
    for &o in others {
        grudge.entry(host).or_default().insert(o);
        grudge.entry(o).or_default().insert(host);
    }
}

/// The last `bytes` of a log file, from a line start.
pub fn log_tail(path: &Path, bytes: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = text.len().saturating_sub(bytes);
    let tail = String::from_utf8_lossy(&text[from..]).into_owned();
    match tail.find('\n') {
        Some(i) if from > 0 => tail[i + 1..].to_string(),
        _ => tail,
    }
}
