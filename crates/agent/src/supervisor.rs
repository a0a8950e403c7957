//! The task supervisor: a small process between the agent and each task, so that a task never
//! outlives its agent's lease, even when the agent is SIGKILLed or paused.
//!
//! # Why
//!
//! A SIGKILLed agent cannot clean up, and `PR_SET_PDEATHSIG` only reaches a task's direct
//! child: a background process of the task (`sh -c '(loop) & wait'`) would run on until the
//! agent restarts, while the leader gives the task to another agent after `agent_ttl`. A paused
//! agent (SIGSTOP, a frozen VM's agent process) cannot fence itself at all. The supervisor is a
//! separate, single-threaded process that enforces both, whatever happens to the agent.
//!
//! # How it runs
//!
//! The executor starts `PROGRAM agent supervise -- COMMAND...` (`PROGRAM` is the agent's own
//! binary; see [`SUPERVISE_ARGS`]) instead of the command, with the task's environment and
//! working directory, stdout and stderr the executor's capture pipes, and stdin one end of a
//! Unix stream socket pair: the **control socket**. The supervisor leads its own process group
//! (the agent makes it, and it checks); it starts the command in that same group, with stdin
//! `/dev/null`, SIGTERM back to its default action and `PR_SET_PDEATHSIG = SIGKILL`. So the
//! agent's existing process-group handling (signals, `running.pgids`, leftovers) covers the
//! supervisor and the whole task at once, and the supervisor's own way of ending everything is
//! `kill(0, SIGKILL)`: one atomic signal to the group, itself included.
//!
//! The supervisor ignores SIGTERM: a graceful kill of the group (timeouts, shutdown) reaches
//! the task, and the supervisor stays to report how the task took it.
//!
//! # The protocol
//!
//! Agent to supervisor, lines on the control socket:
//!
//! | line         | meaning                                                                  |
//! |--------------|--------------------------------------------------------------------------|
//! | `L <ns>`     | the agent's lease ends at `CLOCK_MONOTONIC` `<ns>` (replaces the last)   |
//! | `K`          | kill the task now                                                        |
//! | `S <words>`  | confine the task: uid, gid, rlimits, cgroup, ... ([`Confinement::to_line`]); sent before the supervisor starts, never after; a malformed one means no task |
//! | end of file  | the agent is gone (the kernel closes its end when it dies, by any means) |
//!
//! Other lines are ignored (a newer agent may say more); a malformed `L` line kills the task,
//! since the lease can no longer be enforced. Without any `L` line there is no lease (the
//! executor alone, in tests).
//!
//! The supervisor kills the group (SIGKILL, itself included) when: the socket reaches end of
//! file; `K` arrives; `CLOCK_MONOTONIC` passes the last lease deadline (the agent is paused or
//! cut off: the supervisor is not paused with it); or the task's leader process exits, so that
//! no background process outlives the task. Before it kills, it writes one status line back on
//! the control socket (which is bidirectional), which the executor turns into the task's
//! [`Outcome`](crate::Outcome) exactly as if it had waited for the task itself:
//!
//! | line          | when                                                           |
//! |---------------|----------------------------------------------------------------|
//! | `exit N`      | the task's leader exited with code N                           |
//! | `signal N`    | the task's leader was killed by signal N                       |
//! | `fenced`      | the lease deadline passed; the task was killed                 |
//! | `killed`      | `K` arrived; the task was killed                               |
//! | `error MSG`   | the task could not be started (or waited for); MSG says why    |
//!
//! Nothing is written when the agent is gone. A supervisor killed from outside (the agent's own
//! SIGKILL of the group) writes nothing either; the executor then uses the supervisor's own
//! wait status. So the supervisor normally ends by SIGKILL: its status line is what counts.
//!
//! Before it starts the command, the supervisor reads what is already on the socket: the agent
//! writes the current lease deadline before it spawns the supervisor, so a task never runs a
//! moment without its lease, and nothing starts if the agent is already gone or the lease over.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::process::Command;
use std::process::ExitCode;
use std::process::Stdio;

use crate::lease::monotonic_now_ns;
use crate::sandbox::Confinement;

/// The arguments that make the agent's binary a supervisor: `PROGRAM agent supervise --
/// COMMAND...`.
pub const SUPERVISE_ARGS: [&str; 2] = ["agent", "supervise"];

