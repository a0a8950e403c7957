//! Task confinement: who a task runs as, what it sees of the agent, and what it may use.
//!
//! The agent's part of the threat model is `docs/security.md` ("Agent execution and threat
//! model"); this module is how it is enforced.
//!
//! # Identity
//!
//! [`TaskUser`] says which user a task's processes run as:
//! - [`TaskUser::Agent`]: as the agent itself (an agent that is not root can do nothing else).
//! - [`TaskUser::Fixed`]: one configured user (`exec.user`) for every task; needs a root agent.
//! - [`TaskUser::Dynamic`]: every running attempt gets a uid (and the same gid) of its own from
//!   the configured range (`exec.dynamic_uids`), like systemd's `DynamicUser`. No two running
//!   attempts share one, so one task cannot read another's working directory (mode 0700) or
//!   signal its processes. When the attempt ends, every process still owned by that uid is
//!   SIGKILLed (a `kill(-1, SIGKILL)` made by a child that took the uid: atomic against forks)
//!   before the uid is handed out again, round robin.
//!
//! The change of identity (`setgroups(0)`, `setresgid`, `setresuid`) happens in the forked
//! child, after it joined its cgroup and set its rlimits and before exec, together with
//! `PR_SET_NO_NEW_PRIVS` (no set-user-ID gain, ever) and `umask 077`. Under a supervisor it is
//! the supervisor's child that changes identity: the supervisor itself keeps the agent's, so the
//! task cannot signal or trace it.
//!
//! # Working directory
//!
//! `<work_dir>/tasks/<task>-<token>`, mode 0700 and owned by the task's uid, the task's `cwd`,
//! `HOME` and `TMPDIR`; removed after the attempt, whatever ended it, without following symbolic
//! links out of it. `<work_dir>/tasks` is 0711: tasks of other users can reach their own
//! directory but not list the others. Everything under `tasks/` is removed at agent start.
//!
//! # Limits
//!
//! From the task's resource demands (0: no limit of that kind):
//! - **cgroup v2**, when `/sys/fs/cgroup` is a cgroup2 mount whose agent cgroup can delegate the
//!   `memory` and `cpu` controllers: each attempt gets `<agent cgroup>/taurus-task-<task>-<token>`
//!   with `memory.max` = the memory demand (`memory.swap.max` 0, `memory.oom.group` 1: an
//!   overrun kills the whole task), `cpu.max` = the CPU demand, and `pids.max` =
//!   `exec.max_processes` when the `pids` controller is there. The child joins it before exec
//!   (it writes `0` to `cgroup.procs`), so nothing of the task ever runs outside. A cgroup with
//!   processes cannot delegate controllers, so the agent first moves itself into
//!   `<agent cgroup>/taurus-agent` (under systemd: `Delegate=yes`). The cgroup is killed
//!   (`cgroup.kill`, or freeze-and-kill) and removed after the attempt, and stale ones at start.
//! - **rlimits** otherwise: `RLIMIT_DATA` = the memory demand (per process: private writable
//!   memory, what `malloc` and `mmap` take; unlike `RLIMIT_AS` it does not count address space
//!   merely reserved, which JVMs, Go and glibc's per-thread arenas reserve by the gigabyte), and
//!   `RLIMIT_NPROC` = `exec.max_processes` for dynamic uids (it counts per uid). There is no
//!   rlimit for a CPU *rate*: without cgroups the CPU demand is not enforced.
//! - Always: `RLIMIT_NOFILE` = `exec.max_open_files` (at most the agent's own hard limit) and
//!   `RLIMIT_CORE` = 0. Soft and hard limits are equal: a task cannot raise them.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;
use std::time::Instant;

use serde::Deserialize;
use serde::Serialize;

use crate::error::AgentError;

/// `PATH` of tasks unless `exec.path` says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default `exec.max_open_files`.
pub const DEFAULT_MAX_OPEN_FILES: u64 = 65_536;
/// Default `exec.max_processes`.
pub const DEFAULT_MAX_PROCESSES: u64 = 4_096;

/// Where the cgroup v2 hierarchy must be mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The leaf the agent moves itself into so that its cgroup can delegate controllers.
const AGENT_LEAF: &str = "taurus-agent";
/// Prefix of the per-attempt cgroups.
const TASK_CGROUP_PREFIX: &str = "taurus-task-";
/// `cpu.max` period, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest `cpu.max` quota the kernel takes, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// How long removing a killed cgroup may wait for its processes to be gone.
const CGROUP_REMOVE_WAIT: Duration = Duration::from_secs(5);

