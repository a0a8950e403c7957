//! Master configuration: defaults < TOML file < `TAURUS_*` environment < command-line flags.
//!
//! The CLI resolves the last two (clap reads flags and their `TAURUS_*` env fallbacks) and
//! overlays them on the file with [`MasterConfig::overlay`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use taurus_core::schedule::PolicyKind;
use taurus_protocol::tls::TlsFiles;

use crate::error::MasterError;
pub use taurus_protocol::trace::LogConfig;

/// Everything a master needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// This master's id: unique in the cluster, never reused for a different data directory.
    pub id: u64,
    /// Address the gRPC server (public API and Raft traffic) listens on.
    pub listen: SocketAddr,
    /// Address other masters and clients use to reach this one; defaults to `listen`.
    pub advertise: Option<SocketAddr>,
    /// Directory of this master's sled database.
    pub data_dir: PathBuf,
    /// Every initial master, id -> address, this one included. On fresh data directories the
    /// master with the lowest id forms the cluster from exactly this list, once.
    pub peers: BTreeMap<u64, String>,
    /// Raft timing.
    pub raft: RaftTuning,
    /// Write batching.
    pub batch: BatchTuning,
    /// Scheduling and agent liveness (leader duties).
    pub scheduler: SchedulerTuning,
    /// Bounds on what clients may send and queue.
    pub limits: Limits,
    /// Mutual TLS (`[tls]` with `ca_file`, `cert_file`, `key_file`: all three or none). When
    /// set, the master serves only TLS and requires a client certificate signed by the CA on
    /// every connection, and dials its peers over TLS with its own certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Authentication and authorisation (`[auth]`).
    pub auth: AuthConfig,
    /// Log format and filter (`[log]`: `format = "human" | "json"`, `level = "info"`).
    pub log: LogConfig,
    /// Allow a non-loopback `listen` address without TLS and authentication. Anyone who can
    /// reach such a port can run commands on every agent; a warning is logged at every start.
    pub insecure: bool,
    /// The HTTP port (`[http]`): Prometheus metrics, health and the status page.
    pub http: HttpConfig,
    /// Monitoring samples and anomaly thresholds (`[monitor]`, see `crate::monitor`).
    pub monitor: crate::monitor::MonitorConfig,
}

/// `[http]`: the port serving `/metrics`, `/healthz` and the status page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve HTTP on, e.g. `127.0.0.1:9101`. Absent (the default): no HTTP port.
    /// Served without TLS or authentication: choose an address only operators and the
    /// monitoring system can reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// `[auth]`: bearer tokens, certificate identities, roles and per-token rate limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require credentials on every call (tokens; with TLS also certificates). Off by default
    /// for the loopback quick start: every caller is then an admin named `anonymous`.
    pub enabled: bool,
    /// Tasks per second each token may submit to the cluster (charged on the leader; reset when leadership moves), unless the token sets its own
    /// `rate_per_sec`. Absent: unlimited.
    pub default_submit_rate: Option<u32>,
}

/// Back-pressure: how much work and how large a message a master accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most tasks not yet finished (pending, assigned, running) in the cluster. A submission that
    /// would go beyond it is refused whole with `RESOURCE_EXHAUSTED`; nothing already accepted is
    /// affected. Each unfinished task costs roughly 1-2 KiB of memory on every master. `0` means
    /// no bound.
    pub max_queued_tasks: u64,
    /// Largest gRPC message a master decodes from clients and agents, in bytes (Raft traffic
    /// between masters has its own, larger bound). Larger messages get `RESOURCE_EXHAUSTED`
    /// ("message length too large") from gRPC before they are read into memory.
    pub max_message_bytes: usize,
    /// Finished tasks (succeeded, failed, cancelled, timed out) are forgotten this long after
    /// they finished: `get` then answers `NOT_FOUND`, and a new task may no longer depend on
    /// them. Keeps memory, snapshots and disk bounded under a steady flow of work.
    #[serde(with = "humantime_serde_compat")]
    pub finished_retention: Duration,
    /// At most this many finished tasks are kept; beyond it the oldest are forgotten early.
    pub max_finished_tasks: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_queued_tasks: 1_000_000,
            max_message_bytes: 16 << 20,
            finished_retention: Duration::from_secs(24 * 3600),
            max_finished_tasks: 1_000_000,
        }
    }
}

