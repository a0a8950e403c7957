//! The executor with a task supervisor, against real processes: the outcomes are those of
//! running the command directly; stops, timeouts and the end of the leader take the whole group;
//! the supervisor kills the group at the lease deadline although the agent does nothing, and
//! when the agent is SIGKILLed or paused (SIGSTOP); and the control protocol itself.
//!
//! No libtest harness (`harness = false`): this binary is also the supervisor program, run as
//! `<this binary> agent supervise -- COMMAND...` like the `taurus` binary in production, and the
//! "agent" process that the SIGKILL and SIGSTOP tests kill or pause (run with
//! [`HELPER_AGENT_DIR`] set). `main` runs the tests below one after the other; arguments that do
//! not start with `-` filter them by name (`--exact` for whole names), `--list` lists them.

use std::ffi::OsString;
use std::io::BufRead;
use std::io::Read;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use taurus_agent::End;
use taurus_agent::ExecRequest;
use taurus_agent::Executor;
use taurus_agent::KillSwitch;
use taurus_agent::StopReason;
use taurus_agent::pgroup;
use taurus_agent::supervisor;

mod common;

use common::eventually;
use common::live_members;
use common::request;
use common::sh;
use common::start;

const TAIL: usize = 16 * 1024;
/// Set for the helper "agent" process: its work directory.
const HELPER_AGENT_DIR: &str = "TAURUS_SUPERVISOR_TEST_AGENT_DIR";
/// With [`HELPER_AGENT_DIR`]: the lease the helper keeps renewing, in ms (none if unset).
const HELPER_AGENT_LEASE_MS: &str = "TAURUS_SUPERVISOR_TEST_AGENT_LEASE_MS";