/// The `[exec]` section of the agent configuration. Every key is optional.
///
/// ```toml
/// [exec]
/// dynamic_uids = "61184-65519"   # one uid per running task (root agents); or:
/// # user = "nobody"              # one user for every task (name, UID or UID:GID; root agents)
/// path = "/usr/local/bin:/usr/bin:/bin"
/// cgroups = true                 # use cgroup v2 when available, rlimits otherwise
/// max_open_files = 65536
/// max_processes = 4096
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Run every task as this user: a name, `UID` or `UID:GID`. Needs a root agent. Default:
    /// the agent's own user (a root agent warns at every start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `FIRST-LAST`: every running task gets a uid (and gid) of its own from this range, none of
    /// which may belong to a local user or group. Needs a root agent. Exclusive with `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_uids: Option<String>,
    /// `PATH` of tasks (the task's own `env` may replace it).
    pub path: String,
    /// Enforce limits with cgroup v2 when the machine allows it (otherwise, and when false:
    /// rlimits).
    pub cgroups: bool,
    /// `RLIMIT_NOFILE` of every task process.
    pub max_open_files: u64,
    /// Most processes of one task: `pids.max` (cgroups), or `RLIMIT_NPROC` (dynamic uids).
    pub max_processes: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            user: None,
            dynamic_uids: None,
            path: DEFAULT_PATH.to_string(),
            cgroups: true,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_processes: DEFAULT_MAX_PROCESSES,
        }
    }
}

/// Which user tasks run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskUser {
    /// The agent's own user.
    Agent,
    /// One user for every task.
    Fixed { uid: u32, gid: u32 },
    /// A uid (= gid) of its own for every running attempt, from `first..=last`.
    Dynamic { first: u32, last: u32 },
}

/// The `[exec]` section, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSettings {
    pub user: TaskUser,
    pub path: String,
    pub cgroups: bool,
    pub max_open_files: u64,
    pub max_processes: u64,
}

impl Default for ExecSettings {
    fn default() -> Self {
        Self {
            user: TaskUser::Agent,
            path: DEFAULT_PATH.to_string(),
            cgroups: true,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            max_processes: DEFAULT_MAX_PROCESSES,
        }
    }
}

impl ExecConfig {
    /// Checks the section, naming the offending key. Changing users needs a root agent.
    pub fn resolve(&self) -> Result<ExecSettings, AgentError> {
        let bad = |key: &str, why: String| AgentError::Config(format!("exec.{key}: {why}"));
        if self.path.is_empty() || self.path.contains('\0') {
            return Err(bad("path", "must be non-empty and hold no NUL".into()));
        }
        if self.max_open_files < 16 {
            return Err(bad("max_open_files", "at least 16".into()));
        }
        if self.max_processes == 0 {
            return Err(bad("max_processes", "at least 1".into()));
        }
        let user = match (&self.user, &self.dynamic_uids) {
            (Some(_), Some(_)) => {
                return Err(bad("user", "set exec.user or exec.dynamic_uids, not both".into()));
            }
            (Some(spec), None) => {
                let (uid, gid) = parse_user(spec).map_err(|why| bad("user", why))?;
                if uid == euid() && gid == egid() {
                    TaskUser::Agent
                } else if euid() != 0 {
                    return Err(bad(
                        "user",
                        format!(
                            "running tasks as {spec:?} needs the agent to run as root (it runs as \
                             uid {}); remove exec.user to run tasks as the agent's user",
                            euid()
                        ),
                    ));
                } else {
                    TaskUser::Fixed { uid, gid }
                }
            }
            (None, Some(range)) => {
                let (first, last) = parse_range(range).map_err(|why| bad("dynamic_uids", why))?;
                if euid() != 0 {
                    return Err(bad(
                        "dynamic_uids",
                        format!("needs the agent to run as root (it runs as uid {})", euid()),
                    ));
                }
                check_range_unused(first, last).map_err(|why| bad("dynamic_uids", why))?;
                TaskUser::Dynamic { first, last }
            }
            (None, None) => TaskUser::Agent,
        };
        Ok(ExecSettings {
            user,
            path: self.path.clone(),
            cgroups: self.cgroups,
            max_open_files: self.max_open_files,
            max_processes: self.max_processes,
        })
    }
}

fn euid() -> u32 {
    // SAFETY: no preconditions, cannot fail.
    unsafe { libc::geteuid() }
}

fn egid() -> u32 {
    // SAFETY: no preconditions, cannot fail.
    unsafe { libc::getegid() }
}

/// `NAME`, `UID` or `UID:GID` to a uid and gid (a name's or a known uid's primary group; the
/// uid itself for an unknown uid).
fn parse_user(spec: &str) -> Result<(u32, u32), String> {
    let spec = spec.trim();
    if let Some((u, g)) = spec.split_once(':') {
        let uid = u
            .parse::<u32>()
            .map_err(|_| format!("{spec:?}: expected UID:GID"))?;
        let gid = g
            .parse::<u32>()
            .map_err(|_| format!("{spec:?}: expected UID:GID"))?;
        return check_ids(spec, uid, gid);
    }
    if let Ok(uid) = spec.parse::<u32>() {
        let gid = passwd_by_uid(uid).map(|(_, gid)| gid).unwrap_or(uid);
        return check_ids(spec, uid, gid);
    }
    match lookup_user(spec) {
        Ok(Some((uid, gid))) => check_ids(spec, uid, gid),
        Ok(None) => Err(format!("no user named {spec:?}")),
        Err(e) => Err(format!("cannot look up user {spec:?}: {e}")),
    }
}

