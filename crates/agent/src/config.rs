//! Agent configuration: defaults < TOML file < `TAURUS_*` environment < command-line flags.
//!
//! As for masters, the CLI resolves the last two and overlays them with [`AgentConfig::overlay`].
//! Values the machine knows (host name, cores, memory, free disk) are left `None` in the file
//! and filled in by [`AgentConfig::resolve`], which also checks everything and names the
//! offending key.
//!
//! ```toml
//! id = "worker-7"                 # default: the host name
//! masters = ["10.0.0.1:7101", "10.0.0.2:7101", "http://10.0.0.3:7101"]
//! work_dir = "/var/lib/taurus-agent"   # default: ./taurus-agent-<id>
//! cpu_millis = 8000               # default: cores x 1000
//! memory_mb = 16384               # default: MemTotal
//! disk_mb = 100000                # default: free space of work_dir
//! max_tasks = 64
//! pool = "batch"
//! heartbeat_interval = "1s"
//! lease_timeout = "6s"            # must stay below the masters' agent_ttl
//! drain_timeout = "30s"           # on shutdown: running tasks may finish for this long (0: kill at once)
//! [labels]
//! zone = "eu-1"
//! [exec]                          # optional: how tasks run (see `sandbox::ExecConfig`)
//! dynamic_uids = "61184-65519"    # root agents: a uid of its own per task (or user = "nobody")
//! [tls]                           # optional: mutual TLS with the masters (all three files)
//! ca_file = "/etc/taurus/ca.crt"
//! cert_file = "/etc/taurus/agent-worker-7.crt"
//! key_file = "/etc/taurus/agent-worker-7.key"
//! [http]                          # optional: /metrics and /healthz (no TLS, no authentication)
//! listen = "127.0.0.1:9201"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use taurus_core::validate;
use taurus_protocol::tls::TlsFiles;

use crate::error::AgentError;
use crate::machine;

/// Default [`AgentConfig::drain_timeout`]: long enough for short tasks to finish on a restart.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The masters' default `agent_ttl`: how long the leader waits without a heartbeat before it
/// declares an agent down and gives its tasks new attempts.
pub const DEFAULT_MASTERS_AGENT_TTL: Duration = Duration::from_secs(10);