type TestFn = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|| Box::pin($name()) as _) as TestFn)),*]
    };
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() >= 4
        && args[1] == supervisor::SUPERVISE_ARGS[0]
        && args[2] == supervisor::SUPERVISE_ARGS[1]
        && args[3] == "--"
    {
        return supervisor::main(args[4..].to_vec());
    }
    if let Ok(dir) = std::env::var(HELPER_AGENT_DIR) {
        return helper_agent(Path::new(&dir));
    }

    let tests = tests![
        outcomes_are_those_of_running_the_command_directly,
        a_stop_kills_the_supervisor_and_the_whole_task_at_once,
        background_processes_end_with_the_leader,
        the_supervisor_kills_the_task_at_the_lease_deadline_and_renewals_move_it,
        nothing_starts_when_the_lease_is_already_over,
        an_agent_killed_by_sigkill_takes_its_whole_task_with_it,
        a_paused_agents_task_dies_at_its_lease_deadline,
        the_control_socket_protocol,
    ];
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<String> = args[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(test());
        });
        match result {
            Ok(()) => println!("test {name} ... ok ({:?})", started.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if failed.is_empty() {
        println!("\ntest result: ok\n");
        ExitCode::SUCCESS
    } else {
        println!("\ntest result: FAILED: {failed:?}\n");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// This binary: the supervisor program.
fn supervisor_program() -> PathBuf {
    std::env::current_exe().expect("the test binary")
}

fn executor(dir: &Path, kill_grace: Duration, supervised: bool) -> Arc<Executor> {
    let exec = Executor::new(dir, TAIL, kill_grace).expect("executor");
    Arc::new(if supervised {
        exec.with_supervisor(supervisor_program())
    } else {
        exec
    })
}

// ---------------------------------------------------------------------------------------------
// The executor with a supervisor
// ---------------------------------------------------------------------------------------------

/// Every way a command can end gives the same outcome (end, exit code, error, output) with a
/// supervisor as without.
async fn outcomes_are_those_of_running_the_command_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut greeting =
        sh("echo \"$GREETING|$TAURUS_TASK_ID|$TAURUS_ATTEMPT|$TAURUS_FENCING_TOKEN\"; pwd; ls");
    greeting.env.insert("GREETING".into(), "hello world".into());
    let mut timed_out = sh("sleep 30 & sleep 30");
    timed_out.timeout = Some(Duration::from_millis(300));
    let mut term_trapped = sh("trap 'echo got-term; exit 7' TERM; sleep 30 & wait");
    term_trapped.timeout = Some(Duration::from_millis(300));
    let mut term_ignored = sh("trap '' TERM; sleep 30");
    term_ignored.timeout = Some(Duration::from_millis(200));
    let zero = Duration::ZERO;
    let cases: Vec<(&str, ExecRequest, Duration)> = vec![
        ("true", request(&["true"]), zero),
        ("exit 3", sh("echo out; echo oops >&2; exit 3"), zero),
        ("SIGKILL", sh("kill -9 $$"), zero),
        ("SIGTERM", sh("kill -TERM $$"), zero),
        ("no such program", request(&["/no/such/program"]), zero),
        ("not executable", request(&["/etc/hostname"]), zero),
        ("empty", request(&[]), zero),
        ("env and directory", greeting, zero),
        ("stdin is empty", sh("cat; echo read-all"), zero),
        ("output tail", sh("seq 1 20000; seq 1 3000 >&2"), zero),
        ("timeout", timed_out, zero),
        ("timeout, SIGTERM trapped", term_trapped, Duration::from_secs(5)),
        (
            "timeout, SIGTERM ignored",
            term_ignored,
            Duration::from_millis(300),
        ),
    ];
    for (what, req, grace) in cases {
        let direct = executor(dir.path(), grace, false)
            .run(&req, &KillSwitch::new())
            .await;
        let supervised = executor(dir.path(), grace, true)
            .run(&req, &KillSwitch::new())
            .await;
        assert_eq!(supervised, direct, "{what}: supervised vs direct");
        assert!(!supervised.lease_expired(), "{what}");
    }

    // And they are what they should be (tests/executor.rs checks the direct ones in detail).
    let exec = executor(dir.path(), Duration::from_secs(5), true);
    let out = exec.run(&sh("kill -9 $$"), &KillSwitch::new()).await;
    assert_eq!(
        (out.end, out.exit_code, out.error.as_str()),
        (End::Failed, None, "killed by signal 9")
    );
    let out = exec
        .run(&request(&["/no/such/program"]), &KillSwitch::new())
        .await;
    assert_eq!((out.end, out.exit_code), (End::Failed, None));
    assert!(
        out.error.starts_with("cannot start \"/no/such/program\": "),
        "{out:?}"
    );
    let mut req = sh("trap 'echo got-term; exit 7' TERM; sleep 30 & wait");
    req.timeout = Some(Duration::from_millis(300));
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!((out.end, out.exit_code), (End::TimedOut, Some(7)), "{out:?}");
    assert_eq!(out.stdout_tail, "got-term\n");
    assert!(exec.running_groups().is_empty());
}

/// An immediate stop SIGKILLs the supervisor's group, which holds the whole task, at once.
async fn a_stop_kills_the_supervisor_and_the_whole_task_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::from_secs(30), true);
    let switch = KillSwitch::new();
    // The supervisor, sh and two sleeps.
    let (handle, pgid) = start(&exec, sh("trap '' TERM; sleep 30 & sleep 30"), &switch, 4).await;
    let stopped_at = Instant::now();
    switch.kill(StopReason::Stopped);
    let out = handle.await.expect("joins");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "no grace for a stop"
    );
    assert_eq!((out.end, out.exit_code), (End::Killed, None), "{out:?}");
    assert_eq!(out.error, "killed: the attempt was stopped");
    eventually("the group to be gone", Duration::from_secs(5), || {
        !pgroup::group_has_live_members(pgid)
    })
    .await;
    assert!(exec.running_groups().is_empty());
}

/// When the task's leader exits, the supervisor kills what it left running, itself.
async fn background_processes_end_with_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO, true);
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("sleep 30 & echo started; sleep 0.3"), &switch, 3).await;
    let out = handle.await.expect("joins");
    assert_eq!(out.end, End::Succeeded, "{out:?}");
    assert_eq!(out.stdout_tail, "started\n");
    eventually("the background sleep to be gone", Duration::from_secs(5), || {
        !pgroup::group_has_live_members(pgid)
    })
    .await;
}

