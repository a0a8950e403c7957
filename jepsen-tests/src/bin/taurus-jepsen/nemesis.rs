//! The nemeses: faults injected into the running cluster, each recorded in the history as a
//! window `start-<fault>` … `stop-<fault>` (process [`NEMESIS_PROCESS`]).
//!
//! `--concurrency N` runs N nemesis workers at once, so faults overlap. Each fault claims what
//! it touches first (a host, the masters' network, or the whole cluster), and a worker whose
//! next fault cannot claim its targets tries the one after; faults that change membership or
//! restart every master run alone.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;
use taurus_client::Client;
use taurus_jepsen::history::EventType;
use taurus_jepsen::history::OpValue;
use taurus_jepsen::net::Grudge;
use taurus_jepsen::recorder::Recorder;
use taurus_jepsen::report::NEMESIS_PROCESS;

use crate::cluster::Cluster;
use crate::cluster::add_cut;
use crate::cluster::write_clock;

pub type Shared<T> = Arc<Mutex<T>>;

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    PartitionOne,
    PartitionLeader,
    PartitionHalves,
    PartitionBridge,
    PartitionRing,
    PartitionOneWay,
    Kill,
    KillLeader,
    KillAll,
    Pause,
    PauseLeader,
    PauseAgent,
    PartitionAgent,
    KillAgent,
    Clock,
    Member,
    Corrupt,
}

pub const ALL_FAULTS: &[Fault] = &[
    Fault::PartitionOne,
    Fault::PartitionLeader,
    Fault::PartitionHalves,
    Fault::PartitionBridge,
    Fault::PartitionRing,
    Fault::PartitionOneWay,
    Fault::Kill,
    Fault::KillLeader,
    Fault::KillAll,
    Fault::Pause,
    Fault::PauseLeader,
    Fault::PauseAgent,
    Fault::PartitionAgent,
    Fault::KillAgent,
    Fault::Clock,
    Fault::Member,
    Fault::Corrupt,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionOne => "partition-one",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionRing => "partition-ring",
            Fault::PartitionOneWay => "partition-one-way",
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::KillAll => "kill-all",
            Fault::Pause => "pause",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseAgent => "pause-agent",
            Fault::PartitionAgent => "partition-agent",
            Fault::KillAgent => "kill-agent",
            Fault::Clock => "clock",
            Fault::Member => "member",
            Fault::Corrupt => "corrupt",
        }
    }

    fn is_master_partition(self) -> bool {
        matches!(
            self,
            Fault::PartitionOne
                | Fault::PartitionLeader
                | Fault::PartitionHalves
                | Fault::PartitionBridge
                | Fault::PartitionRing
                | Fault::PartitionOneWay
        )
    }
}

/// Parses `--nemesis`: fault names, `partition` (every master partition), `all`, or nothing.
pub fn parse_faults(names: &[String]) -> anyhow::Result<Vec<Fault>> {
    let mut out = BTreeSet::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match n {
            "all" => out.extend(ALL_FAULTS.iter().copied()),
            "none" => {}
            "partition" => out.extend(ALL_FAULTS.iter().copied().filter(|f| f.is_master_partition())),
            other => match ALL_FAULTS.iter().find(|f| f.name() == other) {
                Some(f) => {
                    out.insert(*f);
                }
                None => bail!(
                    "unknown nemesis {other:?} (known: all, partition, {})",
                    ALL_FAULTS.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                ),
            },
        }
    }
    Ok(out.into_iter().collect())
}

/// What a fault holds while it runs.
#[derive(Default)]
struct Busy {
    exclusive: bool,
    net: bool,
    hosts: BTreeSet<usize>,
    active: usize,
}

struct Claim {
    exclusive: bool,
    net: bool,
    hosts: Vec<usize>,
}

impl Busy {
    fn try_claim(&mut self, c: &Claim) -> bool {
        if self.exclusive || (c.exclusive && self.active > 0) {
            return false;
        }
        if (c.net && self.net) || c.hosts.iter().any(|h| self.hosts.contains(h)) {
            return false;
        }
        self.exclusive |= c.exclusive;
        self.net |= c.net;
        self.hosts.extend(c.hosts.iter().copied());
        self.active += 1;
        true
    }

