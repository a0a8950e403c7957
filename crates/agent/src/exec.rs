//! The executor: runs one attempt of a task as a process group and says how it ended. It knows
//! nothing of masters, reports or leases, so it is tested on its own (`tests/executor.rs`).
//!
//! # How a task runs
//!
//! - `command[0]` is the program (looked up in the task's `PATH`), the rest its arguments.
//! - The environment is clean: nothing of the agent's. It holds `PATH` (`exec.path`), `HOME` and
//!   `TMPDIR` (the working directory), then the task's own `env` (which may replace those
//!   three), then `TAURUS_TASK_ID`, `TAURUS_ATTEMPT` and `TAURUS_FENCING_TOKEN` (which it may
//!   not). stdin is `/dev/null`.
//! - The working directory is `work_dir/tasks/<task id>-<token>`, created (mode 0700, owned by
//!   the task's user) before and removed (with whatever the task left in it, never following a
//!   link out of it) after, however the attempt ended.
//! - The process runs as the configured user, in its own cgroup or under rlimits, with
//!   `PR_SET_NO_NEW_PRIVS`: see [`crate::sandbox`]. Under a supervisor only the command is
//!   confined, the supervisor keeps the agent's identity (the task can neither signal nor trace
//!   it); it learns the confinement from an `S` line on its control socket.
//! - With a supervisor ([`Executor::with_supervisor`], what `taurus agent start` sets up), the
//!   agent starts `PROGRAM agent supervise -- COMMAND...` instead, with the same environment,
//!   directory and output pipes, and a control socket as its stdin. The supervisor leads the
//!   attempt's process group and starts the command in it; it kills the group when the agent
//!   dies (even by SIGKILL), when the lease the agent last told it about runs out (even while
//!   the agent is paused), or when the command's leader exits. It reports how the command ended, which
//!   gives the same [`Outcome`] as running the command directly. See [`crate::supervisor`].
//!   [`Executor::set_lease_deadline`] is how the runtime tells every supervisor the lease.
//! - Without one, the process leads its own process group (`setpgid(0, 0)`) and asks the kernel
//!   to SIGKILL it when the agent dies (`PR_SET_PDEATHSIG`); that reaches the leader only, not
//!   its children, and does nothing for a paused agent. Spawning happens on a Tokio worker
//!   thread, never a blocking-pool thread: the death signal fires when the *thread* that forked
//!   exits.
//! - Either way the group (the supervisor's, which the command is in) is listed in
//!   `work_dir/running.pgids` while it runs, so that the next agent start kills whatever is
//!   left of it ([`crate::pgroup::kill_leftovers`]).
//! - stdout and stderr are read concurrently; only the last `output_tail_bytes` of each are kept.
//! - When the leader exits, whatever is left of its group is SIGKILLed: a task never leaves
//!   background processes behind.
//!
//! # How it ends
//!
//! | what happened                                   | end         | exit_code | error                  |
//! |-------------------------------------------------|-------------|-----------|------------------------|
//! | exit 0                                          | `succeeded` | `Some(0)` | empty                  |
//! | exit n ≠ 0                                      | `failed`    | `Some(n)` | empty                  |
//! | killed by a signal the agent did not send       | `failed`    | `None`    | `killed by signal N`   |
//! | could not be started (no such program, ...)     | `failed`    | `None`    | why                    |
//! | ran past the task's timeout                     | `timed_out` | as exited | `timed out after ...`  |
//! | stopped through its [`KillSwitch`]              | `killed`    | as exited | `killed: <reason>`     |
//!
//! A timeout, and a stop for [`StopReason::Shutdown`], send SIGTERM to the group and SIGKILL
//! `kill_grace` later (at once when `kill_grace` is 0). Every other [`StopReason`] means the
//! attempt may already run elsewhere, so the group is SIGKILLed at once, from
//! [`KillSwitch::kill`] itself (no waiting for this task to be scheduled).
//!
//! # Built-in commands
//!
//! Commands whose program starts with `taurus:` run inside the agent, without a process:
//! - `taurus:noop` succeeds at once. Benchmarks use it to measure the scheduler, not `fork`.
//! - `taurus:sleep MS` sleeps `MS` milliseconds, then succeeds; timeouts and stops apply as to
//!   a process. Tests use it.
//!
//! Any other `taurus:` program fails with an error naming the known ones.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::AgentError;
use crate::lease;
use crate::pgroup;
use crate::pgroup::PgidFile;
use crate::sandbox;
use crate::sandbox::Demand;
use crate::sandbox::ExecSettings;
use crate::sandbox::Sandbox;
use crate::supervisor;
use crate::supervisor::Status;
use crate::tail::TailBuffer;