impl Limits {
    /// The bound to put into each submit request: `None` when unbounded.
    pub fn queue_limit(&self) -> Option<u64> {
        (self.max_queued_tasks > 0).then_some(self.max_queued_tasks)
    }
}

/// Clock-rate drift the lease margin allows for (0.1%, far above what NTP-disciplined or even
/// free-running quartz clocks show).
pub const MAX_CLOCK_DRIFT_PPM: u32 = 1000;
/// Time an agent may take from deciding to fence until its tasks are dead (SIGKILL of a process
/// group is immediate; this covers a loaded machine).
pub const KILL_GRACE_MS: u64 = 500;

/// The leader's scheduling loop and agent-liveness tracker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerTuning {
    /// Placement policy: `greedy`, `delay-guided`, `binpack` or `spread`.
    pub policy: PolicyKind,
    /// An agent silent this long is declared down and its tasks get new attempts. Must exceed
    /// the agents' `lease_timeout` by a margin (see `taurus_core::liveness`).
    #[serde(with = "humantime_serde_compat")]
    pub agent_ttl: Duration,
    /// The agents' lease (they kill their tasks after this long without reaching the leader);
    /// told to agents in heartbeat answers, and checked against `agent_ttl` at start.
    #[serde(with = "humantime_serde_compat")]
    pub lease_timeout: Duration,
    /// The loop also runs on this timer (retries falling due, deadlines, liveness).
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Most placements per round (one `Assign` entry).
    pub max_placements: usize,
    /// Priority ageing: a waiting task gains one priority point per this much waiting.
    #[serde(with = "humantime_serde_compat")]
    pub ageing_per_point: Duration,
}

impl Default for SchedulerTuning {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Greedy,
            agent_ttl: Duration::from_secs(10),
            lease_timeout: Duration::from_secs(6),
            interval: Duration::from_millis(100),
            max_placements: 4096,
            ageing_per_point: Duration::from_secs(10),
        }
    }
}

/// Raft timing and log retention. Defaults give sub-second failover on a LAN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat period. Must be well under `election_timeout_min / 2`.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout.
    #[serde(with = "humantime_serde_compat")]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomised election timeout.
    #[serde(with = "humantime_serde_compat")]
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot (a generous tail: openraft #2116, #1706).
    pub keep_log_entries: u64,
}

/// Coalescing of concurrent submissions into one Raft entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchTuning {
    /// Most tasks in one Raft entry.
    pub max_tasks: usize,
    /// Most Raft entries proposed but not yet applied at once.
    pub max_in_flight: usize,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            advertise: None,
            data_dir: PathBuf::from("taurus-data"),
            peers: BTreeMap::new(),
            raft: RaftTuning::default(),
            batch: BatchTuning::default(),
            scheduler: SchedulerTuning::default(),
            limits: Limits::default(),
            tls: None,
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            insecure: false,
            http: HttpConfig::default(),
            monitor: crate::monitor::MonitorConfig::default(),
        }
    }
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_every_entries: 20_000,
            keep_log_entries: 5_000,
        }
    }
}

impl Default for BatchTuning {
    fn default() -> Self {
        Self {
            max_tasks: 4096,
            max_in_flight: 8,
        }
    }
}

/// Values given on the command line or in `TAURUS_*` variables; `None` = not given.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub id: Option<u64>,
    pub listen: Option<SocketAddr>,
    pub advertise: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub peers: Option<BTreeMap<u64, String>>,
    /// `tls.ca_file`, `tls.cert_file`, `tls.key_file`, each replacing the file's value.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `http.listen`.
    pub http_listen: Option<SocketAddr>,
}