fn check_ids(spec: &str, uid: u32, gid: u32) -> Result<(u32, u32), String> {
    // (uid_t)-1 means "unchanged" to the set*id calls.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(format!("{spec:?}: 4294967295 is not a usable id"));
    }
    Ok((uid, gid))
}

/// `FIRST-LAST`, both inclusive, never 0 or `u32::MAX`.
fn parse_range(range: &str) -> Result<(u32, u32), String> {
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| format!("{range:?}: expected FIRST-LAST, e.g. 61184-65519"))?;
    let first = a
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{range:?}: FIRST is not a number"))?;
    let last = b
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{range:?}: LAST is not a number"))?;
    if first == 0 || last == u32::MAX || first > last {
        return Err(format!("{range:?}: must be FIRST <= LAST, from 1 to 4294967294"));
    }
    Ok((first, last))
}

/// No local user or group may own an id of the range: tasks would get its files.
fn check_range_unused(first: u32, last: u32) -> Result<(), String> {
    for (file, what) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {file} to check the range: {e}")),
        };
        for line in text.lines() {
            let mut fields = line.split(':');
            let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if let Ok(id) = id.parse::<u32>()
                && (first..=last).contains(&id)
            {
                return Err(format!(
                    "{first}-{last} holds id {id} of the local {what} {name:?} ({file}); pick a \
                     range no user or group uses"
                ));
            }
        }
    }
    Ok(())
}

/// A user's uid and primary gid, by name (`getpwnam_r`).
fn lookup_user(name: &str) -> std::io::Result<Option<(u32, u32)>> {
    let cname = CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` is writable for its length.
        let rc =
            unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)));
    }
}

/// A user's name and primary gid, by uid (`getpwuid_r`); `None` when unknown or unreadable.
fn passwd_by_uid(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` is writable for its length.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some((name.to_string_lossy().into_owned(), pwd.pw_gid))
}

// ---------------------------------------------------------------------------------------------
// What the child does before exec
// ---------------------------------------------------------------------------------------------

/// A resource limit set on task processes (soft = hard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rlimit {
    Data,
    NoFile,
    NProc,
    Core,
}

impl Rlimit {
    fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::NoFile => "nofile",
            Self::NProc => "nproc",
            Self::Core => "core",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Data, Self::NoFile, Self::NProc, Self::Core]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// What a task's process does to itself between fork and exec: join its cgroup, set its
/// rlimits, change identity, forbid privilege gains. Built by the agent; under a supervisor it
/// travels as an `S` control line ([`Confinement::to_line`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    /// uid and gid to switch to (supplementary groups are dropped).
    pub ids: Option<(u32, u32)>,
    /// The cgroup directory to join.
    pub cgroup: Option<PathBuf>,
    pub rlimits: Vec<(Rlimit, u64)>,
    pub no_new_privs: bool,
    pub umask: Option<u32>,
}

impl Confinement {
    /// The `S ...` control line (with its newline) for a supervisor.
    pub fn to_line(&self) -> String {
        let mut line = String::from("S");
        if let Some((uid, gid)) = self.ids {
            line.push_str(&format!(" uid={uid} gid={gid}"));
        }
        for (r, v) in &self.rlimits {
            line.push_str(&format!(" {}={v}", r.name()));
        }
        if self.no_new_privs {
            line.push_str(" nnp=1");
        }
        if let Some(m) = self.umask {
            line.push_str(&format!(" umask={m:o}"));
        }
        if let Some(dir) = &self.cgroup {
            line.push_str(" cgroup=");
            for b in dir.as_os_str().as_bytes() {
                line.push_str(&format!("{b:02x}"));
            }
        }
        line.push('\n');
        line
    }

