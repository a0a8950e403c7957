//! Command-line syntax (clap derive): `taurus NOUN VERB [OPTIONS]`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use taurus_core::TaskState;
use taurus_core::schedule::PolicyKind;

/// Taurus: a Raft-replicated distributed task scheduler.
#[derive(Debug, Parser)]
#[command(name = "taurus", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    /// Masters to talk to, comma-separated HOST:PORT (any of them will do; all are tried).
    #[arg(
        long,
        global = true,
        env = "TAURUS_MASTERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    pub masters: Vec<String>,
    /// Overall deadline of each request, retries across masters included. Give it before the
    /// command (`taurus --timeout 2s task get ID`): after `task submit`, --timeout is the task's.
    #[arg(long, env = "TAURUS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate (PEM) the masters' certificates must be signed by. With --cert and
    /// --key, every command talks to the masters over mutual TLS (see `taurus tls`).
    #[arg(long, global = true, env = "TAURUS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), signed by the CA.
    #[arg(long, global = true, env = "TAURUS_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, global = true, env = "TAURUS_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Bearer token sent on every call (from `taurus acl bootstrap` or `acl token create`).
    #[arg(
        long,
        global = true,
        env = "TAURUS_TOKEN",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (its first line), for where the secret must not be on a
    /// command line or in the environment (containers, systemd credentials). --token wins.
    #[arg(long, global = true, env = "TAURUS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master.
    #[command(subcommand)]
    Master(MasterCmd),
    /// Submit, inspect, cancel and wait for tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Inspect and change the cluster's membership and leadership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Run an agent; list, inspect, drain and undrain agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Measure the cluster.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Start a local 3-master cluster, submit demo tasks, and keep it running until Ctrl-C.
    Dev(DevArgs),
    /// Make a CA and certificates for mutual TLS.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Access control: bootstrap, tokens, whoami.
    #[command(subcommand)]
    Acl(AclCmd),
    /// Ask one master whether it is serving (gRPC health check). Exit status: 0 serving,
    /// 1 answered but not serving, 2 no answer.
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The master to ask, HOST:PORT (default: the first of --masters). Only this one is asked,
    /// once, within --timeout.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// The gRPC service to ask about, e.g. taurus.v1.TaskService (default: the server as a
    /// whole).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub service: String,
    /// Ask the HTTP port (--http-listen) of a master or an agent instead: GET /healthz, over
    /// plain HTTP, must answer 200. Agents have no gRPC port, so this is their health check.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["addr", "service"])]
    pub http: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// Create the cluster's first admin token (once; needs no credentials). Prints the secret.
    Bootstrap {
        /// Name of the admin token.
        #[arg(long, default_value = "bootstrap")]
        name: String,
        /// Write the secret to FILE (mode 0600) instead of printing it. If FILE already holds
        /// a secret, do nothing and succeed: provisioning may run this at every start.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Create, list and revoke tokens (admin).
    #[command(subcommand)]
    Token(AclTokenCmd),
    /// Show who the masters take this caller for.
    Whoami,
}

#[derive(Debug, Subcommand)]
pub enum AclTokenCmd {
    /// Create a token; its secret is printed once and never shown again.
    Create {
        /// Who or what the token is for; tasks record it as their submitter.
        #[arg(long)]
        name: String,
        /// read, submit, operator, admin, or agent (with --agent).
        #[arg(long)]
        role: String,
        /// For the agent role: the agent id the token may act as.
        #[arg(long)]
        agent: Option<String>,
        /// Lifetime, e.g. 30d or 12h (default: never expires).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Tasks per second it may submit to the cluster, charged on the leader (default: the masters' default).
        #[arg(long)]
        rate: Option<u32>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id (acl-N); it stops working on every master.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(TlsCaCmd),
    /// Certificates of masters, agents and clients, signed by the CA.
    #[command(subcommand)]
    Cert(TlsCertCmd),
    /// Make whatever is missing of a whole cluster's files in one go: the CA (unless DIR has
    /// one) and a certificate for each --master, --agent and --client NAME. Existing files are
    /// kept, so provisioning (a compose or Kubernetes init step) may run it at every start.
    Init(TlsInitArgs),
}

#[derive(Debug, Args)]
pub struct TlsInitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// A master's name: also a DNS name it is dialled by (repeatable, or comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub master: Vec<String>,
    /// An agent's id (repeatable, or comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub agent: Vec<String>,
    /// A client's name (repeatable, or comma-separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub client: Vec<String>,
    /// Extra subject alternative names of every master: IP addresses or DNS names (repeatable,
    /// or comma-separated).
    #[arg(long, value_name = "IP|DNS", value_delimiter = ',')]
    pub san: Vec<String>,
    /// Days the CA is valid, when one is made.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Days each new certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Debug, Subcommand)]
pub enum TlsCaCmd {
    /// Make a new CA: DIR/ca.crt and DIR/ca.key (keep the key secret: it makes members).
    Create(TlsCaCreateArgs),
}

#[derive(Debug, Args)]
pub struct TlsCaCreateArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "taurus-ca")]
    pub name: String,
    /// Days the CA is valid.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum TlsCertCmd {
    /// Make a certificate and key signed by the CA: DIR/ROLE-NAME.crt and DIR/ROLE-NAME.key.
    Create(TlsCertCreateArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["master", "agent", "client"])))]