impl MasterConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, MasterError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| MasterError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| MasterError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, MasterError> {
        toml::from_str(text).map_err(|e| MasterError::Config(e.to_string()))
    }

    /// Applies flags/env on top of this (file or default) configuration.
    pub fn overlay(mut self, o: Overrides) -> Self {
        if let Some(v) = o.id {
            self.id = v;
        }
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.advertise {
            self.advertise = Some(v);
        }
        if let Some(v) = o.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = o.peers {
            self.peers = v;
        }
        if let Some(v) = o.http_listen {
            self.http.listen = Some(v);
        }
        self.tls = TlsFiles::overlay(self.tls.take(), o.tls_ca, o.tls_cert, o.tls_key);
        self
    }

    /// The address peers and clients should use for this master.
    pub fn advertised(&self) -> String {
        self.advertise.unwrap_or(self.listen).to_string()
    }

    /// Checks the configuration is usable, naming the offending key.
    pub fn validate(&self) -> Result<(), MasterError> {
        if self.id == 0 {
            return Err(MasterError::Config("id: must be at least 1".into()));
        }
        // The file's `[peers]` table gets the checks `--peers` gets while parsing.
        for (id, addr) in &self.peers {
            if *id == 0 {
                return Err(MasterError::Config(
                    "peers: id 0 is not allowed (ids start at 1)".into(),
                ));
            }
            if !is_host_port(addr) {
                return Err(MasterError::Config(format!(
                    "peers.{id}: address {addr:?} needs HOST:PORT"
                )));
            }
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return Err(MasterError::Config(format!(
                "peers: must include this master's own id {}",
                self.id
            )));
        }
        if let Some(key) = self.tls.as_ref().and_then(TlsFiles::missing_key) {
            return Err(MasterError::Config(format!(
                "tls.{key}: missing (the [tls] section needs ca_file, cert_file and key_file)"
            )));
        }
        self.monitor.validate()?;
        if self.auth.default_submit_rate == Some(0) {
            return Err(MasterError::Config(
                "auth.default_submit_rate: must be at least 1 (omit it for no limit)".into(),
            ));
        }
        let r = &self.raft;
        // Checked: a duration near `u64::MAX` seconds is an error, not a panic (found by fuzzing).
        if r.heartbeat_interval.is_zero()
            || r.heartbeat_interval
                .checked_mul(2)
                .is_none_or(|d| d >= r.election_timeout_min)
        {
            return Err(MasterError::Config(
                "raft.heartbeat_interval: must be non-zero and below election_timeout_min / 2".into(),
            ));
        }
        if r.election_timeout_min >= r.election_timeout_max {
            return Err(MasterError::Config(
                "raft.election_timeout_min: must be below raft.election_timeout_max".into(),
            ));
        }
        if r.snapshot_every_entries == 0 {
            // 0 would snapshot after every entry: the whole state written per write.
            return Err(MasterError::Config(
                "raft.snapshot_every_entries: must be at least 1".into(),
            ));
        }
        let s = &self.scheduler;
        if s.interval.is_zero() || s.max_placements == 0 {
            return Err(MasterError::Config(
                "scheduler: interval and max_placements must be non-zero".into(),
            ));
        }
        taurus_core::liveness::check_lease_margin(
            // Saturating, not truncating: a huge lease must not wrap into a small one.
            u64::try_from(s.lease_timeout.as_millis()).unwrap_or(u64::MAX),
            u64::try_from(s.agent_ttl.as_millis()).unwrap_or(u64::MAX),
            MAX_CLOCK_DRIFT_PPM,
            KILL_GRACE_MS,
        )
        .map_err(|e| MasterError::Config(format!("scheduler.agent_ttl: {e}")))?;
        self.exposure()?;
        if self.limits.max_message_bytes < 64 * 1024 {
            return Err(MasterError::Config(
                "limits.max_message_bytes: must be at least 65536".into(),
            ));
        }
        if self.batch.max_tasks == 0 || self.batch.max_in_flight == 0 {
            return Err(MasterError::Config(
                "batch: max_tasks and max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How exposed a master's listener is, as judged by [`MasterConfig::exposure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// Listens on a loopback address only: reachable from this machine alone.
    Loopback,
    /// Reachable from the network, with TLS and authentication on.
    Secured,
    /// Reachable from the network without TLS or without authentication, allowed by
    /// `insecure`: to be warned about at every start.
    Insecure,
}

impl MasterConfig {
    /// Secure by default: a listener reachable from other machines (any address that is not
    /// loopback, `0.0.0.0` included) needs both TLS and authentication, unless `insecure` says
    /// otherwise. Names what is missing and how to fix it.
    pub fn exposure(&self) -> Result<Exposure, MasterError> {
        if self.listen.ip().is_loopback() {
            return Ok(Exposure::Loopback);
        }
        let mut missing = Vec::new();
        if self.tls.is_none() {
            missing.push("TLS ([tls] ca_file, cert_file, key_file or --tls-ca/--tls-cert/--tls-key)");
        }
        if !self.auth.enabled {
            missing.push("authentication ([auth] enabled = true or --auth)");
        }
        match (missing.is_empty(), self.insecure) {
            (true, _) => Ok(Exposure::Secured),
            (false, true) => Ok(Exposure::Insecure),
            (false, false) => Err(MasterError::Config(format!(
                "listen: {} is reachable from other machines, which needs {}; a master runs \
                 commands on every agent for whoever can call it. Listen on 127.0.0.1, set up \
                 TLS and tokens (docs/security.md), or pass --insecure to accept the risk",
                self.listen,
                missing.join(" and ")
            ))),
        }
    }
}

/// Parses `1=127.0.0.1:7101,2=127.0.0.1:7102` into a peer map, naming the bad element.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>, MasterError> {
    let mut peers = BTreeMap::new();
    for (i, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| MasterError::Config(format!("peers[{i}]: expected ID=HOST:PORT, got {part:?}")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| MasterError::Config(format!("peers[{i}]: id {id:?} is not a positive integer")))?;
        if id == 0 {
            return Err(MasterError::Config(format!("peers[{i}]: id must be at least 1")));
        }
        let addr = addr.trim();
        if !is_host_port(addr) {
            return Err(MasterError::Config(format!(
                "peers[{i}]: address {addr:?} needs HOST:PORT"
            )));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(MasterError::Config(format!("peers[{i}]: id {id} given twice")));
        }
    }
    Ok(peers)
}

/// Whether `addr` looks like `HOST:PORT` (a non-empty host, a port number); an `http(s)://`
/// prefix is allowed, as peers may be written with it.
fn is_host_port(addr: &str) -> bool {
    let addr = addr
        .strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// `humantime` strings ("50ms", "2s") for durations in TOML.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_configs_parse_and_validate() {
        for (name, text) in [
            (
                "local-1",
                include_str!("../../../config/local-3-masters/master-1.toml"),
            ),
            (
                "local-2",
                include_str!("../../../config/local-3-masters/master-2.toml"),
            ),
            (
                "local-3",
                include_str!("../../../config/local-3-masters/master-3.toml"),
            ),
            ("3-hosts", include_str!("../../../config/3-hosts/master.toml")),
        ] {
            let c = MasterConfig::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.peers.len(), 3, "{name}");
        }
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let file = MasterConfig::from_toml(
            "id = 2\nlisten = \"127.0.0.1:9000\"\n[raft]\nheartbeat_interval = \"20ms\"",
        )
        .expect("parses");
        assert_eq!(file.raft.heartbeat_interval, Duration::from_millis(20));
        let merged = file.overlay(Overrides {
            id: Some(7),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        });
        assert_eq!(merged.id, 7);
        assert_eq!(
            merged.listen.port(),
            9000,
            "not overridden: the file's value stays"
        );
        assert_eq!(merged.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(MasterConfig::from_toml("idd = 1").is_err());
        assert!(MasterConfig::from_toml("[raft]\nheartbeat_interval = \"soon\"").is_err());
        let c = MasterConfig {
            id: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("id"));
        let mut c = MasterConfig::default();
        c.raft.heartbeat_interval = Duration::from_millis(150);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heartbeat_interval")
        );
        let mut c = MasterConfig::default();
        c.raft.snapshot_every_entries = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("raft.snapshot_every_entries")
        );
        let c = MasterConfig {
            peers: parse_peers("2=127.0.0.1:1").expect("parses"),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("peers"));
    }

    #[test]
    fn tls_needs_all_three_files_and_flags_fill_in_the_file() {
        let c =
            MasterConfig::from_toml("[tls]\nca_file = \"ca.crt\"\ncert_file = \"m.crt\"\n").expect("parses");
        let e = c.validate().expect_err("key_file missing").to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        let c = c.overlay(Overrides {
            tls_key: Some("m.key".into()),
            ..Default::default()
        });
        c.validate().expect("complete now");
        let tls = c.tls.expect("tls set");
        assert_eq!(tls.ca_file, PathBuf::from("ca.crt"), "file value kept");
        assert_eq!(tls.key_file, PathBuf::from("m.key"), "flag added");

        let c = MasterConfig::default().overlay(Overrides {
            tls_cert: Some("m.crt".into()),
            ..Default::default()
        });
        let e = c.validate().expect_err("only one flag").to_string();
        assert!(e.contains("tls.ca_file"), "{e}");
        assert_eq!(MasterConfig::default().tls, None, "TLS is off unless configured");
        assert!(
            MasterConfig::from_toml("[tls]\nca = \"x\"").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn a_non_loopback_listener_needs_tls_and_auth_or_insecure() {
        let loopback = MasterConfig::default();
        assert_eq!(loopback.exposure().expect("loopback is fine"), Exposure::Loopback);
        for listen in ["10.1.2.3:7101", "0.0.0.0:7101", "[::]:7101"] {
            let open = MasterConfig {
                listen: listen.parse().expect("addr"),
                ..Default::default()
            };
            let e = open.validate().expect_err(listen).to_string();
            assert!(
                e.starts_with("invalid configuration: listen:") || e.contains("listen:"),
                "{listen}: {e}"
            );
            assert!(
                e.contains("TLS") && e.contains("authentication") && e.contains("--insecure"),
                "{e}"
            );
            // TLS alone is not enough.
            let tls_only = MasterConfig {
                tls: Some(TlsFiles {
                    ca_file: "ca.crt".into(),
                    cert_file: "m.crt".into(),
                    key_file: "m.key".into(),
                }),
                ..open.clone()
            };
            let e = tls_only.exposure().expect_err("auth missing").to_string();
            assert!(e.contains("authentication") && !e.contains("TLS ("), "{e}");
            let mut secured = tls_only.clone();
            secured.auth.enabled = true;
            assert_eq!(secured.exposure().expect("secured"), Exposure::Secured);
            let insecure = MasterConfig {
                insecure: true,
                ..open
            };
            assert_eq!(insecure.exposure().expect("allowed"), Exposure::Insecure);
        }
    }

    #[test]
    fn peer_lists_parse_and_errors_name_the_element() {
        let p = parse_peers("1=127.0.0.1:7101, 2=host-b:7102").expect("parses");
        assert_eq!(p[&2], "host-b:7102");
        for (bad, what) in [
            ("1=127.0.0.1:7101,x", "peers[1]"),
            ("0=a:1", "peers[0]"),
            ("1=a:1,1=b:2", "given twice"),
            ("1=nohost", "HOST:PORT"),
            ("q=a:1", "positive integer"),
        ] {
            let e = parse_peers(bad).expect_err(bad).to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn the_files_peers_table_gets_the_same_checks_as_the_flag() {
        let ok = MasterConfig::from_toml(
            "id = 1\n[peers]\n1 = \"127.0.0.1:7101\"\n2 = \"https://host-b:7102\"\n3 = \"[::1]:7103\"",
        )
        .expect("parses");
        ok.validate().expect("valid peers");
        for (toml, what) in [
            ("id = 1\n[peers]\n0 = \"a:1\"\n1 = \"b:2\"", "id 0"),
            ("id = 1\n[peers]\n1 = \"nohost\"", "peers.1"),
            ("id = 1\n[peers]\n1 = \"a:1\"\n2 = \":7102\"", "peers.2"),
            ("id = 1\n[peers]\n1 = \"a:99999\"", "HOST:PORT"),
        ] {
            let c = MasterConfig::from_toml(toml).expect(toml);
            let e = c.validate().expect_err(toml).to_string();
            assert!(e.contains(what), "{toml}: {e}");
        }
    }
}