    fn release(&mut self, c: &Claim) {
        if c.exclusive {
            self.exclusive = false;
        }
        if c.net {
            self.net = false;
        }
        for h in &c.hosts {
            self.hosts.remove(h);
        }
        self.active = self.active.saturating_sub(1);
    }
}

/// What happened to one damaged master on restart.
#[derive(Clone, Debug)]
pub struct DamageOutcome {
    pub node: String,
    pub detail: String,
    /// `refused` (exited on start), `started`, or `panicked`.
    pub outcome: String,
    /// For a refusal: whether the message named the damage clearly.
    pub clear: bool,
    pub message: String,
}

/// Everything the nemesis workers share.
pub struct Ctx {
    pub cluster: Shared<Cluster>,
    pub admin: Client,
    pub rec: Arc<Recorder>,
    busy: Mutex<Busy>,
    pub damage: Mutex<Vec<DamageOutcome>>,
    /// Faults injected, by name.
    pub injected: Mutex<BTreeMap<&'static str, u64>>,
    pub partition_hold: Option<Duration>,
    /// The furthest ahead any master's clock was set (ms): a leader whose clock runs ahead
    /// stamps retry back-offs and deadlines that far into the real future, so the quiet period
    /// after healing must be at least that much longer for such tasks to come due.
    pub max_clock_ahead_ms: Mutex<u64>,
    next: Mutex<usize>,
    order: Vec<Fault>,
}

impl Ctx {
    pub fn new(
        cluster: Shared<Cluster>,
        admin: Client,
        rec: Arc<Recorder>,
        faults: &[Fault],
        seed: u64,
        partition_hold: Option<Duration>,
    ) -> Ctx {
        let mut order = faults.to_vec();
        order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300));
        Ctx {
            cluster,
            admin,
            rec,
            busy: Mutex::new(Busy::default()),
            damage: Mutex::new(Vec::new()),
            injected: Mutex::new(BTreeMap::new()),
            partition_hold,
            max_clock_ahead_ms: Mutex::new(0),
            next: Mutex::new(0),
            order,
        }
    }

    pub fn event(&self, kind: EventType, f: &str, value: serde_json::Value) {
        self.rec.record(
            NEMESIS_PROCESS,
            kind,
            OpValue::Other {
                f: f.to_string(),
                value,
            },
        );
    }

    /// Records a nemesis step as an invoke/info pair (nemesis ops never "complete").
    fn step(&self, f: &str, value: serde_json::Value) {
        self.event(EventType::Invoke, f, value.clone());
        self.event(EventType::Info, f, value);
    }

    async fn leader_index(&self) -> Option<usize> {
        let s = self.admin.cluster_status().await.ok()?;
        if s.leader == 0 {
            return None;
        }
        lock(&self.cluster).master_by_id(s.leader)
    }
}