pub struct TlsCertCreateArgs {
    /// A master's certificate (server and client): SANs NAME, localhost, 127.0.0.1 and --san.
    #[arg(long, value_name = "NAME")]
    pub master: Option<String>,
    /// An agent's certificate: NAME must be the agent's id.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// A client's (user's or program's) certificate.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Extra subject alternative names of a master: IP addresses or DNS names its peers,
    /// agents and clients dial it by (repeatable, or comma-separated).
    #[arg(long, value_name = "IP|DNS", value_delimiter = ',', requires = "master")]
    pub san: Vec<String>,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The CA certificate (default: DIR/ca.crt).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The CA key (default: DIR/ca.key).
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum MasterCmd {
    /// Run a master until Ctrl-C or SIGTERM. Settings: flags > TAURUS_* env > --config file > defaults.
    Start(MasterStartArgs),
    /// Seed a NEW, empty data dir from a backup (`taurus cluster snapshot save`), with the new
    /// cluster's --peers; run it for every master of the new cluster with the same FILE, then
    /// start them normally. Takes the same settings as `master start` (docs/operations-backup.md).
    Restore(MasterRestoreArgs),
}

#[derive(Debug, Args)]
pub struct MasterRestoreArgs {
    /// The backup file to restore.
    #[arg(long, value_name = "FILE")]
    pub snapshot: PathBuf,
    #[command(flatten)]
    pub master: MasterStartArgs,
}

#[derive(Debug, Args)]
pub struct MasterStartArgs {
    /// TOML configuration file (see config/).
    #[arg(long, env = "TAURUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// This master's id (unique, at least 1).
    #[arg(long, env = "TAURUS_ID")]
    pub id: Option<u64>,
    /// Address to listen on, e.g. 127.0.0.1:7101.
    #[arg(long, env = "TAURUS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address other masters and clients use to reach this one (default: --listen).
    #[arg(long, env = "TAURUS_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Directory of this master's database.
    #[arg(long, env = "TAURUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Every initial master, this one included: 1=127.0.0.1:7101,2=127.0.0.1:7102,...
    #[arg(long, env = "TAURUS_PEERS", value_parser = parse_peer_list)]
    pub peers: Option<BTreeMap<u64, String>>,
    /// Placement policy: greedy, delay-guided, binpack or spread (default: the file's, or greedy).
    #[arg(long, env = "TAURUS_POLICY", value_parser = parse_policy)]
    pub policy: Option<PolicyKind>,
    /// CA certificate (PEM) for mutual TLS (tls.ca_file): clients, agents and peers must
    /// present a certificate it signed. TLS needs all of --tls-ca, --tls-cert and --tls-key.
    #[arg(long, value_name = "FILE", env = "TAURUS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This master's certificate (PEM, tls.cert_file): `taurus tls cert create --master NAME`.
    #[arg(long, value_name = "FILE", env = "TAURUS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, tls.key_file).
    #[arg(long, value_name = "FILE", env = "TAURUS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require authentication on every call (auth.enabled = true): bearer tokens, agent
    /// certificates or join tokens. Bootstrap the first admin token with `taurus acl bootstrap`.
    #[arg(long, env = "TAURUS_AUTH")]
    pub auth: bool,
    /// Allow listening on a non-loopback address without TLS and authentication (insecure =
    /// true). Whoever reaches the port can run commands on every agent; a warning is logged at
    /// every start.
    #[arg(long, env = "TAURUS_INSECURE")]
    pub insecure: bool,
    /// Serve /metrics (Prometheus), /healthz and the status page over HTTP on this address
    /// (http.listen), e.g. 127.0.0.1:9101. Default: no HTTP port. No TLS or authentication.
    #[arg(long, value_name = "ADDR", env = "TAURUS_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Log format: human or json (log.format; default human).
    #[arg(long, env = "TAURUS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What is logged, a RUST_LOG-style filter such as info or info,taurus_master=debug
    /// (log.level). Order: this flag, then RUST_LOG, then the file, then info,openraft=warn.
    #[arg(long, value_name = "FILTER", env = "TAURUS_LOG_LEVEL")]
    pub log_level: Option<String>,
}

fn parse_policy(s: &str) -> Result<PolicyKind, String> {
    PolicyKind::parse(s).ok_or_else(|| {
        format!(
            "unknown policy {s:?}; one of: {}",
            PolicyKind::ALL.map(PolicyKind::as_str).join(", ")
        )
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Submit a task: taurus task submit [OPTIONS] -- COMMAND [ARGS]...
    Submit(SubmitArgs),
    /// Show one task.
    Get {
        id: String,
        /// Read the serving master's state without confirming with the leader (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// List tasks in submission order.
    List(ListArgs),
    /// Cancel a task (a terminal task is left unchanged).
    Cancel {
        id: String,
        /// Why; recorded in the task.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print every change of a task until it is terminal.
    Watch { id: String },
    /// Wait until a task is terminal. Exit status: 0 succeeded, 1 ended otherwise, 2 error.
    Wait { id: String },
    /// Print the output of a task's latest (or given) attempt: stdout, then stderr.
    ///
    /// Agents report an attempt's output once, when the attempt ends, and only its tail: at
    /// most the last 16 KiB of each stream. So a running attempt has no output yet, and
    /// --follow shows output attempt by attempt, not line by line.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    /// This attempt (1 is the first) instead of the latest one.
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    pub attempt: Option<u32>,
    /// Watch the task: print each attempt's output as the attempt ends, and exit when the task
    /// is terminal. Exit status then as `task wait`: 0 succeeded, 1 ended otherwise, 2 error.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only stderr.
    #[arg(long, conflicts_with = "stdout_only")]
    pub stderr_only: bool,
    /// Only stdout.
    #[arg(long)]
    pub stdout_only: bool,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Task id (default: a fresh UUIDv7). Resubmitting an id returns the existing task.
    #[arg(long)]
    pub id: Option<String>,
    /// Human-readable name.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// CPU demand in thousandths of a core.
    #[arg(long, value_name = "MILLIS", default_value_t = 0)]
    pub cpu: u32,
    /// Memory demand in MiB.
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub mem: u64,
    /// Disk demand in MiB.
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub disk: u64,
    /// Execution timeout of each attempt, e.g. 30s or 5m (default: none).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Attempts before the task fails (default 1).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Ids of tasks that must succeed first, comma-separated.
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    pub after: Vec<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// An environment variable of the task, KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// First retry delay, doubled per attempt with jitter (default 1s; 0s retries at once).
    #[arg(long, value_parser = parse_duration)]
    pub backoff: Option<Duration>,
    /// Agent pool the task must run in (default: any).
    #[arg(long, default_value = "")]
    pub pool: String,
    /// An agent label the task requires, KEY=VALUE (repeatable; all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub constraint: Vec<(String, String)>,
    /// Hard deadline after submission, e.g. 10m: not finished by then means timed out.
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these states, comma-separated: pending,assigned,running,succeeded,failed,cancelled,timed_out.
    #[arg(long, value_delimiter = ',', value_parser = parse_state)]
    pub state: Vec<TaskState>,
    /// Tasks per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Follow the pages and list every matching task.
    #[arg(long)]
    pub all: bool,
    /// Start from this page (the next_page_token of an earlier list).
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Read the serving master's state without confirming with the leader (may be stale).
    #[arg(long)]
    pub stale: bool,
    /// Only tasks whose latest attempt is (or was) on this agent. Filtered by this client:
    /// with --agent, --name or --label, pages are read until --limit tasks match (or all
    /// pages with --all).
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// Only tasks whose name contains this (case-sensitive).
    #[arg(long, value_name = "SUBSTRING")]
    pub name: Option<String>,
    /// Only tasks with this label, KEY=VALUE (repeatable; all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
}

impl ListArgs {
    /// Whether any filter is applied by this client rather than by the server.
    pub fn filters_locally(&self) -> bool {
        self.agent.is_some() || self.name.is_some() || !self.label.is_empty()
    }
}

// Parsed once per process: the size of the `start` variant costs nothing worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Run an agent until Ctrl-C or SIGTERM. Settings: flags > TAURUS_AGENT_* env > --config
    /// file > defaults; the masters come from the global --masters (TAURUS_MASTERS).
    Start(AgentStartArgs),
    /// Every registered agent, down ones included, in id order.
    List {
        /// Read the serving master's state without confirming with the leader (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// One agent: resources, labels and the tasks it holds.
    Show {
        id: String,
        /// Read the serving master's state without confirming with the leader (may be stale).
        #[arg(long)]
        stale: bool,
    },
    /// Give an agent no new work; what it runs now runs to the end.
    Drain {
        id: String,
        /// Why; recorded in the agent.
        #[arg(long, default_value = "")]
        reason: String,
        /// Also make the agent exit once drained: it lets running tasks finish (up to
        /// --deadline), kills and reports what is left, and exits 0.
        #[arg(long)]
        exit: bool,
        /// With --exit: how long running tasks may go on, e.g. 5m (at most 7 days). Default:
        /// the agent's own drain_timeout.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "exit")]
        deadline: Option<Duration>,
    },
    /// Let a drained agent take new work again.
    Undrain { id: String },
    /// Internal: how `agent start` runs each task (`taurus agent supervise -- COMMAND...`, its
    /// stdin the agent's control socket). Kills the task when the agent dies or its lease ends.
    #[command(hide = true)]
    Supervise {
        /// The task's command.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
pub struct AgentStartArgs {
    /// TOML configuration file (see config/).
    #[arg(long, value_name = "PATH", env = "TAURUS_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// This agent's id, unique in the cluster (default: the host name).
    #[arg(long, env = "TAURUS_AGENT_ID")]
    pub id: Option<String>,
    /// Where the agent runs, shown to operators (default: the host name).
    #[arg(long, env = "TAURUS_AGENT_ADDRESS")]
    pub address: Option<String>,
    /// CPU offered, in thousandths of a core (default: the available cores x 1000).
    #[arg(long, value_name = "MILLIS", env = "TAURUS_AGENT_CPU")]
    pub cpu: Option<u32>,
    /// Memory offered, in MiB (default: the machine's memory).
    #[arg(long, value_name = "MB", env = "TAURUS_AGENT_MEM")]
    pub mem: Option<u64>,
    /// Disk offered, in MiB (default: the free space where --work-dir is).
    #[arg(long, value_name = "MB", env = "TAURUS_AGENT_DISK")]
    pub disk: Option<u64>,
    /// Most tasks running at once.
    #[arg(
        long,
        value_name = "N",
        env = "TAURUS_AGENT_MAX_TASKS",
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub max_tasks: Option<u32>,
    /// A label task constraints are matched against, KEY=VALUE (repeatable;
    /// TAURUS_AGENT_LABELS takes them comma-separated).
    #[arg(
        long,
        value_name = "KEY=VALUE",
        env = "TAURUS_AGENT_LABELS",
        value_delimiter = ',',
        value_parser = parse_key_value
    )]
    pub label: Vec<(String, String)>,
    /// The pool this agent serves (default: the default pool).
    #[arg(long, env = "TAURUS_AGENT_POOL")]
    pub pool: Option<String>,
    /// Directory of the tasks' working directories (default: ./taurus-agent-ID).
    #[arg(long, value_name = "PATH", env = "TAURUS_AGENT_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Period of heartbeats, e.g. 1s.
    #[arg(
        long,
        value_name = "DURATION",
        env = "TAURUS_AGENT_HEARTBEAT_INTERVAL",
        value_parser = parse_duration
    )]
    pub heartbeat_interval: Option<Duration>,
    /// The agent kills its tasks when no heartbeat sent this long ago has been acknowledged,
    /// e.g. 6s; must stay below the masters' agent_ttl.
    #[arg(
        long,
        value_name = "DURATION",
        env = "TAURUS_AGENT_LEASE_TIMEOUT",
        value_parser = parse_duration
    )]
    pub lease_timeout: Option<Duration>,
    /// On shutdown (SIGTERM, Ctrl-C, `agent drain --exit`), how long running tasks may go on
    /// before they are killed, e.g. 5m; 0s kills at once. Default 30s.
    #[arg(
        long,
        value_name = "DURATION",
        env = "TAURUS_AGENT_DRAIN_TIMEOUT",
        value_parser = parse_duration
    )]
    pub drain_timeout: Option<Duration>,
    /// CA certificate (PEM) the masters' certificates must be signed by (tls.ca_file). TLS
    /// needs all of --tls-ca, --tls-cert and --tls-key.
    #[arg(long, value_name = "FILE", env = "TAURUS_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This agent's certificate (PEM, tls.cert_file): `taurus tls cert create --agent ID`.
    #[arg(long, value_name = "FILE", env = "TAURUS_AGENT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, tls.key_file).
    #[arg(long, value_name = "FILE", env = "TAURUS_AGENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Allow masters on non-loopback addresses without TLS (insecure = true): commands,
    /// outputs and tokens cross the network in clear text. A warning is logged at every start.
    #[arg(long, env = "TAURUS_AGENT_INSECURE")]
    pub insecure: bool,
    /// Serve /metrics (Prometheus) and /healthz over HTTP on this address (http.listen), e.g.
    /// 127.0.0.1:9201. Default: no HTTP port. No TLS or authentication.
    #[arg(long, value_name = "ADDR", env = "TAURUS_AGENT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Join token (an agent-role token bound to this agent's id) for masters with
    /// authentication on, when the agent has no certificate. Prefer the environment variable or
    /// token_file in the configuration: command lines are visible to other users.
    #[arg(long, env = "TAURUS_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log format: human or json (log.format; default human).
    #[arg(long, env = "TAURUS_AGENT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// What is logged, a RUST_LOG-style filter such as info or info,taurus_agent=debug
    /// (log.level). Order: this flag, then RUST_LOG, then the file, then info,openraft=warn.
    #[arg(long, value_name = "FILTER", env = "TAURUS_AGENT_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Members, roles, terms and log indexes, then a utilisation, queue and anomaly summary.
    Status,
    /// Current anomalies (agents flapping or silent, utilisation persistently too high or too
    /// low, tasks stuck past their deadline, a growing queue, lagging masters) with suggested
    /// actions, as the leader sees them. Exit status 0 whatever is found, unless --fail-on.
    Anomalies {
        /// Exit with status 1 when an anomaly of at least this severity is present: info,
        /// warning or critical.
        #[arg(long, value_name = "SEVERITY", value_parser = ["info", "warning", "critical"])]
        fail_on: Option<String>,
        /// The master called answers with its own view instead of the leader's (no heartbeat
        /// checks; works without a leader).
        #[arg(long)]
        local: bool,
    },
    /// Add a master (as a learner, promoted to voter once it has caught up).
    AddMaster {
        #[arg(long)]
        id: u64,
        /// Its address, HOST:PORT.
        #[arg(long)]
        addr: String,
    },
    /// Remove a master.
    RemoveMaster {
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to another master.
    TransferLeader {
        #[arg(long)]
        to: u64,
    },
    /// Back up the whole cluster state to a file; check backup files (docs/operations-backup.md).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save a backup of every task, agent and token (hashes only) to FILE (operator role). It
    /// is written to FILE.tmp, synced and renamed, then checked; prints its log index, size and
    /// SHA-256. Restore it with `taurus master restore --snapshot FILE`.
    Save {
        /// Where to write the backup.
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Verify a backup file (checksum, format, the state loads) and print what it holds.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Submit no-op tasks as fast as the cluster acknowledges them.
    Submit(BenchSubmitArgs),
    /// Submit no-op tasks, wait until the cluster's agents have run them all, and report
    /// throughput and submit-to-start latency.
    ///
    /// The tasks run `taurus:noop`, which agents complete without forking. Completion is
    /// detected by counting terminal tasks (the count before the run is subtracted), so tasks
    /// of other clients finishing meanwhile only delay the end: every task of the run is then
    /// fetched and checked.
    E2e(BenchE2eArgs),
}

#[derive(Debug, Args)]
pub struct BenchE2eArgs {
    /// Tasks to submit in total.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub tasks: u64,
    /// Submit requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Tasks per submit request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Priority of the tasks.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Give up when the tasks are not all submitted and terminal within this, e.g. 10m.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout_total: Duration,
}

#[derive(Debug, Args)]
pub struct BenchSubmitArgs {
    /// Tasks to submit in total.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Tasks per submit request.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Send every request as its own SubmitTasks RPC instead of letting the client library
    /// coalesce concurrent requests into shared RPCs.
    #[arg(long)]
    pub no_coalesce: bool,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for data and logs (default: a temporary directory, removed on exit).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Use ports P, P+1, P+2 (default: free ports).
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Stop the cluster after the demo instead of waiting for Ctrl-C.
    #[arg(long)]
    pub exit_after_demo: bool,
}

/// `10s`, `500ms`, `2m`: humantime durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 10s or 2m)"))
}

