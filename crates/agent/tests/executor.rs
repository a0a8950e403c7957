//! The executor against real processes on this machine: exit codes, environment and working
//! directory, bounded output, timeouts and stops killing whole process groups, built-ins, and
//! killing what a previous incarnation left behind.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use taurus_agent::End;
use taurus_agent::Executor;
use taurus_agent::KillSwitch;
use taurus_agent::StopReason;
use taurus_agent::pgroup;

mod common;

use common::eventually;
use common::live_members;
use common::request;
use common::sh;
use common::start;

const TAIL: usize = 16 * 1024;

fn executor(dir: &Path, kill_grace: Duration) -> Arc<Executor> {
    Arc::new(Executor::new(dir, TAIL, kill_grace).expect("executor"))
}

#[tokio::test]
async fn exit_codes_decide_success_or_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let s = KillSwitch::new();

    let ok = exec.run(&request(&["true"]), &s).await;
    assert_eq!(
        (ok.end, ok.exit_code, ok.error.as_str()),
        (End::Succeeded, Some(0), "")
    );

    let failed = exec.run(&sh("echo oops >&2; exit 3"), &s).await;
    assert_eq!((failed.end, failed.exit_code), (End::Failed, Some(3)));
    assert_eq!(failed.stderr_tail, "oops\n");

    let signalled = exec.run(&sh("kill -9 $$"), &s).await;
    assert_eq!((signalled.end, signalled.exit_code), (End::Failed, None));
    assert_eq!(signalled.error, "killed by signal 9");

    let missing = exec.run(&request(&["/no/such/program"]), &s).await;
    assert_eq!((missing.end, missing.exit_code), (End::Failed, None));
    assert!(missing.error.contains("cannot start"), "{}", missing.error);

    let empty = exec.run(&request(&[]), &s).await;
    assert_eq!((empty.end, empty.error.as_str()), (End::Failed, "empty command"));
    assert!(exec.running_groups().is_empty());
}

#[tokio::test]
async fn env_is_added_and_the_task_runs_in_its_own_directory_which_is_removed_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let mut req = sh(
        "echo \"$GREETING|$TAURUS_TASK_ID|$TAURUS_ATTEMPT|$TAURUS_FENCING_TOKEN|$HOME\"; pwd; touch left-behind",
    );
    req.env.insert("GREETING".into(), "hello world".into());
    let task_dir = exec.task_dir(&req);
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!(out.end, End::Succeeded, "{out:?}");
    let lines: Vec<&str> = out.stdout_tail.lines().collect();
    // The agent's environment is not passed on (tests/sandbox.rs checks it in full): HOME is
    // the task's own directory.
    assert_eq!(
        lines[0],
        format!("hello world|task-1|1|42|{}", task_dir.display()),
        "the task's env, TAURUS_* and HOME"
    );
    assert_eq!(Path::new(lines[1]), task_dir, "runs in its own directory");
    assert!(task_dir.starts_with(dir.path()));
    assert!(
        !task_dir.exists(),
        "the working directory is removed after the task"
    );
}

#[tokio::test]
async fn output_keeps_only_the_last_bytes_of_each_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    // 1 MB on stdout (20000 numbered lines of 50 bytes) and 1 MiB on stderr, concurrently.
    let script = "head -c 1048576 /dev/zero | tr '\\0' e >&2 & \
                  i=0; while [ $i -lt 20000 ]; do printf '%049d\\n' $i; i=$((i+1)); done; \
                  wait; echo END";
    let out = exec.run(&sh(script), &KillSwitch::new()).await;
    assert_eq!(out.end, End::Succeeded, "{}", out.error);
    assert!(out.stdout_tail.len() <= TAIL, "{}", out.stdout_tail.len());
    assert!(out.stdout_tail.len() > TAIL - 100, "{}", out.stdout_tail.len());
    assert!(out.stdout_tail.ends_with(&format!("{:049}\nEND\n", 19999)));
    assert!(!out.stdout_tail.contains(&format!("{:049}\n", 0)));
    assert_eq!(out.stderr_tail.len(), TAIL);
    assert!(out.stderr_tail.bytes().all(|b| b == b'e'));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let mut req = sh("sleep 30 & sleep 30");
    req.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let (handle, pgid) = start(&exec, req, &KillSwitch::new(), 3).await;
    let out = handle.await.expect("joins");
    assert_eq!(out.end, End::TimedOut, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert_eq!(out.error, "timed out after 500ms");
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually("the group to be gone", Duration::from_secs(5), || {
        !pgroup::group_has_live_members(pgid)
    })
    .await;
    assert!(exec.running_groups().is_empty());
}