/// Runs `workers` nemesis workers until `stop_at`; each injects one fault at a time.
pub async fn run(ctx: Arc<Ctx>, workers: usize, seed: u64, stop_at: Instant) {
    if ctx.order.is_empty() {
        return;
    }
    let handles: Vec<_> = (0..workers.max(1))
        .map(|w| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(w as u64 + 7));
                worker(&ctx, &mut rng, stop_at).await;
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

async fn worker(ctx: &Ctx, rng: &mut StdRng, stop_at: Instant) {
    loop {
        let gap = Duration::from_millis(rng.random_range(300..1200));
        tokio::time::sleep(gap).await;
        if Instant::now() + Duration::from_secs(2) >= stop_at {
            return;
        }
        // Round-robin over a seeded order shared by all workers, so a short run sees every
        // enabled fault; a fault whose targets are busy is skipped for now.
        let n = ctx.order.len();
        let start = {
            let mut next = lock(&ctx.next);
            let s = *next;
            *next += 1;
            s
        };
        for k in 0..n {
            let fault = ctx.order[(start + k) % n];
            let Some((claim, target)) = plan(ctx, fault, rng).await else {
                continue;
            };
            if !lock(&ctx.busy).try_claim(&claim) {
                continue;
            }
            if k > 0 {
                // Keep the shared order: the skipped fault comes next.
                let mut next = lock(&ctx.next);
                *next = next.saturating_sub(1);
            }
            *lock(&ctx.injected).entry(fault.name()).or_default() += 1;
            let result = inject(ctx, fault, target, rng).await;
            lock(&ctx.busy).release(&claim);
            if let Err(e) = result {
                ctx.step(
                    "nemesis-error",
                    json!({"fault": fault.name(), "error": format!("{e:#}")}),
                );
            }
            break;
        }
    }
}

/// The node a fault targets (by master or agent index) and what it must claim.
async fn plan(ctx: &Ctx, fault: Fault, rng: &mut StdRng) -> Option<(Claim, usize)> {
    let (n_m, n_a) = {
        let c = lock(&ctx.cluster);
        (c.masters.len(), c.agents.len())
    };
    let leader = match fault {
        Fault::PartitionLeader | Fault::KillLeader | Fault::PauseLeader => Some(ctx.leader_index().await?),
        Fault::Member | Fault::Corrupt => ctx.leader_index().await,
        _ => None,
    };
    let claim = |exclusive, net, hosts| Claim {
        exclusive,
        net,
        hosts,
    };
    let agent_host = |a: usize| n_m + a;
    Some(match fault {
        f if f.is_master_partition() => {
            let t = leader.unwrap_or_else(|| rng.random_range(0..n_m));
            (claim(false, true, Vec::new()), t)
        }
        Fault::Kill | Fault::Pause | Fault::Clock => {
            let t = rng.random_range(0..n_m);
            (claim(false, false, vec![t]), t)
        }
        Fault::KillLeader | Fault::PauseLeader => {
            let t = leader?;
            (claim(false, false, vec![t]), t)
        }
        Fault::KillAll => (claim(true, true, Vec::new()), 0),
        Fault::PauseAgent | Fault::PartitionAgent | Fault::KillAgent => {
            // The agent holding the most work: failing an idle agent tests little.
            let fallback = rng.random_range(0..n_a);
            let t = busiest_agent(&ctx.admin, n_a).await.unwrap_or(fallback);
            (claim(false, false, vec![agent_host(t)]), t)
        }
        Fault::Member | Fault::Corrupt => {
            // A follower: a minority of one, never the node the cluster is led by.
            let choices: Vec<usize> = (0..n_m).filter(|i| Some(*i) != leader).collect();
            let t = choices[rng.random_range(0..choices.len())];
            (claim(true, true, Vec::new()), t)
        }
        _ => return None,
    })
}

/// Index of the agent (`a1` is 0) with the most tasks assigned or running, by a stale read
/// (any master's view will do); `None` when no master answers or no agent holds anything.
async fn busiest_agent(admin: &Client, agents: usize) -> Option<usize> {
    let list = admin.list_agents(true).await.ok()?;
    list.agents
        .iter()
        .filter(|a| a.tasks > 0)
        .filter_map(|a| {
            let i: usize = a.id.strip_prefix('a')?.parse().ok()?;
            (1..=agents)
                .contains(&i)
                .then_some((a.tasks, std::cmp::Reverse(i), i - 1))
        })
        .max()
        .map(|(_, _, i)| i)
}

fn hold(rng: &mut StdRng, lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo_ms..hi_ms))
}

fn names(c: &Cluster, masters: &[usize]) -> Vec<String> {
    masters.iter().map(|&i| c.masters[i].node.name.clone()).collect()
}