/// The agent (here: the test) does nothing but tell the lease: the supervisor kills the task
/// when it passes, not at an earlier deadline it was told before a renewal.
async fn the_supervisor_kills_the_task_at_the_lease_deadline_and_renewals_move_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO, true);
    let t0 = Instant::now();
    exec.set_lease_deadline(Some(t0 + Duration::from_millis(700)));
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("sleep 30 & sleep 30"), &switch, 4).await;
    tokio::time::sleep_until((t0 + Duration::from_millis(300)).into()).await;
    exec.set_lease_deadline(Some(t0 + Duration::from_millis(1500)));
    exec.set_lease_deadline(None); // changes nothing
    tokio::time::sleep_until((t0 + Duration::from_millis(1100)).into()).await;
    assert_eq!(
        live_members(pgid),
        4,
        "past the first deadline, before the renewed one: still running"
    );
    let out = handle.await.expect("joins");
    let ended = t0.elapsed();
    assert!(out.lease_expired(), "{out:?}");
    assert_eq!((out.end, out.exit_code), (End::Killed, None), "{out:?}");
    assert!(out.error.contains("lease expired"), "{out:?}");
    assert!(
        ended >= Duration::from_millis(1500) && ended < Duration::from_secs(4),
        "killed after {ended:?}, the lease ended at 1.5 s"
    );
    assert!(switch.reason().is_none(), "the executor did not stop it");
    eventually("the group to be gone", Duration::from_secs(2), || {
        !pgroup::group_has_live_members(pgid)
    })
    .await;
    assert!(exec.running_groups().is_empty());
}

/// A lease that is over before the supervisor starts: the command never runs.
async fn nothing_starts_when_the_lease_is_already_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO, true);
    exec.set_lease_deadline(Some(Instant::now()));
    let marker = dir.path().join("ran");
    let out = exec
        .run(
            &request(&["touch", &marker.display().to_string()]),
            &KillSwitch::new(),
        )
        .await;
    assert!(out.lease_expired(), "{out:?}");
    assert_eq!(out.end, End::Killed, "{out:?}");
    assert!(!marker.exists(), "the command ran");
}

// ---------------------------------------------------------------------------------------------
// A real agent process, SIGKILLed or paused
// ---------------------------------------------------------------------------------------------

/// The "agent" of the two tests below: a supervised executor running `sleep 30 & sleep 30`,
/// renewing a lease of `HELPER_AGENT_LEASE_MS` every 100 ms if that is set. Prints the task's
/// group as `PGID n`, then waits to be killed.
fn helper_agent(dir: &Path) -> ExitCode {
    let lease: Option<Duration> = std::env::var(HELPER_AGENT_LEASE_MS)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let exec = executor(dir, Duration::ZERO, true);
        if let Some(lease) = lease {
            exec.set_lease_deadline(Some(Instant::now() + lease));
            let e = exec.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    e.set_lease_deadline(Some(Instant::now() + lease));
                }
            });
        }
        let switch = KillSwitch::new();
        let (handle, pgid) = start(&exec, sh("sleep 30 & sleep 30"), &switch, 4).await;
        println!("PGID {pgid}");
        let _ = std::io::stdout().flush();
        let _ = handle.await;
    });
    ExitCode::SUCCESS
}

/// A helper agent process, SIGKILLed and reaped when dropped (a failed test may leave it
/// stopped).
struct HelperAgent(std::process::Child);

impl HelperAgent {
    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: plain kill(2) of our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    fn kill_and_reap(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HelperAgent {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Starts [`helper_agent`] and returns it and its task's group.
async fn start_helper_agent(dir: &Path, lease_ms: Option<u64>) -> (HelperAgent, i32) {
    let mut cmd = std::process::Command::new(supervisor_program());
    cmd.env(HELPER_AGENT_DIR, dir).stdout(Stdio::piped());
    if let Some(ms) = lease_ms {
        cmd.env(HELPER_AGENT_LEASE_MS, ms.to_string());
    }
    let mut agent = HelperAgent(cmd.spawn().expect("spawn the helper agent"));
    let stdout = agent.0.stdout.take().expect("piped");
    let pgid: i32 = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("PGID ").and_then(|p| p.trim().parse().ok()))
    })
    .await
    .expect("joins")
    .expect("the helper printed its task's group");
    assert_eq!(live_members(pgid), 4, "the supervisor, sh and two sleeps");
    (agent, pgid)
}