    /// Parses what follows `S` on a control line. Anything unknown or malformed is an error:
    /// a supervisor must not start a task it cannot confine as asked.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let mut c = Self::default();
        let (mut uid, mut gid) = (None, None);
        for word in rest.split_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("malformed confinement {word:?}"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("malformed confinement {word:?}"))
            };
            let id = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("malformed confinement {word:?}"))
            };
            match key {
                "uid" => uid = Some(id()?),
                "gid" => gid = Some(id()?),
                "nnp" => c.no_new_privs = value == "1",
                "umask" => {
                    c.umask = Some(
                        u32::from_str_radix(value, 8)
                            .map_err(|_| format!("malformed confinement {word:?}"))?,
                    );
                }
                "cgroup" => {
                    let bytes = unhex(value).ok_or_else(|| format!("malformed confinement {word:?}"))?;
                    let path: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(bytes);
                    c.cgroup = Some(PathBuf::from(path));
                }
                other => match Rlimit::from_name(other) {
                    Some(r) => c.rlimits.push((r, number()?)),
                    None => return Err(format!("unknown confinement {word:?}")),
                },
            }
        }
        c.ids = match (uid, gid) {
            (Some(u), Some(g)) => Some((u, g)),
            (None, None) => None,
            _ => return Err("confinement: uid and gid go together".into()),
        };
        Ok(c)
    }

    /// Everything [`Prepared::apply`] needs, allocated now (the child must not allocate).
    /// Limits above the caller's own hard limits are lowered to them (a process that is not
    /// root cannot raise its hard limits).
    pub fn prepare(&self) -> std::io::Result<Prepared> {
        let procs = match &self.cgroup {
            Some(dir) => Some(
                CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
            ),
            None => None,
        };
        let mut rlimits = Vec::with_capacity(self.rlimits.len());
        for &(r, v) in &self.rlimits {
            let hard = current_hard_limit(r)?;
            rlimits.push((r, v.min(hard) as libc::rlim_t));
        }
        Ok(Prepared {
            ids: self.ids,
            procs,
            rlimits,
            no_new_privs: self.no_new_privs,
            umask: self.umask,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn resource(r: Rlimit) -> Resource {
    match r {
        Rlimit::Data => libc::RLIMIT_DATA,
        Rlimit::NoFile => libc::RLIMIT_NOFILE,
        Rlimit::NProc => libc::RLIMIT_NPROC,
        Rlimit::Core => libc::RLIMIT_CORE,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn current_hard_limit(r: Rlimit) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid and writable for the call.
    if unsafe { libc::getrlimit(resource(r), &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, reason = "rlim_t is not u64 on every target")]
    Ok(lim.rlim_max as u64)
}

/// A [`Confinement`] ready for the forked child.
#[derive(Debug)]
pub struct Prepared {
    ids: Option<(u32, u32)>,
    procs: Option<CString>,
    rlimits: Vec<(Rlimit, libc::rlim_t)>,
    no_new_privs: bool,
    umask: Option<u32>,
}

impl Prepared {
    /// Applies the confinement to the calling process. Meant for the child between fork and
    /// exec: it only makes async-signal-safe system calls and allocates nothing (errors are raw
    /// OS errors). Order matters: the cgroup and the rlimits need the agent's privileges, and
    /// identity changes clear `PR_SET_PDEATHSIG`, so callers set that after this.
    pub fn apply(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        if let Some(procs) = &self.procs {
            // SAFETY: `procs` is a valid NUL-terminated path; open, write and close are
            // async-signal-safe.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(err());
                }
                // "0": the writing process itself.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let write_error = (n != 1).then(err);
                libc::close(fd);
                if let Some(e) = write_error {
                    return Err(e);
                }
            }
        }
        for &(r, v) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            // SAFETY: `lim` is valid for the call; setrlimit is a plain system call.
            if unsafe { libc::setrlimit(resource(r), &lim) } != 0 {
                return Err(err());
            }
        }
        if let Some((uid, gid)) = self.ids {
            // SAFETY: plain system calls on the calling process (the only thread of the child).
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0 {
                    return Err(err());
                }
                if libc::setresgid(gid, gid, gid) != 0 {
                    return Err(err());
                }
                if libc::setresuid(uid, uid, uid) != 0 {
                    return Err(err());
                }
            }
        }
        if let Some(mask) = self.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(mask as libc::mode_t) };
        }
        // SAFETY: prctl with integer arguments only.
        if self.no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(err());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamic uids
// ---------------------------------------------------------------------------------------------

/// The uids of [`TaskUser::Dynamic`]: each held by at most one running attempt, handed out
/// round robin so that a freed uid is reused as late as possible.
#[derive(Debug)]
struct UidPool {
    first: u32,
    last: u32,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    in_use: BTreeSet<u32>,
    next: u32,
}

impl UidPool {
    fn new(first: u32, last: u32) -> Self {
        Self {
            first,
            last,
            state: Mutex::new(PoolState {
                in_use: BTreeSet::new(),
                next: first,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allocate(&self) -> Option<u32> {
        let mut s = self.lock();
        let size = u64::from(self.last - self.first) + 1;
        let mut uid = s.next;
        for _ in 0..size {
            let candidate = uid;
            uid = if uid >= self.last { self.first } else { uid + 1 };
            if s.in_use.insert(candidate) {
                s.next = uid;
                return Some(candidate);
            }
        }
        None
    }

    fn release(&self, uid: u32) {
        self.lock().in_use.remove(&uid);
    }
}

/// SIGKILLs every process whose real or saved uid is `uid`: a forked child takes the uid and
/// calls `kill(-1, SIGKILL)`, which the kernel applies to all of them at once (no fork can slip
/// through). Only for uids nothing but our tasks use. Blocking (waits for the child).
pub fn kill_uid(uid: u32) -> std::io::Result<()> {
    // SAFETY: the child makes only async-signal-safe system calls and leaves with _exit; it
    // touches no memory shared with the parent's other threads.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child: plain system calls, then _exit.
        unsafe {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(uid, uid, uid) == 0
                && libc::setresuid(uid, uid, uid) == 0;
            if !ok {
                libc::_exit(2);
            }
            // ESRCH (nothing to kill) is fine.
            libc::kill(-1, libc::SIGKILL);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid for the call; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the process that kills uid {uid}'s processes failed (wait status {status})"
        )))
    }
}

/// The uids in `first..=last` that own a process now (real uid, from `/proc`).
fn uids_with_processes(first: u32, last: u32) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        if !entry.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|u| u.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        found.extend(uids.into_iter().filter(|u| (first..=last).contains(u)));
    }
    found
}