/// Prefix of built-in commands.
pub const BUILTIN_PREFIX: &str = "taurus:";

/// After the process group is gone, how long the output readers may take to reach the end of
/// the pipes. Only a process that escaped the group (`setsid`) and kept the pipe open makes
/// them wait that long; what was read until then is kept.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Most bytes of status read from a supervisor (it writes one short line).
const STATUS_MAX: u64 = 64 * 1024;

/// One attempt to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub task_id: String,
    /// 1-based attempt number (for the environment and logs).
    pub attempt: u32,
    /// The attempt's fencing token; also names its working directory.
    pub token: u64,
    /// argv; `command[0]` is the program.
    pub command: Vec<String>,
    /// The task's environment variables (added to a clean environment; see the module docs).
    pub env: BTreeMap<String, String>,
    /// Execution timeout; `None` for none.
    pub timeout: Option<Duration>,
    /// CPU demand in thousandths of a core: the task's CPU limit (cgroup v2 only); 0 for none.
    pub cpu_millis: u32,
    /// Memory demand in MiB: the task's memory limit; 0 for none.
    pub memory_mb: u64,
}

/// How an attempt ended on the agent (the `end` of a FINISHED report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Succeeded,
    Failed,
    TimedOut,
    Killed,
}

impl End {
    /// The wire name (`succeeded | failed | timed_out | killed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Killed => "killed",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a FINISHED report says about an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub end: End,
    /// The exit code, or `None` when the process was ended by a signal or never started.
    pub exit_code: Option<i32>,
    /// Why it ended, when it did not end by itself with an exit code (see the module docs).
    pub error: String,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// The task's supervisor killed it because the agent's lease ran out (the agent was paused
    /// or cut off and could not do it itself). Such an attempt is never reported.
    lease_expired: bool,
}

impl Outcome {
    fn new(end: End, exit_code: Option<i32>, error: impl Into<String>) -> Self {
        Self {
            end,
            exit_code,
            error: error.into(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            lease_expired: false,
        }
    }

    /// Whether the task's supervisor killed the attempt because the agent's lease ran out:
    /// the agent must treat itself as fenced and report nothing about it.
    pub fn lease_expired(&self) -> bool {
        self.lease_expired
    }

    fn failed(error: impl Into<String>) -> Self {
        Self::new(End::Failed, None, error)
    }
}

/// Why the agent stops an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A master said the attempt is no longer current (`stop`, or a `stale` report), or the
    /// task was cancelled. SIGKILL at once.
    Stopped,
    /// The agent's lease ran out, or its epoch is no longer current. SIGKILL at once.
    Fenced,
    /// The agent is shutting down without draining (`drain_timeout` 0). SIGTERM, then SIGKILL
    /// after `kill_grace`.
    Shutdown,
    /// The agent drained before shutting down (a signal, or `taurus agent drain --exit`) and
    /// the drain deadline passed with the attempt still running. SIGTERM, then SIGKILL after
    /// `kill_grace`.
    DrainDeadline,
}

impl StopReason {
    /// Whether the group is SIGKILLed at once (the attempt may already run elsewhere).
    pub fn is_immediate(self) -> bool {
        !matches!(self, Self::Shutdown | Self::DrainDeadline)
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Stopped => "the attempt was stopped",
            Self::Fenced => "the agent fenced itself",
            Self::Shutdown => "the agent is shutting down",
            Self::DrainDeadline => "the agent's drain deadline passed while shutting down",
        }
    }
}

/// Stops one attempt, from anywhere, before or while it runs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KillSwitch {
    inner: Arc<SwitchInner>,
}

