//! Helpers shared by the master's integration tests: bounded polling, and real masters in this
//! process on random loopback ports with real sled directories.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use taurus_master::MasterError;
use taurus_master::config::MasterConfig;
use taurus_master::config::RaftTuning;
use taurus_master::run_with_listener;
use taurus_master::run_with_listeners;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_client::AgentServiceClient;
use taurus_protocol::v1::cluster_service_client::ClusterServiceClient;
use taurus_protocol::v1::task_service_client::TaskServiceClient;
use taurus_store::network::Channels;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a test waits for something that should happen (a leader, a replica catching up, a
/// master stopping) before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` until it yields `Some`, at most [`WAIT`]; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, f).await
}

/// Polls `f` every 25 ms until it yields `Some`, at most `limit`; panics naming `what`
/// otherwise.
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads `stream` until it ends, at most [`WAIT`]; returns how: `Ok(())` for a clean end, the
/// status otherwise. Messages before the end are skipped.
pub async fn until_end<T>(what: &str, stream: &mut tonic::Streaming<T>) -> Result<(), tonic::Status> {
    let end = async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    };
    tokio::time::timeout(WAIT, end)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {WAIT:?}"))
}

/// A listener on a free port of `host` (a loopback address).
pub async fn bind(host: &str) -> TcpListener {
    TcpListener::bind(format!("{host}:0"))
        .await
        .expect("bind loopback")
}

type Configure = Box<dyn Fn(&mut MasterConfig) + Send + Sync>;

/// One master of a [`Cluster`].
struct Master {
    /// gRPC address.
    addr: String,
    /// HTTP address (`/metrics`, `/healthz`, the status page), when it has that port.
    http: Option<String>,
    /// Its peer channels, kept to inject partitions.
    channels: Channels,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), MasterError>>>,
}

/// Masters in this process, each a tokio task with its data in a directory of its own
/// (`m{id}` in a temporary directory). Every master still running is told to stop, and its
/// task aborted, when the cluster is dropped.
pub struct Cluster {
    dir: TempDir,
    peers: BTreeMap<u64, String>,
    masters: BTreeMap<u64, Master>,
    configure: Configure,
    wait: Duration,
}

/// How to start a [`Cluster`]: see [`Cluster::builder`].
pub struct Builder {
    configure: Configure,
    http: bool,
    wait: Duration,
}

impl Builder {
    /// Changes each master's configuration (whose `id`, `listen`, `data_dir` and `peers` are
    /// set already) with `f`, after what earlier calls change.
    pub fn configure(mut self, f: impl Fn(&mut MasterConfig) + Send + Sync + 'static) -> Self {
        let earlier = self.configure;
        self.configure = Box::new(move |c| {
            earlier(c);
            f(c)
        });
        self
    }

    /// Gives each master an HTTP port too, on a free loopback port.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// How long the cluster's own waits (a leader, a master stopping, rebinding a port) may
    /// take; [`WAIT`] unless set.
    pub fn wait(mut self, limit: Duration) -> Self {
        self.wait = limit;
        self
    }

    /// Starts `n` masters (ids 1 to `n`), all members of one cluster, on free loopback ports.
    pub async fn start(self, n: u64) -> Cluster {
        let mut listeners = Vec::new();
        for _ in 1..=n {
            listeners.push(bind("127.0.0.1").await);
        }
        let mut http = Vec::new();
        if self.http {
            for _ in 1..=n {
                http.push(bind("127.0.0.1").await);
            }
        }
        self.launch(listeners, http)
    }

    /// Starts one master per listener (ids from 1, in order), all members of one cluster.
    pub fn start_on(self, listeners: Vec<TcpListener>) -> Cluster {
        assert!(!self.http, "start_on takes no HTTP listeners");
        self.launch(listeners, Vec::new())
    }

    fn launch(self, grpc: Vec<TcpListener>, http: Vec<TcpListener>) -> Cluster {
        let peers: BTreeMap<u64, String> = grpc
            .iter()
            .zip(1..)
            .map(|(l, id)| (id, l.local_addr().expect("local addr").to_string()))
            .collect();
        let mut cluster = Cluster {
            dir: TempDir::new().expect("tempdir"),
            peers,
            masters: BTreeMap::new(),
            configure: self.configure,
            wait: self.wait,
        };
        let mut http = http.into_iter();
        for (listener, id) in grpc.into_iter().zip(1..) {
            cluster.spawn(id, listener, http.next());
        }
        cluster
    }
}

impl Cluster {
    /// `n` masters with Raft `tuning` and otherwise default settings.
    pub async fn start(n: u64, tuning: RaftTuning) -> Cluster {
        Self::builder()
            .configure(move |c| c.raft = tuning.clone())
            .start(n)
            .await
    }

    /// A cluster of masters with default settings, unless the builder says otherwise.
    pub fn builder() -> Builder {
        Builder {
            configure: Box::new(|_| {}),
            http: false,
            wait: WAIT,
        }
    }

    /// Starts master `id` on `listener` (and `http`, its HTTP port, if given), with the peers
    /// known now.
    fn spawn(&mut self, id: u64, listener: TcpListener, http: Option<TcpListener>) {
        let mut config = MasterConfig {
            id,
            listen: listener.local_addr().expect("local addr"),
            data_dir: self.dir.path().join(format!("m{id}")),
            peers: self.peers.clone(),
            ..MasterConfig::default()
        };
        (self.configure)(&mut config);
        let http_addr = http
            .as_ref()
            .map(|l| l.local_addr().expect("local addr").to_string());
        let channels = Channels::default();
        let (tx, rx) = oneshot::channel::<()>();
        let stopped = async {
            let _ = rx.await;
        };
        let task = match http {
            Some(http) => tokio::spawn(run_with_listeners(
                config,
                listener,
                Some(http),
                channels.clone(),
                stopped,
            )),
            // As `taurus master start` runs: the HTTP port only if the configuration asks.
            None => tokio::spawn(run_with_listener(config, listener, channels.clone(), stopped)),
        };
        self.masters.insert(
            id,
            Master {
                addr: self.peers[&id].clone(),
                http: http_addr,
                channels,
                stop: Some(tx),
                task: Some(task),
            },
        );
    }

