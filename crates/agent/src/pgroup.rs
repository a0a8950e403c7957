//! Process groups: signalling them, telling whether they still exist, and the file that lists
//! the groups of running tasks so that the next incarnation of the agent can kill them.
//!
//! Every task runs in its own process group (its leader's pid is the pgid). `PR_SET_PDEATHSIG`
//! kills the leader when the agent dies, but not the leader's children; a SIGKILLed agent
//! cannot clean up, so it keeps `running.pgids` in its work directory up to date (rewritten
//! atomically on every change) and its next start kills whatever is listed there. The file
//! records the boot id: after a reboot the listed numbers mean nothing and are ignored.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

/// Name of the running-process-group file inside the work directory.
pub const PGID_FILE: &str = "running.pgids";

/// How long `kill_leftovers` waits for killed groups to disappear.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// Whether `pgid` may be signalled at all: never 0 (our own group), 1 (init) or negative, and
/// never the agent's own process group.
pub fn is_killable(pgid: i32) -> bool {
    // SAFETY: getpgrp and getpid cannot fail and have no preconditions.
    let (own_group, own_pid) = unsafe { (libc::getpgrp(), libc::getpid()) };
    pgid > 1 && pgid != own_group && pgid != own_pid
}

/// Sends `signal` to every process of group `pgid`. Returns false when the group does not exist
/// (or may not be signalled); refuses groups [`is_killable`] rejects.
pub fn signal_group(pgid: i32, signal: i32) -> bool {
    if !is_killable(pgid) {
        return false;
    }
    // SAFETY: killpg has no memory-safety preconditions; `pgid > 1` was checked above.
    unsafe { libc::killpg(pgid, signal) == 0 }
}

/// Whether some process of group `pgid` may still be signalled (`kill(-pgid, 0)`); zombies
/// count, and a group of another user counts too.
pub fn group_exists(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether group `pgid` has a member that is still running (not a zombie). Reads `/proc`, so
/// it is slow-ish; for tests and for waiting on a kill. Zombies are ignored because whoever
/// inherited them (init, or a subreaper) reaps them in its own time.
pub fn group_has_live_members(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return group_exists(pgid);
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == pgid
            && state != 'Z'
            && state != 'X'
        {
            return true;
        }
    }
    false
}