/// Without a supervisor a SIGKILLed agent's task loses only its leader (`tests/executor.rs`);
/// with one, the whole group goes at once, before any restart of the agent.
async fn an_agent_killed_by_sigkill_takes_its_whole_task_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, pgid) = start_helper_agent(dir.path(), None).await;
    agent.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    agent.kill_and_reap();
    eventually(
        "every process of the task to die with its agent",
        Duration::from_secs(2),
        || live_members(pgid) == 0,
    )
    .await;
    eprintln!("  task group gone {:?} after the SIGKILL", killed_at.elapsed());
}

/// A paused agent cannot fence itself; its task's supervisor kills the task when the last lease
/// the agent renewed runs out.
async fn a_paused_agents_task_dies_at_its_lease_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut agent, pgid) = start_helper_agent(dir.path(), Some(600)).await;
    // Renewed every 100 ms: alive well past the first deadline.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(live_members(pgid), 4, "the renewed lease holds");
    agent.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    eventually(
        "the paused agent's task to be killed at its lease deadline",
        Duration::from_secs(3),
        || live_members(pgid) == 0,
    )
    .await;
    let took = stopped_at.elapsed();
    agent.kill_and_reap();
    assert!(
        took >= Duration::from_millis(400),
        "killed {took:?} after the pause, before the lease (at least 500 ms left) ran out"
    );
    eprintln!("  task group gone {took:?} after the agent was paused (lease 600 ms)");
}

// ---------------------------------------------------------------------------------------------
// The protocol, without an executor
// ---------------------------------------------------------------------------------------------

/// A supervisor started by hand: its stdin must be a socket; `K` kills at once (status
/// `killed`); end of file kills without a word; the status of an ended task is its exit code.
async fn the_control_socket_protocol() {
    let supervise = |control: Stdio, script: &str| {
        let mut cmd = std::process::Command::new(supervisor_program());
        cmd.args(supervisor::SUPERVISE_ARGS)
            .args(["--", "sh", "-c", script])
            .stdin(control)
            .stdout(Stdio::null())
            .process_group(0);
        cmd.spawn().expect("spawn the supervisor")
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let ran = dir.path().join("ran");
    let script = format!("touch {}", ran.display());
    let out = std::process::Command::new(supervisor_program())
        .args(supervisor::SUPERVISE_ARGS)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("control socket"),
        "{out:?}"
    );
    assert!(!ran.exists(), "nothing runs without a control socket");

    // K.
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut sup = supervise(
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        "sleep 30 & sleep 30",
    );
    let pgid = i32::try_from(sup.id()).expect("pid");
    eventually("the task", Duration::from_secs(5), || live_members(pgid) == 4).await;
    ours.write_all(supervisor::KILL_LINE.as_bytes()).expect("write");
    let status = sup.wait().expect("waits");
    let mut said = Vec::new();
    ours.read_to_end(&mut said).expect("reads");
    assert_eq!(
        supervisor::Status::last_in(&said),
        Some(supervisor::Status::Killed)
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    eventually("the group gone", Duration::from_secs(2), || {
        live_members(pgid) == 0
    })
    .await;

    // End of file.
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut sup = supervise(
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        "sleep 30 & sleep 30",
    );
    let pgid = i32::try_from(sup.id()).expect("pid");
    eventually("the task", Duration::from_secs(5), || live_members(pgid) == 4).await;
    drop(ours);
    eventually("the group gone", Duration::from_secs(2), || {
        live_members(pgid) == 0
    })
    .await;
    let _ = sup.wait();

    // An exit code, with a lease far away.
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let far = taurus_agent::monotonic_now_ns() + 60_000_000_000;
    ours.write_all(supervisor::lease_line(far).as_bytes())
        .expect("write");
    let mut sup = supervise(Stdio::from(std::os::fd::OwnedFd::from(theirs)), "exit 5");
    let _ = sup.wait();
    let mut said = Vec::new();
    ours.read_to_end(&mut said).expect("reads");
    assert_eq!(
        supervisor::Status::last_in(&said),
        Some(supervisor::Status::Exited(5))
    );
}