#[derive(Debug)]
struct SwitchInner {
    reason: watch::Sender<Option<StopReason>>,
    /// The running process group, 0 when there is none (yet, or any more).
    pgid: AtomicI32,
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl KillSwitch {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(SwitchInner {
                reason: watch::Sender::new(None),
                pgid: AtomicI32::new(0),
            }),
        }
    }

    /// Stops the attempt. For an immediate reason the process group is SIGKILLed right here;
    /// otherwise the executor starts a graceful kill. The first reason sticks, except that an
    /// immediate reason overrides a graceful one.
    pub fn kill(&self, reason: StopReason) {
        self.inner.reason.send_if_modified(|current| match current {
            None => {
                *current = Some(reason);
                true
            }
            Some(r) if !r.is_immediate() && reason.is_immediate() => {
                *current = Some(reason);
                true
            }
            Some(_) => false,
        });
        if reason.is_immediate() {
            let pgid = self.inner.pgid.load(Ordering::SeqCst);
            if pgid > 0 {
                pgroup::signal_group(pgid, libc::SIGKILL);
            }
        }
    }

    /// The reason given to [`KillSwitch::kill`], if it was called.
    pub fn reason(&self) -> Option<StopReason> {
        *self.inner.reason.borrow()
    }

    /// Publishes the running group; kills it at once if an immediate stop came first.
    fn set_pgid(&self, pgid: i32) {
        self.inner.pgid.store(pgid, Ordering::SeqCst);
        if self.reason().is_some_and(StopReason::is_immediate) {
            pgroup::signal_group(pgid, libc::SIGKILL);
        }
    }

    fn clear_pgid(&self) {
        self.inner.pgid.store(0, Ordering::SeqCst);
    }
}

/// Runs attempts. One per agent; shared by every running attempt.
#[derive(Debug)]
pub struct Executor {
    tasks_dir: PathBuf,
    output_tail_bytes: usize,
    kill_grace: Duration,
    pgids: PgidFile,
    spawned: AtomicU64,
    /// The program started as `PROGRAM agent supervise -- COMMAND...`; `None`: run commands
    /// directly.
    supervisor: Option<PathBuf>,
    /// The lease deadline (`CLOCK_MONOTONIC` ns) every supervisor is told; `None` until known.
    lease: watch::Sender<Option<u64>>,
    /// Who tasks run as, and their limits.
    sandbox: Sandbox,
}

impl Executor {
    /// An executor working under `work_dir` (created if missing, made absolute).
    pub fn new(work_dir: &Path, output_tail_bytes: usize, kill_grace: Duration) -> Result<Self, AgentError> {
        let work_dir = std::path::absolute(work_dir)
            .map_err(|e| AgentError::io(format!("work directory {}", work_dir.display()), e))?;
        let tasks_dir = work_dir.join("tasks");
        std::fs::create_dir_all(&tasks_dir)
            .map_err(|e| AgentError::io(format!("cannot create {}", tasks_dir.display()), e))?;
        Ok(Self {
            tasks_dir,
            output_tail_bytes,
            kill_grace,
            pgids: PgidFile::new(&work_dir),
            spawned: AtomicU64::new(0),
            supervisor: None,
            lease: watch::Sender::new(None),
            sandbox: Sandbox::new(ExecSettings::default()),
        })
    }

    /// Runs tasks as `settings` say (user, `PATH`, limits); the default is the agent's own
    /// user, [`sandbox::DEFAULT_PATH`] and cgroup v2 limits where available.
    pub fn with_exec_settings(mut self, settings: ExecSettings) -> Result<Self, AgentError> {
        self.sandbox = Sandbox::new(settings);
        self.open_tasks_dir()?;
        Ok(self)
    }

    /// The settings tasks run with.
    pub fn exec_settings(&self) -> &ExecSettings {
        self.sandbox.settings()
    }

    /// Whether task limits are enforced with cgroup v2 (else with rlimits).
    pub fn uses_cgroups(&self) -> bool {
        self.sandbox.uses_cgroups()
    }