/// Default `rpc_timeout`, unless a third of `lease_timeout` is shorter.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest encoded size of one `ReportTaskStatus` request, below tonic's default 4 MiB limit
/// on decoded messages. A batch holds at least one report whatever its size.
pub const MAX_REPORT_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Everything an agent needs to start. Every key is optional in TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This agent's id (`[A-Za-z0-9._:-]`, at most 128 bytes). Default: the host name. Two
    /// agents must never share an id: registering with it retires the other one's epoch.
    pub id: Option<String>,
    /// Where the agent runs, shown to operators. Default: the host name.
    pub address: Option<String>,
    /// Every master, as `host:port` or `http://host:port`. The agent talks to any of them.
    pub masters: Vec<String>,
    /// Directory for per-task working directories and the running-process-group file.
    /// Default: `./taurus-agent-<id>`.
    pub work_dir: Option<PathBuf>,
    /// CPU offered, in thousandths of a core. Default: available cores x 1000.
    pub cpu_millis: Option<u32>,
    /// Memory offered, in MiB. Default: `MemTotal` of `/proc/meminfo`.
    pub memory_mb: Option<u64>,
    /// Disk offered, in MiB. Default: free space of the file system holding `work_dir`.
    pub disk_mb: Option<u64>,
    /// Most tasks running at once (1 ..= 100000). Default 64.
    pub max_tasks: u32,
    /// Labels the scheduler matches task constraints against.
    pub labels: BTreeMap<String, String>,
    /// Pool this agent serves; empty is the default pool.
    pub pool: String,
    /// Period of heartbeats. Default 1 s. At most `lease_timeout / 2`.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// The agent fences itself (kills every task and forgets it) when no heartbeat sent in the
    /// last `lease_timeout` has been acknowledged. Default 6 s. **Safety:** must be below the
    /// masters' `agent_ttl` by a margin covering clock-rate drift and the time a kill takes;
    /// see `masters_agent_ttl`.
    #[serde(with = "duration_str")]
    pub lease_timeout: Duration,
    /// The masters' `agent_ttl`, only used to check `lease_timeout <= 0.9 * masters_agent_ttl`.
    /// Default 10 s (the masters' default).
    #[serde(with = "duration_str")]
    pub masters_agent_ttl: Duration,
    /// Limit on establishing a connection to one master. Default 1 s.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// Limit on one call to one master before the next master is tried. Must be below
    /// `lease_timeout`. Default: 2 s, or `lease_timeout / 3` when that is shorter.
    #[serde(with = "opt_duration_str", skip_serializing_if = "Option::is_none")]
    pub rpc_timeout: Option<Duration>,
    /// Most reports in one `ReportTaskStatus` call. Default 1000.
    pub report_batch_max: usize,
    /// First back-off before a failed report batch is sent again (doubling, full jitter).
    /// Default 50 ms.
    #[serde(with = "duration_str")]
    pub report_backoff_min: Duration,
    /// Largest back-off between report retries. Default 1 s.
    #[serde(with = "duration_str")]
    pub report_backoff_max: Duration,
    /// On shutdown, how long the agent keeps trying to deliver unacknowledged reports.
    /// Default 5 s.
    #[serde(with = "duration_str")]
    pub report_flush_timeout: Duration,
    /// Bytes of stdout and of stderr kept per task (the last ones). Default and maximum 16 KiB.
    pub output_tail_bytes: usize,
    /// When a task times out or is killed at shutdown, time between SIGTERM and SIGKILL to its
    /// process group. 0 sends SIGKILL at once. Default 2 s. Fencing kills (lease expired,
    /// attempt stopped or stale, re-registration) always use SIGKILL at once.
    #[serde(with = "duration_str")]
    pub kill_grace: Duration,
    /// On shutdown (SIGTERM, Ctrl-C, or `taurus agent drain --exit` without `--deadline`), how
    /// long running tasks may go on before they are killed (and reported `killed`). The agent
    /// tells the masters it is draining first, so it gets no new work meanwhile. 0 kills at
    /// once. Default 30 s.
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    /// How tasks run: user, `PATH`, limits (`[exec]`; see [`crate::sandbox::ExecConfig`]).
    pub exec: crate::sandbox::ExecConfig,
    /// Log format and filter (`[log]`: `format = "human" | "json"`, `level = "info"`).
    pub log: taurus_protocol::trace::LogConfig,
    /// Mutual TLS with the masters (`[tls]` with `ca_file`, `cert_file`, `key_file`: all three
    /// or none). The agent then dials `https://`, trusts only that CA, checks each master's
    /// certificate names the host dialled, and presents its own certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Allow talking to masters on non-loopback addresses without TLS (task commands, outputs
    /// and tokens then cross the network in clear text, and anyone can pose as a master). A
    /// warning is logged at every start.
    pub insecure: bool,
    /// A file holding this agent's join token (an `agent`-role token bound to its id, from
    /// `taurus acl token create --role agent --agent ID`), for masters with authentication on
    /// and no agent certificate. Keep it mode 0600.
    pub token_file: Option<PathBuf>,
    /// The join token itself (from `--token` / `TAURUS_AGENT_TOKEN`; never from the file, so
    /// it is not written into configuration files). Wins over `token_file`.
    #[serde(skip)]
    pub token: Option<String>,
    /// The HTTP port (`[http]`): Prometheus metrics and health.
    pub http: HttpConfig,
}

/// `[http]`: the port serving `/metrics` and `/healthz`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve HTTP on, e.g. `127.0.0.1:9201`. Absent (the default): no HTTP port.
    /// Served without TLS or authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: None,
            address: None,
            masters: Vec::new(),
            work_dir: None,
            cpu_millis: None,
            memory_mb: None,
            disk_mb: None,
            max_tasks: 64,
            labels: BTreeMap::new(),
            pool: String::new(),
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(6),
            masters_agent_ttl: DEFAULT_MASTERS_AGENT_TTL,
            connect_timeout: Duration::from_secs(1),
            rpc_timeout: None,
            report_batch_max: 1000,
            report_backoff_min: Duration::from_millis(50),
            report_backoff_max: Duration::from_secs(1),
            report_flush_timeout: Duration::from_secs(5),
            output_tail_bytes: validate::MAX_OUTPUT_TAIL,
            kill_grace: Duration::from_secs(2),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            exec: crate::sandbox::ExecConfig::default(),
            log: taurus_protocol::trace::LogConfig::default(),
            tls: None,
            insecure: false,
            token_file: None,
            token: None,
            http: HttpConfig::default(),
        }
    }
}