// ---------------------------------------------------------------------------------------------
// cgroup v2
// ---------------------------------------------------------------------------------------------

/// The agent's delegated cgroup v2 subtree.
#[derive(Debug)]
pub struct Cgroups {
    /// `<agent cgroup>`: holds `taurus-agent` (the agent) and the task cgroups.
    base: PathBuf,
    pids: bool,
}

static CGROUPS: OnceLock<Result<Cgroups, String>> = OnceLock::new();

/// The process's cgroup v2 subtree for tasks, set up on first use (once per process: it may
/// move the process into a leaf cgroup); why not, when it cannot be used.
pub fn cgroups() -> Result<&'static Cgroups, &'static str> {
    CGROUPS
        .get_or_init(setup_cgroups)
        .as_ref()
        .map_err(String::as_str)
}

fn setup_cgroups() -> Result<Cgroups, String> {
    let root = Path::new(CGROUP_ROOT);
    let croot = CString::new(CGROUP_ROOT).map_err(|e| e.to_string())?;
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `croot` is a valid path and `st` writable for the call.
    if unsafe { libc::statfs(croot.as_ptr(), &mut st) } != 0 {
        return Err(format!("{CGROUP_ROOT}: {}", std::io::Error::last_os_error()));
    }
    // The field and the constant have different types on different targets.
    #[allow(clippy::unnecessary_cast)]
    let is_cgroup2 = st.f_type as i64 == libc::CGROUP2_SUPER_MAGIC as i64;
    if !is_cgroup2 {
        return Err(format!("{CGROUP_ROOT} is not a cgroup v2 (unified) mount"));
    }
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("/proc/self/cgroup has no cgroup v2 entry")?
        .trim()
        .to_string();
    let own_dir = root.join(own.trim_start_matches('/'));
    let in_leaf = own_dir.file_name().is_some_and(|n| n == AGENT_LEAF);
    let base = if in_leaf {
        own_dir.parent().map(Path::to_path_buf).unwrap_or(own_dir.clone())
    } else {
        own_dir.clone()
    };
    let read = |name: &str| {
        std::fs::read_to_string(base.join(name)).map_err(|e| format!("{}: {e}", base.join(name).display()))
    };
    let available = read("cgroup.controllers")?;
    let available: BTreeSet<&str> = available.split_whitespace().collect();
    for needed in ["memory", "cpu"] {
        if !available.contains(needed) {
            return Err(format!(
                "the {needed} controller is not available in {} (not delegated to the agent's cgroup)",
                base.display()
            ));
        }
    }
    let pids = available.contains("pids");
    let enabled = read("cgroup.subtree_control")?;
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    let wanted: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .collect();
    if !wanted.is_empty() {
        if !in_leaf {
            // A cgroup with processes cannot hand controllers to its children: move the agent
            // (every thread) into a leaf first.
            let leaf = base.join(AGENT_LEAF);
            match std::fs::create_dir(&leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create {}: {e}", leaf.display())),
            }
            write_file(&leaf.join("cgroup.procs"), "0")
                .map_err(|e| format!("cannot move the agent into {}: {e}", leaf.display()))?;
        }
        let line: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
        write_file(&base.join("cgroup.subtree_control"), &line.join(" ")).map_err(|e| {
            format!(
                "cannot enable {} for the children of {} (other processes in it? under systemd \
                 set Delegate=yes): {e}",
                wanted.join(", "),
                base.display()
            )
        })?;
    }
    Ok(Cgroups { base, pids })
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(text.as_bytes())
}