/// The grudge of a master partition, and a description of it.
fn master_partition(fault: Fault, target: usize, n: usize, rng: &mut StdRng) -> (Grudge, serde_json::Value) {
    let mut g = Grudge::new();
    let all: Vec<usize> = (0..n).collect();
    match fault {
        Fault::PartitionOne | Fault::PartitionLeader => {
            let others: Vec<usize> = all.iter().copied().filter(|&j| j != target).collect();
            add_cut(&mut g, target, &others);
            (g, json!({"isolated": [target]}))
        }
        Fault::PartitionHalves => {
            let mut order = all.clone();
            order.shuffle(rng);
            let (minority, majority) = order.split_at(n / 2);
            for &i in minority {
                add_cut(&mut g, i, majority);
            }
            (g, json!({"minority": minority, "majority": majority}))
        }
        Fault::PartitionBridge => {
            // Two halves that share one node, the bridge: {0..=mid} and {mid..n}.
            let mut order = all.clone();
            order.shuffle(rng);
            let mid = n / 2;
            for &i in &order[..mid] {
                add_cut(&mut g, i, &order[mid + 1..]);
            }
            (
                g,
                json!({"bridge": order[mid], "left": &order[..mid], "right": &order[mid + 1..]}),
            )
        }
        Fault::PartitionRing => {
            let mut order = all.clone();
            order.shuffle(rng);
            if n >= 5 {
                // Each node hears only its two ring neighbours: a majority of 3, but a
                // different majority for every node.
                for (k, &i) in order.iter().enumerate() {
                    let near = [order[(k + 1) % n], order[(k + n - 1) % n]];
                    for &j in &order {
                        if j != i && !near.contains(&j) {
                            g.entry(i).or_default().insert(j);
                        }
                    }
                }
            } else {
                // With 3 nodes a symmetric ring cuts nothing: make it one-way instead, each
                // node dropping what its successor sends.
                for (k, &i) in order.iter().enumerate() {
                    g.entry(i).or_default().insert(order[(k + 1) % n]);
                }
            }
            (g, json!({"ring": order}))
        }
        Fault::PartitionOneWay => {
            // The target hears nobody, everybody still hears the target.
            for j in all.iter().copied().filter(|&j| j != target) {
                g.entry(target).or_default().insert(j);
            }
            (g, json!({"deaf": [target]}))
        }
        _ => (g, json!({})),
    }
}

async fn inject(ctx: &Ctx, fault: Fault, target: usize, rng: &mut StdRng) -> anyhow::Result<()> {
    let name = fault.name();
    let start = format!("start-{name}");
    let stop = format!("stop-{name}");
    match fault {
        f if f.is_master_partition() => {
            let n = lock(&ctx.cluster).masters.len();
            let (grudge, mut v) = master_partition(f, target, n, rng);
            {
                let c = lock(&ctx.cluster);
                v["masters"] = json!(names(&c, &(0..n).collect::<Vec<_>>()));
            }
            let result = lock(&ctx.cluster).partition(grudge);
            ctx.step(&start, v.clone());
            result?;
            let h = ctx.partition_hold.unwrap_or_else(|| hold(rng, 2000, 4000));
            tokio::time::sleep(h).await;
            let result = lock(&ctx.cluster).partition(Grudge::new());
            ctx.step(&stop, v);
            result?;
        }
        Fault::Kill | Fault::KillLeader => {
            let v = json!({"node": names(&lock(&ctx.cluster), &[target])});
            lock(&ctx.cluster).masters[target].node.kill();
            ctx.step(&start, v.clone());
            tokio::time::sleep(hold(rng, 1000, 3000)).await;
            let result = lock(&ctx.cluster).start_master(target);
            ctx.step(&stop, v);
            result?;
        }
        Fault::KillAll => {
            let n = lock(&ctx.cluster).masters.len();
            let v = json!({"nodes": names(&lock(&ctx.cluster), &(0..n).collect::<Vec<_>>())});
            for i in 0..n {
                lock(&ctx.cluster).masters[i].node.kill();
            }
            ctx.step(&start, v.clone());
            tokio::time::sleep(hold(rng, 1000, 2500)).await;
            let mut result = Ok(());
            for i in 0..n {
                let r = lock(&ctx.cluster).start_master(i);
                result = result.and(r);
            }
            ctx.step(&stop, v);
            result?;
        }
        Fault::Pause | Fault::PauseLeader => {
            let v = json!({"node": names(&lock(&ctx.cluster), &[target])});
            let r = lock(&ctx.cluster).masters[target].node.pause();
            ctx.step(&start, v.clone());
            r?;
            tokio::time::sleep(hold(rng, 1000, 3000)).await;
            lock(&ctx.cluster).masters[target].node.resume();
            ctx.step(&stop, v);
        }
        Fault::PauseAgent => {
            let v = json!({"node": lock(&ctx.cluster).agents[target].name.clone()});
            let r = lock(&ctx.cluster).agents[target].pause();
            ctx.step(&start, v.clone());
            r?;
            // Beyond the agent's lease (1.5 s): the masters declare it down meanwhile.
            tokio::time::sleep(hold(rng, 2000, 4500)).await;
            lock(&ctx.cluster).agents[target].resume();
            ctx.step(&stop, v);
        }
        Fault::PartitionAgent => {
            let v = json!({"node": lock(&ctx.cluster).agents[target].name.clone()});
            let r = lock(&ctx.cluster).cut_agent(target);
            ctx.step(&start, v.clone());
            r?;
            let h = ctx.partition_hold.unwrap_or_else(|| hold(rng, 1500, 5000));
            tokio::time::sleep(h).await;
            let r = lock(&ctx.cluster).heal_agent(target);
            ctx.step(&stop, v);
            r?;
        }
        Fault::KillAgent => {
            let v = json!({"node": lock(&ctx.cluster).agents[target].name.clone()});
            lock(&ctx.cluster).agents[target].kill();
            ctx.step(&start, v.clone());
            tokio::time::sleep(hold(rng, 1000, 4500)).await;
            let r = lock(&ctx.cluster).start_agent(target);
            ctx.step(&stop, v);
            r?;
        }
        Fault::Clock => {
            let offset_ms: i64 = rng.random_range(1_000..120_000) * if rng.random_bool(0.5) { 1 } else { -1 };
            let file = lock(&ctx.cluster).clock_file(target);
            let v = json!({"node": names(&lock(&ctx.cluster), &[target]), "offset_ms": offset_ms});
            if let Ok(ahead) = u64::try_from(offset_ms) {
                let mut max = lock(&ctx.max_clock_ahead_ms);
                *max = (*max).max(ahead);
            }
            let r = write_clock(&file, offset_ms);
            ctx.step(&start, v.clone());
            r?;
            tokio::time::sleep(hold(rng, 2000, 4000)).await;
            let r = write_clock(&file, 0);
            ctx.step(&stop, v);
            r?;
        }
        Fault::Member => member(ctx, target).await?,
        Fault::Corrupt => corrupt(ctx, target, rng).await?,
        _ => {}
    }
    Ok(())
}