#[tokio::test]
async fn a_timeout_with_grace_sends_sigterm_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::from_secs(5));
    let mut req = sh("trap 'echo got-term; exit 7' TERM; sleep 30 & wait");
    req.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!((out.end, out.exit_code), (End::TimedOut, Some(7)), "{out:?}");
    assert_eq!(out.stdout_tail, "got-term\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "ended by SIGTERM, not the SIGKILL 5 s later"
    );

    // A task that ignores SIGTERM is SIGKILLed after the grace.
    let exec = executor(dir.path(), Duration::from_millis(300));
    let mut req = sh("trap '' TERM; sleep 30");
    req.timeout = Some(Duration::from_millis(200));
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!((out.end, out.exit_code), (End::TimedOut, None), "{out:?}");
}

#[tokio::test]
async fn a_stop_kills_the_group_at_once_even_with_a_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::from_secs(30));
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("trap '' TERM; sleep 30 & sleep 30"), &switch, 3).await;
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

    // Stopped before it starts: nothing runs.
    let before = exec.processes_spawned();
    let out = exec.run(&sh("exit 0"), &switch).await;
    assert_eq!(out.end, End::Killed);
    assert_eq!(exec.processes_spawned(), before);
}

#[tokio::test]
async fn background_processes_do_not_outlive_their_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("sleep 30 & echo started; sleep 0.3"), &switch, 2).await;
    let out = handle.await.expect("joins");
    assert_eq!(out.end, End::Succeeded, "{out:?}");
    assert_eq!(out.stdout_tail, "started\n");
    eventually("the background sleep to be gone", Duration::from_secs(5), || {
        !pgroup::group_has_live_members(pgid)
    })
    .await;
}

#[tokio::test]
async fn builtins_run_without_forking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let s = KillSwitch::new();
    let out = exec.run(&request(&["taurus:noop"]), &s).await;
    assert_eq!((out.end, out.exit_code), (End::Succeeded, Some(0)));
    let out = exec.run(&request(&["taurus:sleep", "10"]), &s).await;
    assert_eq!(out.end, End::Succeeded);
    let mut req = request(&["taurus:sleep", "30000"]);
    req.timeout = Some(Duration::from_millis(50));
    assert_eq!(exec.run(&req, &s).await.end, End::TimedOut);
    let out = exec.run(&request(&["taurus:sleep"]), &s).await;
    assert!(out.error.contains("usage"), "{}", out.error);
    let out = exec.run(&request(&["taurus:fork-bomb"]), &s).await;
    assert!(out.error.contains("unknown built-in"), "{}", out.error);

    let stopper = KillSwitch::new();
    let (e, st) = (exec.clone(), stopper.clone());
    let sleeping = tokio::spawn(async move { e.run(&request(&["taurus:sleep", "30000"]), &st).await });
    stopper.kill(StopReason::Shutdown);
    let out = sleeping.await.expect("joins");
    assert_eq!(
        (out.end, out.error.as_str()),
        (End::Killed, "killed: the agent is shutting down")
    );

    assert_eq!(exec.processes_spawned(), 0, "no built-in forks");
    assert!(
        std::fs::read_dir(dir.path().join("tasks"))
            .expect("tasks dir")
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn running_groups_are_listed_in_the_work_dir_while_they_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = executor(dir.path(), Duration::ZERO);
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("sleep 30"), &switch, 1).await;
    let listed = std::fs::read_to_string(dir.path().join(pgroup::PGID_FILE)).expect("pgid file");
    assert!(listed.lines().any(|l| l == pgid.to_string()), "{listed}");
    switch.kill(StopReason::Fenced);
    handle.await.expect("joins");
    let listed = std::fs::read_to_string(dir.path().join(pgroup::PGID_FILE)).expect("pgid file");
    assert!(!listed.lines().any(|l| l == pgid.to_string()), "{listed}");
}