/// Values given on the command line or in `TAURUS_*` variables; `None` = not given.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub id: Option<String>,
    pub address: Option<String>,
    pub masters: Option<Vec<String>>,
    pub work_dir: Option<PathBuf>,
    pub cpu_millis: Option<u32>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub max_tasks: Option<u32>,
    pub labels: Option<BTreeMap<String, String>>,
    pub pool: Option<String>,
    pub drain_timeout: Option<Duration>,
    /// `tls.ca_file`, `tls.cert_file`, `tls.key_file`, each replacing the file's value.
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `http.listen`.
    pub http_listen: Option<SocketAddr>,
}

/// A checked configuration with every default filled in: what [`crate::run`] works from.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    pub id: String,
    pub address: String,
    /// Normalised `http://host:port` URIs, in the order given.
    pub masters: Vec<String>,
    /// Absolute.
    pub work_dir: PathBuf,
    pub cpu_millis: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub max_tasks: u32,
    pub labels: BTreeMap<String, String>,
    pub pool: String,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
    pub connect_timeout: Duration,
    pub rpc_timeout: Duration,
    pub report_batch_max: usize,
    pub report_backoff_min: Duration,
    pub report_backoff_max: Duration,
    pub report_flush_timeout: Duration,
    pub output_tail_bytes: usize,
    pub kill_grace: Duration,
    pub drain_timeout: Duration,
    /// The program each task runs under, as `PROGRAM agent supervise -- COMMAND...` (see
    /// [`crate::supervisor`]): the agent's own binary, set by `taurus agent start`. `None` runs
    /// commands directly, which leaves a task's background processes running when the agent
    /// is SIGKILLed (until it starts again) and every process running while it is paused.
    pub supervisor: Option<PathBuf>,
    /// How tasks run: user, `PATH`, limits (checked: a user change needs a root agent).
    pub exec: crate::sandbox::ExecSettings,
    /// Mutual TLS with the masters (then `masters` are `https://` URIs); `None`: plain HTTP/2.
    pub tls: Option<TlsFiles>,
    /// Remote masters without TLS, allowed by `insecure`: warned about at every start.
    pub insecure_remote: bool,
    /// The join token sent on every call, if any.
    pub token: Option<String>,
    /// Where to serve `/metrics` and `/healthz`; `None`: nowhere.
    pub http_listen: Option<SocketAddr>,
}