/// Retries `f` every 300 ms until it succeeds or `limit` passes; the last error otherwise.
async fn retry<T, F, Fut>(limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let give_up = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= give_up => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Removes master `target` from the membership, wipes it, restarts it empty under a new id and
/// adds it back: the documented disk-replacement procedure, under load.
async fn member(ctx: &Ctx, target: usize) -> anyhow::Result<()> {
    let (name, old_id) = {
        let c = lock(&ctx.cluster);
        (c.masters[target].node.name.clone(), c.masters[target].id)
    };
    let v = json!({"node": name, "id": old_id});
    ctx.step("start-member", v.clone());
    let result = rejoin(ctx, target, old_id).await;
    let mut done = v;
    match &result {
        Ok(new_id) => done["new_id"] = json!(new_id),
        Err(e) => done["error"] = json!(format!("{e:#}")),
    }
    ctx.step("stop-member", done);
    result.map(|_| ())
}

/// remove-master, wipe, start under a new id, add-master. Returns the new id.
async fn rejoin(ctx: &Ctx, target: usize, old_id: u64) -> anyhow::Result<u64> {
    retry(Duration::from_secs(20), || async {
        match ctx.admin.remove_master(old_id).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("remove-master {old_id}: {e}")),
        }
    })
    .await?;
    let (new_id, addr) = {
        let mut c = lock(&ctx.cluster);
        let id = c.wipe_and_start_new(target)?;
        (id, c.masters[target].addr.clone())
    };
    add_back(ctx, target, new_id, &addr, Duration::from_secs(40)).await?;
    Ok(new_id)
}

/// `add-master` with retries; marks the master a member again on success.
pub async fn add_back(ctx: &Ctx, target: usize, id: u64, addr: &str, limit: Duration) -> anyhow::Result<()> {
    retry(limit, || async {
        match ctx.admin.add_master(id, addr).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("add-master {id} {addr}: {e}")),
        }
    })
    .await?;
    lock(&ctx.cluster).masters[target].removed = false;
    Ok(())
}