    /// `tasks/` is 0711 when tasks run as other users: each may reach its own directory, none
    /// may list the others.
    fn open_tasks_dir(&self) -> Result<(), AgentError> {
        use std::os::unix::fs::PermissionsExt;
        if self.sandbox.changes_user() {
            std::fs::set_permissions(&self.tasks_dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| AgentError::io(format!("cannot open up {}", self.tasks_dir.display()), e))?;
            warn_if_not_searchable(&self.tasks_dir);
        }
        Ok(())
    }

    /// Runs every command under a supervisor: `program agent supervise -- COMMAND...` (see
    /// [`crate::supervisor`]). `program` is normally the agent's own binary.
    pub fn with_supervisor(mut self, program: impl Into<PathBuf>) -> Self {
        self.supervisor = Some(program.into());
        self
    }

    /// The supervisor program, if commands run under one.
    pub fn supervisor(&self) -> Option<&Path> {
        self.supervisor.as_deref()
    }

    /// Tells every supervised attempt, running or to come, that the agent's lease now ends at
    /// `deadline`; its supervisor kills it once that passes, whatever the agent is doing.
    /// `None` (no lease) changes nothing: the agent kills every attempt before it lets its
    /// lease go, and starts none without one. Without a supervisor this only records it.
    pub fn set_lease_deadline(&self, deadline: Option<std::time::Instant>) {
        let Some(deadline) = deadline else {
            return;
        };
        let ns = lease::monotonic_ns(deadline);
        self.lease.send_if_modified(|current| {
            let changed = *current != Some(ns);
            *current = Some(ns);
            changed
        });
    }