impl Cgroups {
    /// The directory holding the agent's task cgroups.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Creates the cgroup of one attempt with its limits (`None`: no limit of that kind).
    /// Blocking.
    fn create(
        &self,
        name: &str,
        memory_bytes: Option<u64>,
        cpu_millis: Option<u32>,
        max_processes: u64,
    ) -> std::io::Result<PathBuf> {
        let dir = self.base.join(format!("{TASK_CGROUP_PREFIX}{name}"));
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            // Left by an attempt with the same name: empty it and start afresh.
            destroy_cgroup(&dir)?;
            std::fs::create_dir(&dir)?;
        }
        let set = |file: &str, value: String| {
            write_file(&dir.join(file), &value)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{file} = {value}: {e}")))
        };
        let result = (|| {
            if let Some(bytes) = memory_bytes {
                set("memory.max", bytes.to_string())?;
                // Without these, an overrun may swap instead of failing, and the OOM killer may
                // leave half a task running.
                let _ = set("memory.swap.max", "0".into());
                let _ = set("memory.oom.group", "1".into());
            }
            if let Some(millis) = cpu_millis {
                let quota = (u64::from(millis) * CPU_PERIOD_US / 1000).max(CPU_MIN_QUOTA_US);
                set("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
            }
            if self.pids {
                set("pids.max", max_processes.to_string())?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = destroy_cgroup(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// Kills and removes the task cgroups a previous incarnation left. Blocking.
    fn remove_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return removed;
        };
        for entry in entries.flatten() {
            let is_task = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TASK_CGROUP_PREFIX));
            if is_task && entry.path().is_dir() {
                match destroy_cgroup(&entry.path()) {
                    Ok(()) => removed.push(entry.path()),
                    Err(e) => tracing::error!(
                        cgroup = %entry.path().display(),
                        error = %e,
                        "cannot remove a task cgroup left by a previous incarnation"
                    ),
                }
            }
        }
        removed
    }
}

/// SIGKILLs everything in a task cgroup (`cgroup.kill`, or freeze, kill each, thaw) and removes
/// it once empty. Blocking; `Ok` when it is gone.
fn destroy_cgroup(dir: &Path) -> std::io::Result<()> {
    if write_file(&dir.join("cgroup.kill"), "1").is_err() {
        // Before Linux 5.14: freeze so that nothing forks while the list is read.
        let frozen = write_file(&dir.join("cgroup.freeze"), "1").is_ok();
        for _ in 0..3 {
            let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
                break;
            };
            let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids.into_iter().filter(|p| *p > 1) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if frozen {
            let _ = write_file(&dir.join("cgroup.freeze"), "0");
        }
    }
    let deadline = Instant::now() + CGROUP_REMOVE_WAIT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            // EBUSY until the killed processes are gone.
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-attempt sandboxes
// ---------------------------------------------------------------------------------------------

/// The confinement policy of one executor.
#[derive(Debug)]
pub(crate) struct Sandbox {
    settings: ExecSettings,
    pool: Option<Arc<UidPool>>,
    /// Whether cgroups are used, decided on first use (setting them up may move the agent into
    /// a leaf cgroup: never for an executor whose settings say no).
    cgroups: OnceLock<Option<&'static Cgroups>>,
}

/// What an attempt asks for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Demand {
    pub cpu_millis: u32,
    pub memory_mb: u64,
}

impl Sandbox {
    /// The policy for `settings`. Sets up cgroups (once per process) when asked to.
    pub fn new(settings: ExecSettings) -> Self {
        let pool = match settings.user {
            TaskUser::Dynamic { first, last } => Some(Arc::new(UidPool::new(first, last))),
            _ => None,
        };
        Self {
            settings,
            pool,
            cgroups: OnceLock::new(),
        }
    }