/// The files of a sled data directory, largest first.
fn data_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.len() > 0 => out.push((p, m.len())),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Damages one file of a stopped master: truncates it or flips bits in it.
fn damage(dir: &std::path::Path, rng: &mut StdRng) -> anyhow::Result<String> {
    let files = data_files(dir);
    if files.is_empty() {
        bail!("no data file under {}", dir.display());
    }
    // Mostly the biggest file (sled's `db`: log and state), sometimes any other.
    let (path, len) = if rng.random_bool(0.7) {
        files[0].clone()
    } else {
        files[rng.random_range(0..files.len())].clone()
    };
    let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
    if rng.random_bool(0.5) {
        let keep = rng.random_range(len / 2..len);
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.set_len(keep)?;
        Ok(format!("truncated {rel} from {len} to {keep} bytes"))
    } else {
        let mut bytes = std::fs::read(&path)?;
        let flips = rng.random_range(1..=8);
        let mut at = Vec::new();
        for _ in 0..flips {
            // Half the flips land in the last 64 KiB, where the newest writes are.
            let lo = if rng.random_bool(0.5) {
                bytes.len().saturating_sub(65_536)
            } else {
                0
            };
            let i = rng.random_range(lo..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
            at.push(i);
        }
        std::fs::write(&path, &bytes)?;
        Ok(format!("flipped {flips} bits of {rel} ({len} bytes) at {at:?}"))
    }
}

/// Whether a log shows a Rust panic message (`thread '…' panicked at …`), as opposed to an
/// error that reports a panic it caught.
fn raw_panic(log: &str) -> bool {
    log.lines()
        .any(|l| l.starts_with("thread '") && l.contains("' panicked at "))
}

/// Kills a follower, damages one of its sled files, restarts it: it must refuse to start with
/// a clear error (then it is replaced by the rejoin procedure) or start and serve correct data
/// (which the checkers judge).
async fn corrupt(ctx: &Ctx, target: usize, rng: &mut StdRng) -> anyhow::Result<()> {
    let (name, id, dir, log) = {
        let mut c = lock(&ctx.cluster);
        c.masters[target].node.kill();
        let name = c.masters[target].node.name.clone();
        (
            name.clone(),
            c.masters[target].id,
            c.data_dir(target),
            c.log_path(&name),
        )
    };
    let detail = damage(&dir, rng);
    let mut v = json!({"node": name, "id": id});
    match &detail {
        Ok(d) => v["damage"] = json!(d),
        Err(e) => v["error"] = json!(format!("{e:#}")),
    }
    ctx.step("start-corrupt", v.clone());
    let detail = match detail {
        Ok(d) => d,
        Err(e) => {
            lock(&ctx.cluster).start_master(target)?;
            ctx.step("stop-corrupt", v);
            return Err(e);
        }
    };
    let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    lock(&ctx.cluster).start_master(target)?;
    // Started and serving, or exited: whichever comes first (bounded).
    let addr = lock(&ctx.cluster).masters[target].addr.clone();
    let probe = lock(&ctx.cluster)
        .client(vec![addr])?
        .with_deadline(Duration::from_millis(500));
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut exited = None;
    loop {
        if let Some(status) = lock(&ctx.cluster).masters[target].node.exited() {
            exited = Some(status);
            break;
        }
        if probe.cluster_status().await.is_ok() || Instant::now() >= give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_log = std::fs::read(&log).unwrap_or_default();
    let since = String::from_utf8_lossy(new_log.get(log_len as usize..).unwrap_or(&[])).into_owned();
    let outcome = match exited {
        None => DamageOutcome {
            node: name.clone(),
            detail,
            outcome: if since.contains("panicked") {
                "panicked"
            } else {
                "started"
            }
            .into(),
            clear: true,
            message: String::new(),
        },
        Some(status) => {
            let message = since
                .lines()
                .rev()
                .find(|l| l.contains("error"))
                .unwrap_or_else(|| since.lines().last().unwrap_or(""))
                .to_string();
            let lower = message.to_lowercase();
            let panicked = raw_panic(&since);
            DamageOutcome {
                node: name.clone(),
                detail,
                outcome: if panicked { "panicked" } else { "refused" }.into(),
                clear: !panicked
                    && (lower.contains("damaged") || lower.contains("corrupt"))
                    && lower.contains(&dir.display().to_string().to_lowercase()),
                message: format!("{status}: {message}"),
            }
        }
    };
    lock(&ctx.damage).push(outcome.clone());
    let mut done = v;
    done["outcome"] = json!(outcome.outcome);
    if exited.is_some() {
        // Replace the damaged master as an operator would.
        let r = rejoin(ctx, target, id).await;
        match &r {
            Ok(new_id) => done["new_id"] = json!(new_id),
            Err(e) => done["error"] = json!(format!("{e:#}")),
        }
        ctx.step("stop-corrupt", done);
        r.map(|_| ())
    } else {
        ctx.step("stop-corrupt", done);
        Ok(())
    }
}