    /// Kills the process groups a previous incarnation left running (see
    /// [`pgroup::kill_leftovers`]), its task cgroups and the processes of the dynamic uids, and
    /// empties the per-task directories. Call once, before the first task. Blocking; returns the
    /// groups it killed.
    pub fn kill_leftovers(&self) -> Result<Vec<i32>, AgentError> {
        let work_dir = self.tasks_dir.parent().unwrap_or(&self.tasks_dir);
        let killed = pgroup::kill_leftovers(work_dir).map_err(|e| {
            AgentError::io(
                format!("cannot read {}", work_dir.join(pgroup::PGID_FILE).display()),
                e,
            )
        })?;
        self.sandbox.kill_leftovers();
        match sandbox::remove_tree(&self.tasks_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(AgentError::io(
                    format!("cannot empty {}", self.tasks_dir.display()),
                    e,
                ));
            }
        }
        std::fs::create_dir_all(&self.tasks_dir)
            .map_err(|e| AgentError::io(format!("cannot create {}", self.tasks_dir.display()), e))?;
        self.open_tasks_dir()?;
        Ok(killed)
    }

    /// How many processes this executor has started (built-in commands start none).
    pub fn processes_spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Process groups of the attempts running now.
    pub fn running_groups(&self) -> Vec<i32> {
        self.pgids.running()
    }

    /// The working directory an attempt gets.
    pub fn task_dir(&self, req: &ExecRequest) -> PathBuf {
        self.tasks_dir.join(format!("{}-{}", req.task_id, req.token))
    }

    /// Runs one attempt to its end. `switch` stops it (also before it starts).
    pub async fn run(&self, req: &ExecRequest, switch: &KillSwitch) -> Outcome {
        if let Some(reason) = switch.reason() {
            return Outcome::new(End::Killed, None, format!("killed: {}", reason.describe()));
        }
        let Some(program) = req.command.first() else {
            return Outcome::failed("empty command");
        };
        if let Some(name) = program.strip_prefix(BUILTIN_PREFIX) {
            return run_builtin(name, req, switch).await;
        }
        self.run_process(req, switch).await
    }

    async fn run_process(&self, req: &ExecRequest, switch: &KillSwitch) -> Outcome {
        if req.task_id.is_empty() || req.task_id.contains(['/', '\0']) {
            return Outcome::failed(format!("unusable task id {:?}", req.task_id));
        }
        let dir = self.task_dir(req);
        let demand = Demand {
            cpu_millis: req.cpu_millis,
            memory_mb: req.memory_mb,
        };
        let name = format!("{}-{}", req.task_id, req.token);
        let sandbox = match self.sandbox.prepare(&name, dir.clone(), demand).await {
            Ok(sandbox) => sandbox,
            Err(e) => return Outcome::failed(e),
        };
        let mut lease_rx = self.lease.subscribe();
        let built = match &self.supervisor {
            None => self
                .direct_command(req, sandbox.confinement())
                .map(|cmd| (cmd, None)),
            Some(program) => self
                .supervised_command(program, req, &mut lease_rx, sandbox.confinement())
                .map(|(cmd, control)| (cmd, Some(control))),
        };
        let (mut cmd, control) = match built {
            Ok(built) => built,
            Err(e) => {
                sandbox.cleanup().await;
                return Outcome::failed(format!("cannot set up the task: {e}"));
            }
        };
        // A clean environment: the agent's own (its secrets, its configuration) is not the
        // task's business.
        cmd.env_clear()
            .env("PATH", &self.sandbox.settings().path)
            .env("HOME", &dir)
            .env("TMPDIR", &dir)
            .envs(&req.env)
            .env("TAURUS_TASK_ID", &req.task_id)
            .env("TAURUS_ATTEMPT", req.attempt.to_string())
            .env("TAURUS_FENCING_TOKEN", req.token.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // A supervisor is not killed when this future is dropped: closing the control
            // socket makes it kill the whole group, where a SIGKILL would reach it alone.
            .kill_on_drop(control.is_none());
        let spawned = cmd.spawn();
        // Our copy of the supervisor's end of the control socket goes now: the supervisor must
        // be its only holder, so that its exit reads as end of file.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                sandbox.cleanup().await;
                return match &self.supervisor {
                    None => Outcome::failed(format!("cannot start {:?}: {e}", req.command[0])),
                    Some(program) => Outcome::failed(format!(
                        "cannot start the task supervisor {}: {e}",
                        program.display()
                    )),
                };
            }
        };
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let mut control = match control.map(tokio::net::UnixStream::from_std).transpose() {
            Ok(control) => control,
            Err(e) => {
                // Cannot happen (the socket is fresh and non-blocking). Kill what started.
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    pgroup::signal_group(pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
                sandbox.cleanup().await;
                return Outcome::failed(format!("cannot use the task supervisor's socket: {e}"));
            }
        };
        let Some(pgid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
            // Cannot happen for a child that was not waited for; be safe anyway.
            let _ = child.kill().await;
            sandbox.cleanup().await;
            return Outcome::failed("the started process has no pid");
        };
        self.pgids.add(pgid);
        switch.set_pgid(pgid);
        tracing::debug!(task = %req.task_id, attempt = req.attempt, token = req.token, pgid, "started");

        let stdout = Arc::new(Mutex::new(TailBuffer::new(self.output_tail_bytes)));
        let stderr = Arc::new(Mutex::new(TailBuffer::new(self.output_tail_bytes)));
        let readers = [
            child
                .stdout
                .take()
                .map(|r| tokio::spawn(read_into(r, stdout.clone()))),
            child
                .stderr
                .take()
                .map(|r| tokio::spawn(read_into(r, stderr.clone()))),
        ];

        let mut stop_rx = switch.inner.reason.subscribe();
        let timeout_at = req.timeout.map(|t| Instant::now() + t);
        let mut cause: Option<Cause> = None;
        let mut watching_stop = true;
        let mut acted_on: Option<StopReason> = None;
        let mut hard_kill_at: Option<Instant> = None;
        let mut telling_lease = control.is_some();
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                changed = lease_rx.changed(), if telling_lease => match changed {
                    Err(_) => telling_lease = false,
                    Ok(()) => {
                        let deadline = *lease_rx.borrow_and_update();
                        if let (Some(ns), Some(socket)) = (deadline, &control)
                            && !tell(socket, &supervisor::lease_line(ns))
                        {
                            tracing::warn!(
                                task = %req.task_id,
                                token = req.token,
                                "cannot tell the task supervisor the lease; it enforces the last one it got"
                            );
                            telling_lease = false;
                        }
                    }
                },
                () = sleep_until(timeout_at), if cause.is_none() => {
                    cause = Some(Cause::TimedOut(req.timeout.unwrap_or_default()));
                    hard_kill_at = self.soft_kill(pgid);
                }
                reason = next_reason(&mut stop_rx, acted_on), if watching_stop => match reason {
                    None => watching_stop = false,
                    Some(reason) => {
                        acted_on = Some(reason);
                        cause.get_or_insert(Cause::Stopped(reason));
                        if reason.is_immediate() {
                            pgroup::signal_group(pgid, libc::SIGKILL);
                            watching_stop = false;
                        } else if hard_kill_at.is_none() {
                            hard_kill_at = self.soft_kill(pgid);
                        }
                    }
                },
                () = sleep_until(hard_kill_at), if hard_kill_at.is_some() => {
                    pgroup::signal_group(pgid, libc::SIGKILL);
                    hard_kill_at = None;
                }
            }
        };
        // An immediate stop SIGKILLs the group from `KillSwitch::kill` itself, so the end of the
        // process can be seen here before the stop is: the stop is why it ended.
        if cause.is_none()
            && let Some(reason) = switch.reason().filter(|r| r.is_immediate())
        {
            cause = Some(Cause::Stopped(reason));
        }
        // Whatever the leader left in its group goes with it. The group id cannot have been
        // reused while a member lives; once it is empty, killpg fails harmlessly.
        switch.clear_pgid();
        pgroup::signal_group(pgid, libc::SIGKILL);
        self.pgids.remove(pgid);

        let drain_until = Instant::now() + OUTPUT_DRAIN;
        for reader in readers.into_iter().flatten() {
            let abort = reader.abort_handle();
            if tokio::time::timeout_at(drain_until, reader).await.is_err() {
                abort.abort();
                tracing::warn!(
                    task = %req.task_id,
                    token = req.token,
                    "output still open after the process group ended (a process escaped it?)"
                );
            }
        }
        sandbox.cleanup().await;

        // What the supervisor said: it is gone, so its end of the socket is closed and the read
        // ends (the command never had that socket).
        let said = match control.as_mut() {
            Some(socket) => {
                let mut text = Vec::new();
                let read = tokio::time::timeout(
                    OUTPUT_DRAIN,
                    (&mut *socket).take(STATUS_MAX).read_to_end(&mut text),
                )
                .await;
                if read.is_err() {
                    tracing::warn!(task = %req.task_id, token = req.token, "the task supervisor's socket is still open");
                }
                Some(Status::last_in(&text))
            }
            None => None,
        };
        let mut outcome = match (status, said) {
            (Err(e), _) => Outcome::failed(format!("cannot wait for the process: {e}")),
            (Ok(status), None) => outcome_of(ended_of(status), cause),
            (Ok(status), Some(said)) => supervised_outcome(status, said, cause),
        };
        outcome.stdout_tail = lock(&stdout).to_string_lossy();
        outcome.stderr_tail = lock(&stderr).to_string_lossy();
        outcome
    }

    /// The command, run directly: in its own group, SIGKILLed by the kernel when the thread
    /// that forked it exits.
    fn direct_command(
        &self,
        req: &ExecRequest,
        confinement: &sandbox::Confinement,
    ) -> std::io::Result<tokio::process::Command> {
        let confinement = confinement.prepare()?;
        let mut cmd = tokio::process::Command::new(&req.command[0]);
        cmd.args(&req.command[1..]).stdin(Stdio::null());
        // SAFETY: getpid has no preconditions.
        let agent_pid = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (those of `Prepared::apply`, prctl, getppid); it allocates
        // nothing on success.
        unsafe {
            cmd.pre_exec(move || {
                // First: a change of identity clears the death signal.
                confinement.apply()?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The agent died between fork and prctl: the signal will never come.
                if libc::getppid() != agent_pid {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// `program agent supervise -- COMMAND...`, with one end of a new control socket as its
    /// stdin (returned: the other end, non-blocking). The current lease deadline and the task's
    /// confinement are already written, so the supervisor knows them before it starts the
    /// command. The supervisor keeps the agent's identity; only the command is confined.
    fn supervised_command(
        &self,
        program: &Path,
        req: &ExecRequest,
        lease_rx: &mut watch::Receiver<Option<u64>>,
        confinement: &sandbox::Confinement,
    ) -> std::io::Result<(tokio::process::Command, UnixStream)> {
        // Both ends close-on-exec: no other process of the agent inherits them; the supervisor
        // gets its end as stdin, which exec keeps.
        let (mut ours, theirs) = UnixStream::pair()?;
        if let Some(ns) = *lease_rx.borrow_and_update() {
            // A fresh socket's buffer takes a few bytes without blocking.
            ours.write_all(supervisor::lease_line(ns).as_bytes())?;
        }
        ours.write_all(confinement.to_line().as_bytes())?;
        ours.set_nonblocking(true)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(supervisor::SUPERVISE_ARGS)
            .arg("--")
            .args(&req.command)
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        // SAFETY: the closure runs in the forked child before exec and only calls signal(2),
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // The supervisor ignores SIGTERM from its first instruction on (a graceful kill
                // of the group is for the command); it gives the command the default back.
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                Ok(())
            });
        }
        Ok((cmd, ours))
    }

    /// SIGTERM now and SIGKILL at the returned time, or SIGKILL now when there is no grace.
    fn soft_kill(&self, pgid: i32) -> Option<Instant> {
        if self.kill_grace.is_zero() {
            pgroup::signal_group(pgid, libc::SIGKILL);
            None
        } else {
            pgroup::signal_group(pgid, libc::SIGTERM);
            Some(Instant::now() + self.kill_grace)
        }
    }
}

/// Why the agent ended an attempt.
#[derive(Clone, Copy, Debug)]
enum Cause {
    TimedOut(Duration),
    Stopped(StopReason),
}

/// How a task's process ended, learnt from its wait status or from its supervisor.
#[derive(Clone, Debug)]
enum Ended {
    Code(i32),
    Signal(i32),
    /// Neither (described).
    Other(String),
}

fn ended_of(status: ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Code(c),
        (None, Some(sig)) => Ended::Signal(sig),
        (None, None) => Ended::Other(format!("ended without exit code or signal ({status})")),
    }
}