/// The control socket: the supervisor's stdin.
const CONTROL_FD: libc::c_int = 0;
/// Exit status when the supervisor is misused (stdin not a socket, no command).
const EXIT_USAGE: u8 = 2;
/// Exit status when the command could not be started (after an `error` line), as a shell's.
const EXIT_CANNOT_START: u8 = 127;
/// Exit status when nothing was started because the agent is gone, the lease is over or a kill
/// was asked for.
const EXIT_NOT_STARTED: u8 = 125;
/// The longest wait between two looks at the task, the socket and the clock, in case a wake-up
/// is missed. The task's exit, the socket and the deadline wake the supervisor by themselves.
const MAX_WAIT_MS: u64 = 1000;
/// How often the task's exit is checked when `pidfd_open` is not available (Linux < 5.3).
const FALLBACK_WAIT_MS: u64 = 10;
/// Longest control line; a longer one is dropped.
const MAX_LINE: usize = 4096;

/// How the supervised task ended, as written on the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// `exit N`.
    Exited(i32),
    /// `signal N`.
    Signalled(i32),
    /// `fenced`: the lease deadline passed.
    Fenced,
    /// `killed`: the agent wrote `K`.
    Killed,
    /// `error MSG`: the task could not be started.
    Error(String),
}

impl Status {
    /// The line written for this status, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            Self::Exited(n) => format!("exit {n}"),
            Self::Signalled(n) => format!("signal {n}"),
            Self::Fenced => "fenced".into(),
            Self::Killed => "killed".into(),
            Self::Error(msg) => format!("error {}", msg.replace(['\n', '\r'], " ")),
        }
    }

    /// Parses one status line (without the newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "exit" => rest.trim().parse().ok().map(Self::Exited),
            "signal" => rest.trim().parse().ok().map(Self::Signalled),
            "fenced" if rest.is_empty() => Some(Self::Fenced),
            "killed" if rest.is_empty() => Some(Self::Killed),
            "error" => Some(Self::Error(rest.to_string())),
            _ => None,
        }
    }

    /// The last status among complete lines of `text` (what a supervisor wrote).
    pub fn last_in(text: &[u8]) -> Option<Self> {
        let complete = match text.iter().rposition(|b| *b == b'\n') {
            Some(i) => &text[..i],
            None => return None,
        };
        String::from_utf8_lossy(complete)
            .lines()
            .rev()
            .find_map(Self::parse)
    }
}

/// The `L <ns>` line that tells a supervisor the lease deadline.
pub fn lease_line(deadline_ns: u64) -> String {
    format!("L {deadline_ns}\n")
}

/// The `K` line: kill now.
pub const KILL_LINE: &str = "K\n";

