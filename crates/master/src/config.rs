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

use crate::error::MasterError;

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
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return Err(MasterError::Config(format!(
                "peers: must include this master's own id {}",
                self.id
            )));
        }
        let r = &self.raft;
        if r.heartbeat_interval.is_zero() || r.heartbeat_interval * 2 >= r.election_timeout_min {
            return Err(MasterError::Config(
                "raft.heartbeat_interval: must be non-zero and below election_timeout_min / 2".into(),
            ));
        }
        if r.election_timeout_min >= r.election_timeout_max {
            return Err(MasterError::Config(
                "raft.election_timeout_min: must be below raft.election_timeout_max".into(),
            ));
        }
        let s = &self.scheduler;
        if s.interval.is_zero() || s.max_placements == 0 {
            return Err(MasterError::Config(
                "scheduler: interval and max_placements must be non-zero".into(),
            ));
        }
        taurus_core::liveness::check_lease_margin(
            s.lease_timeout.as_millis() as u64,
            s.agent_ttl.as_millis() as u64,
            MAX_CLOCK_DRIFT_PPM,
            KILL_GRACE_MS,
        )
        .map_err(|e| MasterError::Config(format!("scheduler.agent_ttl: {e}")))?;
        if self.batch.max_tasks == 0 || self.batch.max_in_flight == 0 {
            return Err(MasterError::Config(
                "batch: max_tasks and max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
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
        if addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
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

/// `humantime` strings ("50ms", "2s") for durations in TOML.
mod humantime_serde_compat {
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
        let c = MasterConfig {
            peers: parse_peers("2=127.0.0.1:1").expect("parses"),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("peers"));
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
}