fn outcome_of(ended: Ended, cause: Option<Cause>) -> Outcome {
    let code = match ended {
        Ended::Code(c) => Some(c),
        _ => None,
    };
    match cause {
        Some(Cause::TimedOut(t)) => Outcome::new(
            End::TimedOut,
            code,
            format!("timed out after {}", humantime::format_duration(t)),
        ),
        Some(Cause::Stopped(r)) => Outcome::new(End::Killed, code, format!("killed: {}", r.describe())),
        None => match ended {
            Ended::Code(0) => Outcome::new(End::Succeeded, Some(0), ""),
            Ended::Code(c) => Outcome::new(End::Failed, Some(c), ""),
            Ended::Signal(sig) => Outcome::new(End::Failed, None, format!("killed by signal {sig}")),
            Ended::Other(what) => Outcome::failed(what),
        },
    }
}

/// The outcome of a supervised command: what its supervisor `said` (its last status line, if
/// any) and, when it said nothing (it was killed with the group, or failed), its own wait
/// `status`. Built to equal what running the command directly gives.
fn supervised_outcome(status: ExitStatus, said: Option<Status>, cause: Option<Cause>) -> Outcome {
    match said {
        Some(Status::Exited(c)) => outcome_of(Ended::Code(c), cause),
        Some(Status::Signalled(sig)) => outcome_of(Ended::Signal(sig), cause),
        // Nothing was started (or could be waited for): as when a spawn fails.
        Some(Status::Error(why)) => Outcome::failed(why),
        Some(Status::Fenced) if cause.is_none() => Outcome {
            lease_expired: true,
            ..Outcome::new(
                End::Killed,
                None,
                "killed: the agent's lease expired (its task supervisor killed it)",
            )
        },
        Some(Status::Killed) if cause.is_none() => Outcome::new(
            End::Killed,
            None,
            "killed: the task supervisor was told to kill it",
        ),
        Some(Status::Fenced | Status::Killed) => outcome_of(Ended::Signal(libc::SIGKILL), cause),
        None => match ended_of(status) {
            // Killed with its group (by the agent, or by the task itself): as the command would
            // have been.
            Ended::Signal(sig) => outcome_of(Ended::Signal(sig), cause),
            Ended::Code(c) => outcome_of(
                Ended::Other(format!(
                    "the task supervisor exited with status {c} without saying how the task ended"
                )),
                cause,
            ),
            other => outcome_of(other, cause),
        },
    }
}