#[tokio::test]
async fn groups_left_by_a_previous_incarnation_are_killed_at_start() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // What a SIGKILLed agent leaves: a task group whose leader and grandchild still run, listed
    // in running.pgids, and a stale task directory.
    let mut leftover = std::process::Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30"])
        .process_group(0)
        .spawn()
        .expect("spawn");
    let pgid = i32::try_from(leftover.id()).expect("pid");
    eventually("the leftover group", Duration::from_secs(5), || {
        live_members(pgid) >= 3
    })
    .await;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    std::fs::write(
        dir.path().join(pgroup::PGID_FILE),
        format!(
            "# written by a previous agent\nboot_id {}\n{pgid}\n1\n0\n",
            boot_id.trim()
        ),
    )
    .expect("write");
    std::fs::create_dir_all(dir.path().join("tasks/old-7")).expect("mkdir");

    let exec = executor(dir.path(), Duration::ZERO);
    let killed = exec.kill_leftovers().expect("kills");
    assert_eq!(
        killed,
        vec![pgid],
        "only the real group; 0 and 1 are never touched"
    );
    let _ = leftover.wait();
    assert!(
        !pgroup::group_has_live_members(pgid),
        "the grandchild is gone too"
    );
    assert!(!dir.path().join(pgroup::PGID_FILE).exists());
    assert!(!dir.path().join("tasks/old-7").exists());
    assert_eq!(exec.kill_leftovers().expect("nothing left"), Vec::<i32>::new());
}

const HELPER_DIR_VAR: &str = "TAURUS_AGENT_TEST_HELPER_DIR";

/// Not a test on its own: the "agent" process of `an_agent_killed_by_sigkill_leaves_nothing_behind`
/// (this test binary run again with `HELPER_DIR_VAR` set). Does nothing otherwise.
#[tokio::test]
async fn helper_agent_that_gets_sigkilled() {
    let Ok(dir) = std::env::var(HELPER_DIR_VAR) else {
        return;
    };
    let exec = executor(Path::new(&dir), Duration::ZERO);
    let switch = KillSwitch::new();
    let (handle, pgid) = start(&exec, sh("sleep 30 & sleep 30"), &switch, 3).await;
    println!("PGID {pgid}");
    let _ = handle.await;
}

#[tokio::test]
async fn an_agent_killed_by_sigkill_leaves_nothing_behind() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_agent_that_gets_sigkilled",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the helper agent");
    let stdout = agent.stdout.take().expect("piped");
    let pgid: i32 = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints "test <name> ... " first, on the same line.
            .find_map(|l| l.split_once("PGID ").and_then(|(_, p)| p.trim().parse().ok()))
    })
    .await
    .expect("joins")
    .expect("the helper printed its task's group");
    assert!(live_members(pgid) >= 3);

    // SIGKILL the agent: PR_SET_PDEATHSIG takes the task's leader with it...
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGKILL) };
    let _ = agent.wait();
    eventually(
        "the task's leader to die with its agent",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{pgid}/stat")).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        },
    )
    .await;
    // ...but not the leader's children: only the next start can kill them.
    assert!(live_members(pgid) >= 1, "grandchildren outlive a SIGKILLed agent");
    let exec = executor(dir.path(), Duration::ZERO);
    assert_eq!(exec.kill_leftovers().expect("kills"), vec![pgid]);
    assert_eq!(live_members(pgid), 0);
}