    /// Starts a master that is not part of the initial cluster (it never forms one: its id is not
    /// the lowest); it waits to be added with `AddMaster`. Returns its address.
    pub async fn start_extra(&mut self, id: u64) -> String {
        let l = bind("127.0.0.1").await;
        let addr = l.local_addr().expect("local addr").to_string();
        self.peers.insert(id, addr.clone());
        self.spawn(id, l, None);
        addr
    }

    /// Tells master `id` to stop and returns its task, to await when the test wants.
    pub fn signal_stop(&mut self, id: u64) -> JoinHandle<Result<(), MasterError>> {
        let m = self.masters.get_mut(&id).expect("known master");
        if let Some(tx) = m.stop.take() {
            let _ = tx.send(());
        }
        m.task.take().expect("running master")
    }

    /// Stops master `id` (if running) and waits until it has stopped cleanly.
    pub async fn stop(&mut self, id: u64) {
        let m = self.masters.get_mut(&id).expect("known master");
        if let Some(tx) = m.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = m.task.take() {
            let r = tokio::time::timeout(self.wait, task)
                .await
                .expect("master stops in time");
            r.expect("master task").expect("master ran cleanly");
        }
    }

    /// Stops every master at once and waits until each has stopped cleanly.
    pub async fn stop_all(mut self) {
        for m in self.masters.values_mut() {
            if let Some(tx) = m.stop.take() {
                let _ = tx.send(());
            }
        }
        for (id, m) in &mut self.masters {
            if let Some(task) = m.task.take() {
                let r = tokio::time::timeout(self.wait, task)
                    .await
                    .unwrap_or_else(|_| panic!("master {id} stops in time"));
                r.expect("master task").expect("master ran cleanly");
            }
        }
    }

    /// Starts master `id` again from its data directory (after [`Cluster::stop`]), on the same
    /// addresses.
    pub async fn restart(&mut self, id: u64) {
        let listener = self.rebind(&self.peers[&id]).await;
        let http = match &self.masters[&id].http {
            Some(addr) => Some(self.rebind(addr).await),
            None => None,
        };
        self.spawn(id, listener, http);
    }

    /// A listener on `addr`, which a stopped master may not have released yet.
    async fn rebind(&self, addr: &str) -> TcpListener {
        eventually_within(&format!("rebinding {addr}"), self.wait, || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await
    }

    /// The ids of the masters, started or stopped.
    pub fn ids(&self) -> Vec<u64> {
        self.masters.keys().copied().collect()
    }

    /// The gRPC address of master `id`.
    pub fn addr(&self, id: u64) -> &str {
        &self.peers[&id]
    }

    /// The gRPC addresses of every master, by id.
    pub fn addrs(&self) -> Vec<String> {
        self.peers.values().cloned().collect()
    }

    /// The HTTP address of master `id` (started with [`Builder::http`]).
    pub fn http(&self, id: u64) -> &str {
        self.masters[&id]
            .http
            .as_deref()
            .unwrap_or_else(|| panic!("master {id} has no HTTP port"))
    }

    /// A (lazy) gRPC channel to master `id`.
    pub fn channel(&self, id: u64) -> Channel {
        taurus_store::network::channel_to(&self.peers[&id]).expect("channel")
    }

    pub fn tasks(&self, id: u64) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel(id))
    }

    pub fn cluster_api(&self, id: u64) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(id))
    }

    pub fn agents(&self, id: u64) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel(id))
    }

    /// The cluster status as master `via` sees it (`None` if it does not answer within 2 s).
    pub async fn status(&self, via: u64) -> Option<v1::ClusterStatus> {
        let mut req = tonic::Request::new(v1::ClusterStatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        self.cluster_api(via)
            .get_status(req)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until `via` sees a leader that satisfies `ok`; returns (leader, term).
    pub async fn leader_term_seen_by(&self, via: u64, ok: impl Fn(u64) -> bool) -> (u64, u64) {
        eventually_within(&format!("a leader seen by master {via}"), self.wait, || async {
            let s = self.status(via).await?;
            (s.leader != 0 && ok(s.leader)).then_some((s.leader, s.term))
        })
        .await
    }

    /// Waits until `via` sees a leader that satisfies `ok`; returns the leader.
    pub async fn leader_seen_by(&self, via: u64, ok: impl Fn(u64) -> bool) -> u64 {
        self.leader_term_seen_by(via, ok).await.0
    }

    /// Waits until master 1 sees a leader; returns it.
    pub async fn leader(&self) -> u64 {
        self.leader_seen_by(1, |_| true).await
    }

    /// Cuts `isolated` off from every other master, in both directions.
    pub fn partition(&self, isolated: &[u64]) {
        for (a, ma) in &self.masters {
            for (b, mb) in &self.masters {
                if isolated.contains(a) != isolated.contains(b) {
                    ma.channels.block(&mb.addr);
                }
            }
        }
    }

    /// Undoes every [`Cluster::partition`].
    pub fn heal(&self) {
        for m in self.masters.values() {
            m.channels.heal();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.masters.values_mut() {
            if let Some(tx) = m.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = m.task.take() {
                t.abort();
            }
        }
    }
}