/// Writes one control line to a supervisor without waiting. False when it could not be written
/// whole (the supervisor is gone, or has not read for so long that the buffer is full).
fn tell(socket: &tokio::net::UnixStream, line: &str) -> bool {
    matches!(socket.try_write(line.as_bytes()), Ok(n) if n == line.len())
}

async fn run_builtin(name: &str, req: &ExecRequest, switch: &KillSwitch) -> Outcome {
    match name {
        "noop" => Outcome::new(End::Succeeded, Some(0), ""),
        "sleep" => {
            let ms = match req.command.get(1).map(|s| s.parse::<u64>()) {
                Some(Ok(ms)) => ms,
                _ => return Outcome::failed("usage: taurus:sleep MILLISECONDS"),
            };
            let timeout_at = req.timeout.map(|t| Instant::now() + t);
            let mut stop_rx = switch.inner.reason.subscribe();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => Outcome::new(End::Succeeded, Some(0), ""),
                () = sleep_until(timeout_at) => Outcome::new(
                    End::TimedOut,
                    None,
                    format!("timed out after {}", humantime::format_duration(req.timeout.unwrap_or_default())),
                ),
                Some(r) = next_reason(&mut stop_rx, None) => {
                    Outcome::new(End::Killed, None, format!("killed: {}", r.describe()))
                }
            }
        }
        other => Outcome::failed(format!(
            "unknown built-in command {BUILTIN_PREFIX}{other} (known: {BUILTIN_PREFIX}noop, \
             {BUILTIN_PREFIX}sleep MS)"
        )),
    }
}