/// Runs `command` supervised (the body of `taurus agent supervise -- COMMAND...`). Synchronous,
/// single-threaded; returns only when nothing was started (or the final kill failed), since it
/// normally ends by SIGKILL of its own group.
pub fn main(command: Vec<OsString>) -> ExitCode {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    if !control_is_socket() {
        eprintln!(
            "taurus agent supervise: an internal command of the agent; its stdin must be the agent's \
             control socket"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let Some(program) = command.first() else {
        send(&Status::Error("empty command".into()));
        return ExitCode::from(EXIT_USAGE);
    };
    if let Err(e) = lead_own_group() {
        send(&Status::Error(format!(
            "cannot lead a process group of its own: {e}"
        )));
        return ExitCode::from(EXIT_USAGE);
    }

    let mut control = Control::default();
    // What the agent wrote before it started us: the lease, normally.
    control.read_ready(0);
    if control.gone {
        return ExitCode::from(EXIT_NOT_STARTED);
    }
    if let Some(status) = control.verdict(monotonic_now_ns()) {
        send(&status);
        return ExitCode::from(EXIT_NOT_STARTED);
    }

    if let Some(why) = &control.bad_confinement {
        send(&Status::Error(format!("cannot confine the task: {why}")));
        return ExitCode::from(EXIT_CANNOT_START);
    }
    let confinement = control.confinement.take().unwrap_or_default();
    let child = match spawn(program, &command[1..], &confinement) {
        Ok(child) => child,
        Err(e) => {
            send(&Status::Error(format!(
                "cannot start {:?}: {e}",
                program.to_string_lossy()
            )));
            return ExitCode::from(EXIT_CANNOT_START);
        }
    };
    supervise(child, control)
}

/// Starts the task in our process group, stdin `/dev/null`, SIGTERM at its default action,
/// confined as the agent said, and SIGKILLed by the kernel if we die.
fn spawn(program: &OsString, args: &[OsString], confinement: &Confinement) -> std::io::Result<Child> {
    let confinement = confinement.prepare()?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (those of `Prepared::apply`, signal, prctl, getppid); it allocates nothing on
    // success.
    unsafe {
        cmd.pre_exec(move || {
            // First: a change of identity clears the death signal.
            confinement.apply()?;
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // We died between fork and prctl: the signal will never come.
            if libc::getppid() != supervisor {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Watches the task, the control socket and the lease until one of them ends it.
fn supervise(mut child: Child, mut control: Control) -> ExitCode {
    let pidfd = pidfd_open(child.id());
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let status = match (status.code(), status.signal()) {
                    (Some(code), _) => Status::Exited(code),
                    (None, Some(sig)) => Status::Signalled(sig),
                    (None, None) => Status::Error(format!("ended without exit code or signal ({status})")),
                };
                send(&status);
                return kill_group();
            }
            Ok(None) => {}
            Err(e) => {
                send(&Status::Error(format!("cannot wait for the process: {e}")));
                return kill_group();
            }
        }
        if control.gone {
            // Nobody is left to tell.
            return kill_group();
        }
        let now = monotonic_now_ns();
        if let Some(status) = control.verdict(now) {
            send(&status);
            return kill_group();
        }
        let mut wait_ms = if pidfd.is_some() {
            MAX_WAIT_MS
        } else {
            FALLBACK_WAIT_MS
        };
        if let Some(deadline) = control.deadline {
            wait_ms = wait_ms.min((deadline - now).div_ceil(1_000_000));
        }
        control.read_ready_or(pidfd, wait_ms);
    }
}

/// What the agent said so far.
#[derive(Debug, Default)]
struct Control {
    /// Bytes after the last complete line.
    partial: Vec<u8>,
    /// The last lease deadline (`CLOCK_MONOTONIC` ns).
    deadline: Option<u64>,
    /// `K` arrived, or a line that makes the lease unenforceable.
    kill: bool,
    /// End of file (or an error) on the socket: the agent is gone.
    gone: bool,
    /// The last `S` line.
    confinement: Option<Confinement>,
    /// Why the last `S` line could not be read.
    bad_confinement: Option<String>,
}

impl Control {
    /// Why the task must end now, if it must (the agent being gone aside).
    fn verdict(&self, now_ns: u64) -> Option<Status> {
        if self.kill {
            Some(Status::Killed)
        } else if self.deadline.is_some_and(|d| now_ns >= d) {
            Some(Status::Fenced)
        } else {
            None
        }
    }

    /// Waits up to `wait_ms` for the socket (or `also`, the task's pidfd) and reads what the
    /// socket has.
    fn read_ready_or(&mut self, also: Option<libc::c_int>, wait_ms: u64) {
        let mut fds = [
            libc::pollfd {
                fd: CONTROL_FD,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: also.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = libc::c_int::try_from(wait_ms).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of 2 pollfds for the call (a negative fd is ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n > 0 && fds[0].revents != 0 {
            self.read_once();
        }
    }

    /// Reads what the socket holds if it becomes readable within `wait_ms`.
    fn read_ready(&mut self, wait_ms: u64) {
        loop {
            let before = (self.partial.len(), self.deadline, self.kill, self.gone);
            self.read_ready_or(None, wait_ms);
            if self.gone || before == (self.partial.len(), self.deadline, self.kill, self.gone) {
                return;
            }
        }
    }

    /// One `read` of the socket, which poll said is readable (or closed).
    fn read_once(&mut self) {
        let mut buf = [0u8; 1024];
        // SAFETY: `buf` is valid and writable for its length.
        let n = unsafe { libc::read(CONTROL_FD, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            self.gone = true;
            return;
        }
        let Ok(n) = usize::try_from(n) else {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
                // The agent cannot reach us any more: as good as gone.
                self.gone = true;
            }
            return;
        };
        self.take(&buf[..n]);
    }

    /// Applies the complete lines of `bytes` (after what was left over).
    fn take(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.apply(String::from_utf8_lossy(&line[..i]).trim());
        }
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
    }

    fn apply(&mut self, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "L" => match rest.trim().parse::<u64>() {
                Ok(ns) => self.deadline = Some(ns),
                Err(_) => self.kill = true,
            },
            "K" => self.kill = true,
            "S" => match Confinement::parse(rest) {
                Ok(c) => {
                    self.confinement = Some(c);
                    self.bad_confinement = None;
                }
                Err(why) => self.bad_confinement = Some(why),
            },
            _ => {}
        }
    }
}

/// Writes a status line on the control socket; errors (the agent is gone) are ignored.
fn send(status: &Status) {
    let line = format!("{}\n", status.to_line());
    let mut bytes = line.as_bytes();
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for its length. MSG_NOSIGNAL: a closed socket is an error,
        // not a SIGPIPE.
        let n = unsafe { libc::send(CONTROL_FD, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        match usize::try_from(n) {
            Ok(n) => bytes = &bytes[n..],
            Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// SIGKILLs our process group: the task, whatever it started, and us.
fn kill_group() -> ExitCode {
    // SAFETY: kill(0, ...) signals the caller's own group, which `lead_own_group` made ours.
    unsafe { libc::kill(0, libc::SIGKILL) };
    // Not reached: the signal is delivered before kill returns.
    eprintln!(
        "taurus agent supervise: cannot kill the task's process group: {}",
        std::io::Error::last_os_error()
    );
    ExitCode::FAILURE
}

/// Whether stdin is a socket (the agent's control socket).
fn control_is_socket() -> bool {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid and writable for the call.
    let rc = unsafe { libc::fstat(CONTROL_FD, &mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// Makes sure we lead our process group, so that `kill(0, ...)` reaches the task and never the
/// agent (the agent starts us that way; this covers anyone else).
fn lead_own_group() -> std::io::Result<()> {
    // SAFETY: getpid, getpgrp and setpgid(0, 0) have no memory-safety preconditions.
    unsafe {
        if libc::getpgrp() == libc::getpid() {
            return Ok(());
        }
        if libc::setpgid(0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` (our child) exits; `None` when the
/// kernel has no `pidfd_open` (the supervisor then looks every few milliseconds).
fn pidfd_open(pid: u32) -> Option<libc::c_int> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (close-on-exec) or
    // -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Exited(0),
            Status::Exited(-3),
            Status::Signalled(9),
            Status::Fenced,
            Status::Killed,
            Status::Error("cannot start \"x\": No such file".into()),
        ] {
            assert_eq!(Status::parse(&s.to_line()), Some(s.clone()), "{s:?}");
        }
        assert_eq!(Status::Error("two\nlines".into()).to_line(), "error two lines");
        for bad in ["", "exit", "exit x", "signal", "fenced now", "hello"] {
            assert_eq!(Status::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_complete_lines_count_and_the_last_status_wins() {
        assert_eq!(Status::last_in(b""), None);
        assert_eq!(Status::last_in(b"exit 3"), None, "no newline: cut short");
        assert_eq!(Status::last_in(b"exit 3\n"), Some(Status::Exited(3)));
        assert_eq!(
            Status::last_in(b"noise\nsignal 9\nexit"),
            Some(Status::Signalled(9))
        );
    }

    #[test]
    fn control_lines_set_the_lease_and_ask_for_kills() {
        let mut c = Control::default();
        c.take(b"L 100\nL 2");
        assert_eq!(c.deadline, Some(100));
        assert_eq!(c.verdict(99), None);
        assert_eq!(c.verdict(100), Some(Status::Fenced));
        c.take(b"00\n");
        assert_eq!(c.deadline, Some(200), "a line split across reads");
        c.take(b"X whatever\n\n");
        assert_eq!(
            (c.deadline, c.kill),
            (Some(200), false),
            "unknown lines are ignored"
        );
        c.take(b"L 50\n");
        assert_eq!(c.deadline, Some(50), "the agent's word is the last one");
        c.take(b"K\n");
        assert_eq!(c.verdict(0), Some(Status::Killed));

        let mut c = Control::default();
        c.take(b"L soon\n");
        assert_eq!(c.verdict(0), Some(Status::Killed), "an unreadable lease kills");

        let mut c = Control::default();
        c.take(&[b'x'; MAX_LINE + 1]);
        assert!(c.partial.is_empty(), "an endless line is dropped");
        assert_eq!(c.verdict(u64::MAX), None, "no lease: no deadline");
    }
}