impl AgentConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, AgentError> {
        toml::from_str(text).map_err(|e| AgentError::Config(e.to_string()))
    }

    /// Applies flags/env on top of this (file or default) configuration.
    pub fn overlay(mut self, o: Overrides) -> Self {
        if let Some(v) = o.id {
            self.id = Some(v);
        }
        if let Some(v) = o.address {
            self.address = Some(v);
        }
        if let Some(v) = o.masters {
            self.masters = v;
        }
        if let Some(v) = o.work_dir {
            self.work_dir = Some(v);
        }
        if let Some(v) = o.cpu_millis {
            self.cpu_millis = Some(v);
        }
        if let Some(v) = o.memory_mb {
            self.memory_mb = Some(v);
        }
        if let Some(v) = o.disk_mb {
            self.disk_mb = Some(v);
        }
        if let Some(v) = o.max_tasks {
            self.max_tasks = v;
        }
        if let Some(v) = o.labels {
            self.labels = v;
        }
        if let Some(v) = o.pool {
            self.pool = v;
        }
        if let Some(v) = o.drain_timeout {
            self.drain_timeout = v;
        }
        if let Some(v) = o.http_listen {
            self.http.listen = Some(v);
        }
        self.tls = TlsFiles::overlay(self.tls.take(), o.tls_ca, o.tls_cert, o.tls_key);
        self
    }

    /// Fills in what the machine knows and checks everything, naming the offending key.
    pub fn resolve(&self) -> Result<ResolvedConfig, AgentError> {
        let bad = |key: &str, why: String| AgentError::Config(format!("{key}: {why}"));
        let id = match &self.id {
            Some(id) => id.clone(),
            None => machine::hostname()
                .ok_or_else(|| bad("id", "not set and the host name cannot be read".into()))?,
        };
        validate::validate_id(&id).map_err(|e| bad("id", format!("{id:?}: {e}")))?;
        let address = self
            .address
            .clone()
            .or_else(machine::hostname)
            .unwrap_or_else(|| id.clone());

        if self.masters.is_empty() {
            return Err(bad("masters", "at least one master address is needed".into()));
        }
        if let Some(key) = self.tls.as_ref().and_then(TlsFiles::missing_key) {
            return Err(bad(
                &format!("tls.{key}"),
                "missing (the [tls] section needs ca_file, cert_file and key_file)".into(),
            ));
        }
        let mut masters = Vec::with_capacity(self.masters.len());
        for (i, m) in self.masters.iter().enumerate() {
            let uri = taurus_client::normalize_address_for(m, self.tls.is_some())
                .map_err(|e| bad(&format!("masters[{i}]"), e))?;
            if masters.contains(&uri) {
                return Err(bad(&format!("masters[{i}]"), format!("{m:?} given twice")));
            }
            masters.push(uri);
        }
        if self.tls.is_none()
            && !self.insecure
            && let Some((i, m)) = self
                .masters
                .iter()
                .enumerate()
                .find(|(_, m)| !is_loopback_address(m))
        {
            return Err(bad(
                &format!("masters[{i}]"),
                format!(
                    "{m:?} is not a loopback address: talking to it needs TLS ([tls] or \
                     --tls-ca/--tls-cert/--tls-key), or --insecure to accept clear text and \
                     unauthenticated masters"
                ),
            ));
        }

        let work_dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("taurus-agent-{id}")));
        let work_dir = std::path::absolute(&work_dir)
            .map_err(|e| bad("work_dir", format!("{}: {e}", work_dir.display())))?;

        let cpu_millis = self.cpu_millis.unwrap_or_else(machine::cpu_millis);
        let memory_mb = match self.memory_mb {
            Some(v) => v,
            None => machine::memory_mb()
                .ok_or_else(|| bad("memory_mb", "not set and /proc/meminfo cannot be read".into()))?,
        };
        let disk_mb = match self.disk_mb {
            Some(v) => v,
            None => machine::disk_free_mb(&work_dir).ok_or_else(|| {
                bad(
                    "disk_mb",
                    format!(
                        "not set and the free space of {} cannot be read",
                        work_dir.display()
                    ),
                )
            })?,
        };
        if cpu_millis > validate::MAX_CPU_MILLIS {
            return Err(bad("cpu_millis", format!("at most {}", validate::MAX_CPU_MILLIS)));
        }
        if memory_mb > validate::MAX_MB || disk_mb > validate::MAX_MB {
            return Err(bad("memory_mb/disk_mb", format!("at most {}", validate::MAX_MB)));
        }
        if self.max_tasks == 0 || self.max_tasks > validate::MAX_AGENT_TASKS {
            return Err(bad(
                "max_tasks",
                format!("must be from 1 to {}", validate::MAX_AGENT_TASKS),
            ));
        }
        if self.labels.len() > validate::MAX_LABELS {
            return Err(bad("labels", format!("at most {} labels", validate::MAX_LABELS)));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > validate::MAX_LABEL_LEN || v.len() > validate::MAX_LABEL_LEN {
                return Err(bad(
                    &format!("labels.{k}"),
                    format!(
                        "keys must be 1 to {0} bytes, values at most {0}",
                        validate::MAX_LABEL_LEN
                    ),
                ));
            }
        }
        if self.pool.len() > validate::MAX_POOL_LEN {
            return Err(bad(
                "pool",
                format!("longer than {} bytes", validate::MAX_POOL_LEN),
            ));
        }

        // Checked: a duration near `u64::MAX` seconds is an error, not a panic (found by fuzzing).
        if self.heartbeat_interval.is_zero()
            || self
                .heartbeat_interval
                .checked_mul(2)
                .is_none_or(|d| d > self.lease_timeout)
        {
            return Err(bad(
                "heartbeat_interval",
                "must be non-zero and at most lease_timeout / 2".into(),
            ));
        }
        // `mul_f64` panics when the product is no `Duration`; this is the same product, checked.
        let fenced_after = Duration::try_from_secs_f64(self.lease_timeout.as_secs_f64() * (10.0 / 9.0));
        if fenced_after.is_err() || fenced_after.is_ok_and(|d| d > self.masters_agent_ttl) {
            return Err(bad(
                "lease_timeout",
                format!(
                    "must be at most 0.9 x masters_agent_ttl ({}) so that the agent fences itself \
                     before the masters give its tasks to another agent",
                    humantime::format_duration(self.masters_agent_ttl)
                ),
            ));
        }
        let rpc_timeout = self
            .rpc_timeout
            .unwrap_or_else(|| DEFAULT_RPC_TIMEOUT.min(self.lease_timeout / 3));
        if rpc_timeout.is_zero() || rpc_timeout >= self.lease_timeout {
            return Err(bad(
                "rpc_timeout",
                "must be non-zero and below lease_timeout".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(bad("connect_timeout", "must be non-zero".into()));
        }
        if self.report_batch_max == 0 {
            return Err(bad("report_batch_max", "must be at least 1".into()));
        }
        if self.report_backoff_min.is_zero() || self.report_backoff_min > self.report_backoff_max {
            return Err(bad(
                "report_backoff_min",
                "must be non-zero and at most report_backoff_max".into(),
            ));
        }
        if self.output_tail_bytes > validate::MAX_OUTPUT_TAIL {
            return Err(bad(
                "output_tail_bytes",
                format!("at most {} (the masters keep no more)", validate::MAX_OUTPUT_TAIL),
            ));
        }

        Ok(ResolvedConfig {
            id,
            address,
            masters,
            work_dir,
            cpu_millis,
            memory_mb,
            disk_mb,
            max_tasks: self.max_tasks,
            labels: self.labels.clone(),
            pool: self.pool.clone(),
            heartbeat_interval: self.heartbeat_interval,
            lease_timeout: self.lease_timeout,
            connect_timeout: self.connect_timeout,
            rpc_timeout,
            report_batch_max: self.report_batch_max,
            report_backoff_min: self.report_backoff_min,
            report_backoff_max: self.report_backoff_max,
            report_flush_timeout: self.report_flush_timeout,
            output_tail_bytes: self.output_tail_bytes,
            kill_grace: self.kill_grace,
            drain_timeout: self.drain_timeout,
            supervisor: None,
            exec: self.exec.resolve()?,
            tls: self.tls.clone(),
            insecure_remote: self.tls.is_none() && !self.masters.iter().all(|m| is_loopback_address(m)),
            token: self.join_token()?,
            http_listen: self.http.listen,
        })
    }
}