/// The stop reason once it differs from `last` (the one already acted on): the first reason,
/// then an immediate one replacing a graceful one. `None` when the switch is gone.
async fn next_reason(
    rx: &mut watch::Receiver<Option<StopReason>>,
    last: Option<StopReason>,
) -> Option<StopReason> {
    loop {
        if let Some(r) = *rx.borrow_and_update()
            && Some(r) != last
        {
            return Some(r);
        }
        if rx.changed().await.is_err() {
            return None;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_into(mut reader: impl AsyncRead + Unpin, tail: Arc<Mutex<TailBuffer>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => lock(&tail).push(&buf[..n]),
        }
    }
}

fn lock(tail: &Mutex<TailBuffer>) -> std::sync::MutexGuard<'_, TailBuffer> {
    tail.lock().unwrap_or_else(|e| e.into_inner())
}

/// Warns when a user other than the agent's cannot reach `dir` by its path (an ancestor is not
/// searchable by others): tasks then run in their directory, but `$HOME` and `$TMPDIR` do not
/// resolve for them.
fn warn_if_not_searchable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(ancestor)
            && meta.permissions().mode() & 0o001 == 0
        {
            tracing::warn!(
                dir = %ancestor.display(),
                "tasks run as other users but cannot search this ancestor of the work directory \
                 (chmod o+x); their $HOME and $TMPDIR paths will not resolve"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_names_match_the_domain_names() {
        use taurus_core::types::AttemptEnd;
        for (ours, theirs) in [
            (End::Succeeded, AttemptEnd::Succeeded),
            (End::Failed, AttemptEnd::Failed),
            (End::TimedOut, AttemptEnd::TimedOut),
            (End::Killed, AttemptEnd::Killed),
        ] {
            assert_eq!(ours.as_str(), theirs.as_str());
        }
    }

    #[tokio::test]
    async fn an_immediate_reason_overrides_a_graceful_one_but_not_the_reverse() {
        let s = KillSwitch::new();
        let mut rx = s.inner.reason.subscribe();
        s.kill(StopReason::Shutdown);
        assert_eq!(next_reason(&mut rx, None).await, Some(StopReason::Shutdown));
        s.kill(StopReason::Fenced);
        let next = next_reason(&mut rx, Some(StopReason::Shutdown)).await;
        assert_eq!(next, Some(StopReason::Fenced));
        s.kill(StopReason::Shutdown);
        assert_eq!(s.reason(), Some(StopReason::Fenced));
    }
}