/// `KEY=VALUE` with a non-empty key.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A task state by its lower-case name.
pub fn parse_state(s: &str) -> Result<TaskState, String> {
    TaskState::parse(s.trim()).ok_or_else(|| {
        let all: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {s:?}; expected one of {}", all.join(", "))
    })
}

fn parse_peer_list(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let peers = taurus_master::config::parse_peers(s).map_err(|e| e.to_string())?;
    if peers.is_empty() {
        return Err("no peers given; expected ID=HOST:PORT,...".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_values_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_key_value("ab").is_err());
        assert!(parse_key_value("=b").is_err());
    }

    #[test]
    fn states_and_durations_parse() {
        assert_eq!(parse_state("timed_out").unwrap(), TaskState::TimedOut);
        assert!(parse_state("done").unwrap_err().contains("pending"));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn submit_takes_its_own_timeout_and_the_global_one_goes_before_the_noun() {
        let cli = Cli::try_parse_from([
            "taurus",
            "--timeout",
            "2s",
            "task",
            "submit",
            "--timeout",
            "30s",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(2));
        let Command::Task(TaskCmd::Submit(s)) = cli.command else {
            panic!("not a submit")
        };
        assert_eq!(s.timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.command, ["true"]);
    }

    #[test]
    fn agent_start_flags_land_in_their_fields() {
        let cli = Cli::try_parse_from([
            "taurus",
            "--masters",
            "a:1,b:2",
            "agent",
            "start",
            "--id",
            "a1",
            "--cpu",
            "4000",
            "--mem",
            "8192",
            "--disk",
            "100",
            "--max-tasks",
            "8",
            "--label",
            "zone=a",
            "--label",
            "gpu=1",
            "--pool",
            "batch",
            "--work-dir",
            "/tmp/w",
            "--heartbeat-interval",
            "500ms",
            "--lease-timeout",
            "5s",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.masters, ["a:1", "b:2"]);
        let Command::Agent(AgentCmd::Start(a)) = cli.command else {
            panic!("not agent start")
        };
        assert_eq!(a.id.as_deref(), Some("a1"));
        assert_eq!(
            (a.cpu, a.mem, a.disk, a.max_tasks),
            (Some(4000), Some(8192), Some(100), Some(8))
        );
        assert_eq!(
            a.label,
            [
                ("zone".to_string(), "a".to_string()),
                ("gpu".to_string(), "1".to_string())
            ]
        );
        assert_eq!(a.pool.as_deref(), Some("batch"));
        assert_eq!(a.heartbeat_interval, Some(Duration::from_millis(500)));
        assert_eq!(a.lease_timeout, Some(Duration::from_secs(5)));
        assert_eq!(a.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn agent_supervise_is_hidden_and_takes_the_command_after_dashes() {
        use clap::CommandFactory;
        let cli = Cli::try_parse_from(["taurus", "agent", "supervise", "--", "sh", "-c", "exit 3"]).unwrap();
        let Command::Agent(AgentCmd::Supervise { command }) = cli.command else {
            panic!("not agent supervise")
        };
        assert_eq!(command, ["sh", "-c", "exit 3"]);
        assert!(Cli::try_parse_from(["taurus", "agent", "supervise"]).is_err());
        let mut cmd = Cli::command();
        let agent = cmd.find_subcommand_mut("agent").expect("agent");
        let help = agent.render_help().to_string();
        assert!(help.contains("start") && !help.contains("supervise"), "{help}");
    }

    #[test]
    fn logs_and_list_filter_flags_parse() {
        let cli = Cli::try_parse_from(["taurus", "task", "logs", "t1", "-f", "--stderr-only"]).unwrap();
        let Command::Task(TaskCmd::Logs(l)) = cli.command else {
            panic!("not task logs")
        };
        assert!(l.follow && l.stderr_only && !l.stdout_only && l.attempt.is_none());
        let cli = Cli::try_parse_from([
            "taurus", "task", "list", "--agent", "a1", "--label", "k=v", "--name", "x",
        ])
        .unwrap();
        let Command::Task(TaskCmd::List(l)) = cli.command else {
            panic!("not task list")
        };
        assert!(l.filters_locally());
        assert_eq!(l.agent.as_deref(), Some("a1"));
        let cli = Cli::try_parse_from(["taurus", "task", "list", "--state", "pending"]).unwrap();
        let Command::Task(TaskCmd::List(l)) = cli.command else {
            panic!("not task list")
        };
        assert!(!l.filters_locally());
    }
}