    fn cgroups(&self) -> Option<&'static Cgroups> {
        *self.cgroups.get_or_init(|| {
            if !self.settings.cgroups {
                return None;
            }
            match cgroups() {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::info!(why, "cgroup v2 not usable: task limits are rlimits");
                    None
                }
            }
        })
    }

    pub fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    /// Whether limits are cgroups (else rlimits).
    pub fn uses_cgroups(&self) -> bool {
        self.cgroups().is_some()
    }

    /// Whether tasks run as another user than the agent (their directories are given away).
    pub fn changes_user(&self) -> bool {
        self.settings.user != TaskUser::Agent
    }

    /// Kills what a previous incarnation left: its task cgroups and every process of the
    /// dynamic uid range. Blocking.
    pub fn kill_leftovers(&self) {
        if let Some(c) = self.cgroups() {
            for dir in c.remove_stale() {
                tracing::warn!(cgroup = %dir.display(), "removed a task cgroup left by a previous incarnation");
            }
        }
        if let TaskUser::Dynamic { first, last } = self.settings.user {
            for uid in uids_with_processes(first, last) {
                tracing::warn!(
                    uid,
                    "killing processes of a dynamic uid left by a previous incarnation"
                );
                if let Err(e) = kill_uid(uid) {
                    tracing::error!(uid, error = %e, "cannot kill the processes of a dynamic uid");
                }
            }
        }
    }

    /// Sets up one attempt: its uid, its working directory `dir` (created 0700, owned by the
    /// task's uid), its cgroup. `name` names the cgroup. On error nothing is left behind.
    pub async fn prepare(&self, name: &str, dir: PathBuf, demand: Demand) -> Result<Attempt, String> {
        let mut attempt = Attempt {
            dir,
            uid_lease: None,
            cgroup: None,
            confinement: Confinement {
                no_new_privs: true,
                ..Confinement::default()
            },
            done: false,
        };
        attempt.confinement.ids = match self.settings.user {
            TaskUser::Agent => None,
            TaskUser::Fixed { uid, gid } => Some((uid, gid)),
            TaskUser::Dynamic { .. } => {
                let Some(pool) = &self.pool else {
                    return Err("no uid pool".into());
                };
                let Some(uid) = pool.allocate() else {
                    return Err("every dynamic uid (exec.dynamic_uids) is in use".into());
                };
                attempt.uid_lease = Some((pool.clone(), uid));
                Some((uid, uid))
            }
        };
        if self.changes_user() {
            attempt.confinement.umask = Some(0o077);
        }
        let memory_bytes = (demand.memory_mb > 0).then(|| demand.memory_mb.saturating_mul(1 << 20));
        let cpu = (demand.cpu_millis > 0).then_some(demand.cpu_millis);
        attempt.confinement.rlimits.push((Rlimit::Core, 0));
        attempt
            .confinement
            .rlimits
            .push((Rlimit::NoFile, self.settings.max_open_files));

        let dir = attempt.dir.clone();
        let ids = attempt.confinement.ids;
        let cgroups = self.cgroups();
        let max_processes = self.settings.max_processes;
        let name = name.to_string();
        let made = tokio::task::spawn_blocking(move || -> Result<Option<PathBuf>, String> {
            make_private_dir(&dir, ids)
                .map_err(|e| format!("cannot create the working directory {}: {e}", dir.display()))?;
            match cgroups.map(|c| c.create(&name, memory_bytes, cpu, max_processes)) {
                Some(Ok(cgroup)) => Ok(Some(cgroup)),
                Some(Err(e)) => {
                    tracing::warn!(task = %name, error = %e, "cannot create the task's cgroup; its limits are rlimits");
                    Ok(None)
                }
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| format!("cannot set up the task: {e}"));
        match made.and_then(|r| r) {
            Ok(Some(cgroup)) => attempt.cgroup = Some(cgroup),
            Ok(None) => {
                if let Some(bytes) = memory_bytes {
                    attempt.confinement.rlimits.push((Rlimit::Data, bytes));
                }
                if matches!(self.settings.user, TaskUser::Dynamic { .. }) {
                    attempt.confinement.rlimits.push((Rlimit::NProc, max_processes));
                }
            }
            Err(e) => {
                attempt.cleanup().await;
                return Err(e);
            }
        }
        attempt.confinement.cgroup = attempt.cgroup.clone();
        Ok(attempt)
    }
}

/// Creates `dir` mode 0700, owned by `ids` when given. An existing one (an attempt of the same
/// name) is removed first.
fn make_private_dir(dir: &Path, ids: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match remove_tree(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Removes `dir` and everything in it without following symbolic links (a link is removed, not
/// what it points to: `std::fs::remove_dir_all` works on descriptors with `O_NOFOLLOW`). An agent
/// that is not root may meet directories the task made unreadable: those are made 0700 (without
/// following links) and the removal is tried again. Blocking.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && euid() != 0 => {
            open_up(dir);
            std::fs::remove_dir_all(dir)
        }
        Err(e) => Err(e),
    }
}

/// Gives the owner full access to every directory under `dir` (not following links).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
}

/// One attempt's sandbox: cleaned up by [`Attempt::cleanup`], or, if dropped before (the run
/// was cancelled), on a thread of its own.
#[derive(Debug)]
pub(crate) struct Attempt {
    dir: PathBuf,
    uid_lease: Option<(Arc<UidPool>, u32)>,
    cgroup: Option<PathBuf>,
    confinement: Confinement,
    done: bool,
}

impl Attempt {
    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// After the attempt's process group is gone: kills what is left in its cgroup and of its
    /// dynamic uid, removes the cgroup and the working directory, and frees the uid.
    pub async fn cleanup(mut self) {
        self.done = true;
        let parts = self.take_parts();
        if let Err(e) = tokio::task::spawn_blocking(move || clean_up(parts)).await {
            tracing::error!(error = %e, "cleaning up after a task failed");
        }
    }

    fn take_parts(&mut self) -> Parts {
        Parts {
            dir: self.dir.clone(),
            uid_lease: self.uid_lease.take(),
            cgroup: self.cgroup.take(),
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            let parts = self.take_parts();
            std::thread::spawn(move || clean_up(parts));
        }
    }
}

struct Parts {
    dir: PathBuf,
    uid_lease: Option<(Arc<UidPool>, u32)>,
    cgroup: Option<PathBuf>,
}