/// Parses `zone=eu-1,disk=ssd` into a label map, naming the bad element.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, AgentError> {
    let mut labels = BTreeMap::new();
    for (i, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| AgentError::Config(format!("labels[{i}]: expected KEY=VALUE, got {part:?}")))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(AgentError::Config(format!("labels[{i}]: empty key")));
        }
        if labels.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(AgentError::Config(format!("labels[{i}]: key {k:?} given twice")));
        }
    }
    Ok(labels)
}

/// [`duration_str`] for an optional duration (absent: `None`).
mod opt_duration_str {
    use std::time::Duration;

    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// `humantime` strings ("50ms", "2s") for durations in TOML.
mod duration_str {
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

impl AgentConfig {
    /// `token`, else the trimmed content of `token_file` (an error names the file).
    fn join_token(&self) -> Result<Option<String>, AgentError> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Config(format!("token_file: cannot read {}: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(AgentError::Config(format!(
                "token_file: {} is empty",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }
}

/// Whether a master address (`host:port`, optionally with a scheme) names this machine:
/// `localhost` or a loopback IP. Anything else (a name that might resolve anywhere included) is
/// treated as remote.
pub fn is_loopback_address(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_resolves() {
        let c = AgentConfig::from_toml(include_str!("../../../config/agent.toml")).expect("parses");
        assert_eq!(c.masters.len(), 3);
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
        let r = c.resolve().expect("resolves");
        assert_eq!(r.id, "worker-1");
        assert_eq!(r.max_tasks, 64);
    }

    fn minimal() -> AgentConfig {
        AgentConfig::from_toml("id = \"a1\"\nmasters = [\"127.0.0.1:7101\"]").expect("parses")
    }

    #[test]
    fn defaults_come_from_the_machine() {
        let r = minimal().resolve().expect("resolves");
        assert_eq!(r.id, "a1");
        assert_eq!(r.masters, vec!["http://127.0.0.1:7101".to_string()]);
        assert!(r.work_dir.is_absolute());
        assert!(r.work_dir.ends_with("taurus-agent-a1"));
        assert_eq!(r.cpu_millis, machine::cpu_millis());
        assert!(r.memory_mb > 0);
        assert_eq!(r.max_tasks, 64);
        assert_eq!(r.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(r.lease_timeout, Duration::from_secs(6));
        assert_eq!(r.output_tail_bytes, 16 * 1024);
        assert_eq!(r.drain_timeout, Duration::from_secs(30));
        assert_eq!(r.rpc_timeout, Duration::from_secs(2));
        assert_eq!(r.supervisor, None, "only `taurus agent start` knows its binary");
        let no_id = AgentConfig {
            masters: vec!["localhost:1".into()],
            ..Default::default()
        };
        assert_eq!(
            no_id.resolve().expect("resolves").id,
            machine::hostname().expect("hostname")
        );
    }

    #[test]
    fn every_key_parses_and_flags_override_the_file() {
        let text = r#"
            id = "w-7"
            address = "10.0.0.7"
            masters = ["a:1", "http://b:2"]
            work_dir = "/tmp/taurus-w7"
            cpu_millis = 4000
            memory_mb = 2048
            disk_mb = 100
            max_tasks = 8
            pool = "gpu"
            heartbeat_interval = "200ms"
            lease_timeout = "3s"
            masters_agent_ttl = "5s"
            connect_timeout = "500ms"
            rpc_timeout = "1s"
            report_batch_max = 10
            report_backoff_min = "10ms"
            report_backoff_max = "100ms"
            report_flush_timeout = "1s"
            output_tail_bytes = 1024
            kill_grace = "0s"
            drain_timeout = "30s"
            insecure = true
            [labels]
            zone = "eu-1"
        "#;
        let c = AgentConfig::from_toml(text).expect("parses");
        let r = c.clone().resolve().expect("resolves");
        assert_eq!(r.masters, vec!["http://a:1", "http://b:2"]);
        assert_eq!(r.labels["zone"], "eu-1");
        assert_eq!(r.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(r.drain_timeout, Duration::from_secs(30));
        assert_eq!((r.cpu_millis, r.memory_mb, r.disk_mb), (4000, 2048, 100));
        assert_eq!(r.rpc_timeout, Duration::from_secs(1));
        let text = toml::to_string(&c).expect("serializes");
        assert_eq!(AgentConfig::from_toml(&text).expect("parses back"), c);
        let merged = c.overlay(Overrides {
            id: Some("w-8".into()),
            max_tasks: Some(2),
            labels: Some(parse_labels("zone=us-2,disk=ssd").expect("parses")),
            ..Default::default()
        });
        let r = merged.resolve().expect("resolves");
        assert_eq!(r.id, "w-8");
        assert_eq!(r.max_tasks, 2);
        assert_eq!(r.pool, "gpu", "not overridden: the file's value stays");
        assert_eq!(r.labels.len(), 2);
    }

    #[test]
    fn loopback_addresses_are_told_from_remote_ones() {
        for local in [
            "127.0.0.1:7101",
            "http://127.0.0.1:7101",
            "localhost:1",
            "[::1]:7101",
            "127.3.4.5:1",
        ] {
            assert!(is_loopback_address(local), "{local}");
        }
        for remote in [
            "10.0.0.1:7101",
            "https://master-1:7101",
            "[2001:db8::1]:1",
            "0.0.0.0:1",
        ] {
            assert!(!is_loopback_address(remote), "{remote}");
        }
    }

    #[test]
    fn remote_masters_need_tls_or_insecure() {
        let remote = AgentConfig {
            id: Some("a1".into()),
            masters: vec!["127.0.0.1:7101".into(), "10.1.2.3:7101".into()],
            ..Default::default()
        };
        let e = remote.clone().resolve().expect_err("refused").to_string();
        assert!(e.contains("masters[1]") && e.contains("--insecure"), "{e}");
        let insecure = AgentConfig {
            insecure: true,
            ..remote
        };
        assert!(insecure.resolve().is_ok());
        let local = AgentConfig {
            id: Some("a1".into()),
            masters: vec!["127.0.0.1:7101".into()],
            ..Default::default()
        };
        assert!(local.resolve().is_ok());
    }

    #[test]
    fn tls_needs_all_three_files_and_dials_https() {
        let c = minimal().overlay(Overrides {
            tls_ca: Some("ca.crt".into()),
            tls_cert: Some("a1.crt".into()),
            ..Default::default()
        });
        let e = c.resolve().expect_err("key missing").to_string();
        assert!(e.contains("tls.key_file"), "{e}");
        let c = c.overlay(Overrides {
            tls_key: Some("a1.key".into()),
            ..Default::default()
        });
        let r = c.resolve().expect("resolves");
        assert_eq!(r.masters, ["https://127.0.0.1:7101"]);
        assert_eq!(r.tls.expect("tls").key_file, PathBuf::from("a1.key"));
        assert_eq!(minimal().resolve().expect("resolves").tls, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(AgentConfig::from_toml("idd = 1").is_err());
        assert!(AgentConfig::from_toml("lease_timeout = \"soon\"").is_err());
        let cases: Vec<(AgentConfig, &str)> = vec![
            (
                AgentConfig {
                    masters: vec![],
                    ..minimal()
                },
                "masters",
            ),
            (
                AgentConfig {
                    masters: vec!["nope".into()],
                    ..minimal()
                },
                "masters[0]",
            ),
            (
                AgentConfig {
                    masters: vec!["a:1".into(), "http://a:1".into()],
                    ..minimal()
                },
                "twice",
            ),
            (
                AgentConfig {
                    id: Some("a b".into()),
                    ..minimal()
                },
                "id",
            ),
            (
                AgentConfig {
                    max_tasks: 0,
                    ..minimal()
                },
                "max_tasks",
            ),
            (
                AgentConfig {
                    lease_timeout: Duration::from_secs(10),
                    ..minimal()
                },
                "lease_timeout",
            ),
            (
                AgentConfig {
                    heartbeat_interval: Duration::from_secs(4),
                    ..minimal()
                },
                "heartbeat_interval",
            ),
            (
                AgentConfig {
                    output_tail_bytes: 1 << 20,
                    ..minimal()
                },
                "output_tail_bytes",
            ),
            (
                AgentConfig {
                    rpc_timeout: Some(Duration::from_secs(6)),
                    ..minimal()
                },
                "rpc_timeout",
            ),
            (
                AgentConfig {
                    rpc_timeout: Some(Duration::ZERO),
                    ..minimal()
                },
                "rpc_timeout",
            ),
        ];
        for (c, key) in cases {
            let e = c.resolve().expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn the_default_rpc_timeout_stays_below_a_short_lease() {
        let short = AgentConfig {
            heartbeat_interval: Duration::from_millis(300),
            lease_timeout: Duration::from_millis(1500),
            ..minimal()
        };
        let r = short
            .clone()
            .resolve()
            .expect("a 1.5 s lease needs no explicit rpc_timeout");
        assert_eq!(r.rpc_timeout, Duration::from_millis(500));
        let explicit = AgentConfig {
            rpc_timeout: Some(Duration::from_secs(1)),
            ..short
        };
        assert_eq!(
            explicit.resolve().expect("resolves").rpc_timeout,
            Duration::from_secs(1),
            "an explicit value is kept"
        );
        let long = AgentConfig {
            lease_timeout: Duration::from_millis(7500),
            ..minimal()
        };
        assert_eq!(long.resolve().expect("resolves").rpc_timeout, DEFAULT_RPC_TIMEOUT);
    }

    #[test]
    fn label_lists_parse_and_errors_name_the_element() {
        let l = parse_labels("a=1, b = 2,").expect("parses");
        assert_eq!(l["b"], "2");
        for (bad, what) in [("a=1,x", "labels[1]"), ("=1", "empty key"), ("a=1,a=2", "twice")] {
            let e = parse_labels(bad).expect_err(bad).to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }
}