/// State and process group from `/proc/<pid>/stat` (`pid (comm) state ppid pgrp ...`; `comm`
/// may contain spaces and parentheses, so parse from the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Polls until group `pgid` has no live member or `timeout` passes. Returns whether it is gone.
pub fn wait_group_gone(pgid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !group_has_live_members(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The current boot's id (`/proc/sys/kernel/random/boot_id`); empty when unreadable.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The set of process groups of running tasks, mirrored to `work_dir/running.pgids`.
#[derive(Debug)]
pub struct PgidFile {
    path: PathBuf,
    boot_id: String,
    running: Mutex<BTreeSet<i32>>,
}

impl PgidFile {
    /// A tracker writing to `work_dir/running.pgids`. Does not touch the file until the first
    /// change (call [`kill_leftovers`] first: it reads what a previous incarnation left).
    pub fn new(work_dir: &Path) -> Self {
        Self {
            path: work_dir.join(PGID_FILE),
            boot_id: boot_id(),
            running: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new running group.
    pub fn add(&self, pgid: i32) {
        self.update(|set| set.insert(pgid));
    }

    /// Forgets a group (after it has been killed or has ended).
    pub fn remove(&self, pgid: i32) {
        self.update(|set| set.remove(&pgid));
    }

    /// The recorded groups.
    pub fn running(&self) -> Vec<i32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        // A panic while holding the lock leaves a consistent set (inserts and removes are
        // atomic), so a poisoned lock is still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut BTreeSet<i32>) -> bool) {
        let mut set = self.lock();
        if change(&mut set)
            && let Err(e) = self.write(&set)
        {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot write the running-process-group file; a SIGKILLed agent may leave tasks behind"
            );
        }
    }

    /// Writes the set to a temporary file and renames it over the real one (atomic against a
    /// crash of the agent; no fsync, since a machine crash kills the tasks anyway).
    fn write(&self, set: &BTreeSet<i32>) -> std::io::Result<()> {
        let mut text = format!(
            "# taurus-agent: process groups of running tasks\nboot_id {}\n",
            self.boot_id
        );
        for pgid in set {
            text.push_str(&pgid.to_string());
            text.push('\n');
        }
        let tmp = self.path.with_extension("pgids.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &self.path)
    }
}

/// What a `running.pgids` file says.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    boot_id: Option<String>,
    pgids: Vec<i32>,
}

fn parse_file(text: &str) -> Listed {
    let mut listed = Listed {
        boot_id: None,
        pgids: Vec::new(),
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(id) = line.strip_prefix("boot_id") {
            listed.boot_id = Some(id.trim().to_string());
        } else if let Ok(pgid) = line.parse::<i32>() {
            listed.pgids.push(pgid);
        } else {
            tracing::warn!(
                line,
                "ignoring an unreadable line of the running-process-group file"
            );
        }
    }
    listed
}

/// Kills (SIGKILL) every process group a previous incarnation listed in
/// `work_dir/running.pgids` that still exists, waits (bounded) for them to go, and removes the
/// file. Groups from another boot, groups 0 and 1 and the agent's own group are never touched.
/// Returns the groups it signalled. Blocking (it polls `/proc`); call it before starting work.
pub fn kill_leftovers(work_dir: &Path) -> std::io::Result<Vec<i32>> {
    let path = work_dir.join(PGID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let listed = parse_file(&text);
    let current_boot = boot_id();
    let mut killed = Vec::new();
    if listed.boot_id.as_deref().is_some_and(|b| b != current_boot) {
        tracing::info!(
            path = %path.display(),
            groups = listed.pgids.len(),
            "process groups listed by a previous boot are ignored"
        );
    } else {
        for pgid in listed.pgids {
            if !is_killable(pgid) {
                tracing::warn!(pgid, "not killing a listed process group: reserved or our own");
                continue;
            }
            if !group_exists(pgid) {
                continue;
            }
            if signal_group(pgid, libc::SIGKILL) {
                tracing::warn!(pgid, "killed a process group left by a previous incarnation");
                killed.push(pgid);
            } else {
                tracing::warn!(
                    pgid,
                    error = %std::io::Error::last_os_error(),
                    "cannot kill a process group left by a previous incarnation"
                );
            }
        }
        for &pgid in &killed {
            if !wait_group_gone(pgid, LEFTOVER_WAIT) {
                tracing::error!(pgid, "a killed leftover process group still has live members");
            }
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(killed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_own_groups_are_never_killable() {
        // SAFETY: no preconditions.
        let (own_group, own_pid) = unsafe { (libc::getpgrp(), libc::getpid()) };
        for pgid in [-5, 0, 1, own_group, own_pid] {
            assert!(!is_killable(pgid), "{pgid}");
            assert!(!signal_group(pgid, 0), "{pgid}");
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_stat("42 (sleep) S 1 42 42 0 -1"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) b (c) Z 1 40 40 0"), Some(('Z', 40)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_file_round_trips_and_is_rewritten_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = PgidFile::new(dir.path());
        f.add(100_000);
        f.add(100_001);
        f.remove(100_000);
        let text = std::fs::read_to_string(f.path()).expect("written");
        let listed = parse_file(&text);
        assert_eq!(listed.pgids, vec![100_001]);
        assert_eq!(listed.boot_id.as_deref(), Some(boot_id().as_str()));
        assert_eq!(f.running(), vec![100_001]);
        assert!(!dir.path().join("running.pgids.tmp").exists());
    }

    #[test]
    fn leftovers_of_another_boot_are_ignored_and_the_file_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PGID_FILE);
        // SAFETY: no preconditions.
        let own = unsafe { libc::getpgrp() };
        std::fs::write(&path, format!("boot_id not-this-boot\n{own}\n")).expect("write");
        assert_eq!(kill_leftovers(dir.path()).expect("reads"), Vec::<i32>::new());
        assert!(!path.exists());
        assert_eq!(
            kill_leftovers(dir.path()).expect("no file is fine"),
            Vec::<i32>::new()
        );
    }
}