fn clean_up(parts: Parts) {
    if let Some(cgroup) = &parts.cgroup
        && let Err(e) = destroy_cgroup(cgroup)
    {
        tracing::error!(cgroup = %cgroup.display(), error = %e, "cannot remove a task's cgroup");
    }
    let mut uid_clean = true;
    if let Some((_, uid)) = &parts.uid_lease
        && let Err(e) = kill_uid(*uid)
    {
        uid_clean = false;
        tracing::error!(uid, error = %e, "cannot kill what is left of a task's uid; not reusing it");
    }
    if let Err(e) = remove_tree(&parts.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %parts.dir.display(), error = %e, "cannot remove a task's working directory");
    }
    if let Some((pool, uid)) = parts.uid_lease
        && uid_clean
    {
        pool.release(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_lines_round_trip() {
        let c = Confinement {
            ids: Some((61_184, 61_184)),
            cgroup: Some(PathBuf::from("/sys/fs/cgroup/a b/taurus-task-x-1")),
            rlimits: vec![(Rlimit::Core, 0), (Rlimit::NoFile, 1024), (Rlimit::Data, 1 << 30)],
            no_new_privs: true,
            umask: Some(0o077),
        };
        let line = c.to_line();
        let rest = line
            .strip_prefix("S")
            .and_then(|l| l.strip_suffix('\n'))
            .expect("S line");
        assert_eq!(Confinement::parse(rest), Ok(c));
        assert_eq!(Confinement::parse(""), Ok(Confinement::default()));
        for bad in ["uid=1", "x=1", "nofile=many", "cgroup=zz", "uid", "umask=9"] {
            assert!(Confinement::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_and_ranges_parse() {
        assert_eq!(parse_user("0"), Ok((0, 0)));
        assert_eq!(parse_user("1234:99"), Ok((1234, 99)));
        assert_eq!(parse_user("root"), Ok((0, 0)));
        assert!(parse_user("no-such-user-here").is_err());
        assert!(parse_user("1:x").is_err());
        assert!(parse_user("4294967295").is_err());
        assert_eq!(parse_range("100-200"), Ok((100, 200)));
        assert_eq!(parse_range("5-5"), Ok((5, 5)));
        for bad in ["0-10", "10-5", "a-b", "100", "1-4294967295"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert!(check_range_unused(0, 10).is_err(), "root is in it");
    }

    #[test]
    fn the_pool_hands_out_each_uid_once_round_robin() {
        let pool = UidPool::new(10, 12);
        assert_eq!(pool.allocate(), Some(10));
        assert_eq!(pool.allocate(), Some(11));
        pool.release(10);
        assert_eq!(pool.allocate(), Some(12), "the freed uid comes last");
        assert_eq!(pool.allocate(), Some(10));
        assert_eq!(pool.allocate(), None, "all in use");
        pool.release(11);
        assert_eq!(pool.allocate(), Some(11));
    }

    #[test]
    fn the_exec_section_parses_in_the_agent_configuration() {
        let text = r#"
            id = "a1"
            masters = ["127.0.0.1:7101"]
            [exec]
            path = "/bin"
            cgroups = false
            max_open_files = 1024
            max_processes = 64
        "#;
        let c = crate::AgentConfig::from_toml(text).expect("parses");
        assert_eq!(c.exec.path, "/bin");
        let r = c.clone().resolve().expect("resolves");
        assert_eq!(
            r.exec,
            ExecSettings {
                user: TaskUser::Agent,
                path: "/bin".into(),
                cgroups: false,
                max_open_files: 1024,
                max_processes: 64,
            }
        );
        let text = toml::to_string(&c).expect("serializes");
        assert_eq!(crate::AgentConfig::from_toml(&text).expect("parses back"), c);
        assert!(
            crate::AgentConfig::from_toml("[exec]\nusr = \"x\"").is_err(),
            "unknown key"
        );
        let both = crate::AgentConfig {
            exec: ExecConfig {
                user: Some("nobody".into()),
                dynamic_uids: Some("1-2".into()),
                ..ExecConfig::default()
            },
            ..c
        };
        let e = both.resolve().expect_err("both").to_string();
        assert!(e.contains("exec.user"), "{e}");
    }

    #[test]
    fn the_exec_section_is_checked() {
        let both = ExecConfig {
            user: Some("nobody".into()),
            dynamic_uids: Some("70000-70010".into()),
            ..ExecConfig::default()
        };
        assert!(both.resolve().is_err());
        let own = ExecConfig {
            user: Some(format!("{}:{}", euid(), egid())),
            ..ExecConfig::default()
        };
        assert_eq!(own.resolve().expect("own user").user, TaskUser::Agent);
        let bad_path = ExecConfig {
            path: String::new(),
            ..ExecConfig::default()
        };
        assert!(bad_path.resolve().is_err());
        let other = ExecConfig {
            user: Some("12345:12345".into()),
            ..ExecConfig::default()
        };
        if euid() == 0 {
            assert_eq!(
                other.resolve().expect("root may").user,
                TaskUser::Fixed {
                    uid: 12345,
                    gid: 12345
                }
            );
        } else {
            let e = other.resolve().expect_err("not root").to_string();
            assert!(e.contains("root"), "{e}");
        }
    }
}
