//! Task confinement against real processes (issue 5, agent execution hardening): a task cannot
//! read another task's working directory nor signal its processes (dynamic uids); working
//! directories are removed however the attempt ends, never following links out of them; the
//! environment is clean; tasks run as the configured user without privilege gains; the memory
//! demand is a limit (cgroup v2 where available, rlimits otherwise).
//!
//! Every test runs twice, with the task started directly by the executor and under a task
//! supervisor (as `taurus agent start` runs it), since the two confine the child in different
//! processes. Tests that change users need root (as CI runs them); without root they print why
//! they are skipped and pass.
//!
//! No libtest harness (`harness = false`): like `tests/supervisor.rs`, this binary is also the
//! supervisor program, run as `<this binary> agent supervise -- COMMAND...`. Arguments that do
//! not start with `-` filter the tests by name, `--list` lists them.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use taurus_agent::End;
use taurus_agent::ExecConfig;
use taurus_agent::ExecRequest;
use taurus_agent::Executor;
use taurus_agent::KillSwitch;
use taurus_agent::Outcome;
use taurus_agent::StopReason;
use taurus_agent::TaskUser;
use taurus_agent::supervisor;

mod common;

use common::eventually;
use common::sh;

const TAIL: usize = 16 * 1024;
/// Set on this process (the "agent") before anything runs; no task may see it.
const AGENT_MARKER: &str = "TAURUS_SANDBOX_TEST_AGENT_SECRET";
/// Dynamic uids of these tests: no local user or group has them (the configuration checks).
const DYNAMIC_UIDS: &str = "1500000000-1500000099";
const FIRST_DYNAMIC_UID: u32 = 1_500_000_000;
const LAST_DYNAMIC_UID: u32 = 1_500_000_099;

type TestFn = fn(bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|supervised| Box::pin($name(supervised)) as _) as TestFn)),*]
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
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var(AGENT_MARKER, "agent-only") };

    let tests = tests![
        a_task_cannot_read_another_tasks_working_directory,
        the_working_directory_is_removed_however_the_task_ends,
        the_environment_is_clean,
        the_task_runs_as_the_configured_user_without_privilege_gains,
        a_memory_limit_is_enforced,
        stale_working_directories_are_removed_at_start,
    ];
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
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests (each direct and supervised)", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        for supervised in [false, true] {
            let mode = if supervised { "supervised" } else { "direct" };
            let started = Instant::now();
            let result = std::panic::catch_unwind(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(test(supervised));
            });
            match result {
                Ok(()) => println!("test {name} ({mode}) ... ok ({:?})", started.elapsed()),
                Err(_) => {
                    println!("test {name} ({mode}) ... FAILED");
                    failed.push(format!("{name} ({mode})"));
                }
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

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why a root-only test does nothing here; true when it must be skipped.
fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!(
        "SKIPPED {test}: changing a task's user needs the agent (this test) to run as root; \
         CI runs it as root"
    );
    true
}

/// A work directory whose ancestors other users may search, as a real agent's is: otherwise a
/// task's failure to reach another's directory would prove nothing.
fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for ancestor in dir.path().ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .expect("ancestor")
            .permissions()
            .mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by others: put TMPDIR elsewhere",
            ancestor.display()
        );
    }
    dir
}

fn executor(dir: &Path, exec: ExecConfig, supervised: bool) -> Arc<Executor> {
    let settings = exec.resolve().expect("the [exec] section resolves");
    let exec = Executor::new(dir, TAIL, Duration::ZERO)
        .expect("executor")
        .with_exec_settings(settings)
        .expect("exec settings");
    Arc::new(if supervised {
        exec.with_supervisor(std::env::current_exe().expect("the test binary"))
    } else {
        exec
    })
}

fn dynamic_uids() -> ExecConfig {
    ExecConfig {
        dynamic_uids: Some(DYNAMIC_UIDS.into()),
        ..ExecConfig::default()
    }
}

/// Tasks as root, when the test is root, can change users; otherwise as the agent's user.
fn best_isolation() -> ExecConfig {
    if is_root() {
        dynamic_uids()
    } else {
        ExecConfig::default()
    }
}

fn named(task_id: &str, script: &str) -> ExecRequest {
    ExecRequest {
        task_id: task_id.into(),
        ..sh(script)
    }
}

fn spawn_run(
    exec: &Arc<Executor>,
    req: &ExecRequest,
    switch: &KillSwitch,
) -> tokio::task::JoinHandle<Outcome> {
    let (e, r, s) = (exec.clone(), req.clone(), switch.clone());
    tokio::spawn(async move { e.run(&r, &s).await })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The required test: task A writes a secret into its working directory and waits; task B,
/// running at the same time, can neither read it, list the directory, write into it, nor
/// signal A's processes. B can reach its own directory by path (so the ancestors are not what
/// stops it).
async fn a_task_cannot_read_another_tasks_working_directory(supervised: bool) {
    if skip_unless_root("a_task_cannot_read_another_tasks_working_directory") {
        return;
    }
    let dir = work_dir();
    let exec = executor(dir.path(), dynamic_uids(), supervised);

    let a = named(
        "task-a",
        "id -u; echo the-secret > secret.txt; echo $$ > pid; exec sleep 60",
    );
    let a_dir = exec.task_dir(&a);
    let a_switch = KillSwitch::new();
    let a_run = spawn_run(&exec, &a, &a_switch);
    let secret = a_dir.join("secret.txt");
    let pid_file = a_dir.join("pid");
    eventually("task A wrote its secret", Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    })
    .await;
    let a_pid = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .to_string();
    let meta = std::fs::metadata(&a_dir).expect("A's directory");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "A's directory is private"
    );
    let a_uid = meta.uid();
    assert!((FIRST_DYNAMIC_UID..=LAST_DYNAMIC_UID).contains(&a_uid), "{a_uid}");
    assert_eq!(std::fs::metadata(&secret).expect("secret").uid(), a_uid);

    let script = format!(
        "id -u; cd \"$HOME\" && echo own-dir-reachable; \
         cat '{secret}' && echo READ-THE-SECRET; \
         ls '{a_dir}' && echo LISTED; \
         echo x > '{a_dir}/planted' && echo PLANTED; \
         kill -KILL {a_pid} && echo SIGNALLED; \
         ls '{tasks}' && echo LISTED-TASKS; \
         exit 3",
        secret = secret.display(),
        a_dir = a_dir.display(),
        tasks = dir.path().join("tasks").display(),
    );
    let b = named("task-b", &script);
    let out_b = exec.run(&b, &KillSwitch::new()).await;
    assert_eq!((out_b.end, out_b.exit_code), (End::Failed, Some(3)), "{out_b:?}");
    let mut lines = out_b.stdout_tail.lines();
    let b_uid: u32 = lines.next().and_then(|l| l.parse().ok()).expect("B's uid");
    assert_ne!(b_uid, a_uid, "each running task has a uid of its own");
    assert!((FIRST_DYNAMIC_UID..=LAST_DYNAMIC_UID).contains(&b_uid), "{b_uid}");
    assert_eq!(lines.collect::<Vec<_>>(), ["own-dir-reachable"], "{out_b:?}");
    for (what, err) in [
        ("cat", "Permission denied"),
        ("ls", "Permission denied"),
        ("write", "Permission denied"),
        ("kill", "not permitted"),
    ] {
        assert!(out_b.stderr_tail.contains(err), "{what}: {}", out_b.stderr_tail);
    }
    assert_eq!(
        out_b.stderr_tail.matches("Permission denied").count(),
        4,
        "cat, ls, the write and the listing of tasks/ were refused: {}",
        out_b.stderr_tail
    );
    assert!(!a_dir.join("planted").exists());

    // A was untouched all along; stop it and it is gone with its directory.
    assert!(!a_run.is_finished(), "A still runs");
    a_switch.kill(StopReason::Stopped);
    let out_a = a_run.await.expect("A's run");
    assert_eq!(out_a.end, End::Killed, "{out_a:?}");
    assert_eq!(out_a.stdout_tail.trim(), a_uid.to_string());
    assert!(!a_dir.exists(), "A's directory is removed");
}

/// Success, failure, timeout, a stop and a fencing kill all remove the working directory, with
/// unreadable subdirectories and links out of it; the link targets survive.
async fn the_working_directory_is_removed_however_the_task_ends(supervised: bool) {
    let dir = work_dir();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(outside.join("keep.txt"), "keep").expect("keep");
    let exec = executor(dir.path(), best_isolation(), supervised);
    let mess = format!(
        "mkdir -p a/b/c && echo x > a/b/c/f && chmod 000 a/b a; ln -s '{o}' link-dir; \
         ln -s '{o}/keep.txt' link-file; ",
        o = outside.display()
    );
    // (what, script, timeout, stop, expected end)
    type Case<'a> = (&'a str, String, Option<Duration>, Option<StopReason>, End);
    let cases: Vec<Case> = vec![
        ("success", format!("{mess} true"), None, None, End::Succeeded),
        ("failure", format!("{mess} exit 4"), None, None, End::Failed),
        (
            "timeout",
            format!("{mess} echo ready; exec sleep 30"),
            Some(Duration::from_millis(300)),
            None,
            End::TimedOut,
        ),
        (
            "stop",
            format!("{mess} echo ready; exec sleep 30"),
            None,
            Some(StopReason::Stopped),
            End::Killed,
        ),
        (
            "fenced",
            format!("{mess} echo ready; sleep 30 & wait"),
            None,
            Some(StopReason::Fenced),
            End::Killed,
        ),
    ];
    for (i, (what, script, timeout, stop, end)) in cases.into_iter().enumerate() {
        let mut req = named(&format!("ends-{i}"), &script);
        req.timeout = timeout;
        let task_dir = exec.task_dir(&req);
        let switch = KillSwitch::new();
        let run = spawn_run(&exec, &req, &switch);
        if let Some(reason) = stop {
            eventually(
                &format!("{what}: the task made its mess"),
                Duration::from_secs(10),
                || task_dir.join("link-file").exists(),
            )
            .await;
            switch.kill(reason);
        }
        let out = run.await.expect("run");
        assert_eq!(out.end, end, "{what}: {out:?}");
        assert!(!task_dir.exists(), "{what}: the working directory is removed");
        assert_eq!(
            std::fs::read_to_string(outside.join("keep.txt")).expect("the link target survives"),
            "keep",
            "{what}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tasks"))
        .expect("tasks")
        .collect();
    assert!(left.is_empty(), "nothing left under tasks/: {left:?}");
}

/// Nothing of the agent's environment reaches the task: only PATH, HOME and TMPDIR (its
/// directory), the task's own env (which may replace those) and the TAURUS_* variables (which
/// it may not).
async fn the_environment_is_clean(supervised: bool) {
    let dir = work_dir();
    let exec = executor(
        dir.path(),
        ExecConfig {
            path: "/usr/bin:/bin".into(),
            ..best_isolation()
        },
        supervised,
    );
    assert_eq!(std::env::var(AGENT_MARKER).as_deref(), Ok("agent-only"));
    let mut req = named("env-1", "env | sort");
    req.env.insert("GREETING".into(), "hello".into());
    req.env.insert("TAURUS_TASK_ID".into(), "forged".into());
    let task_dir = exec.task_dir(&req);
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!(out.end, End::Succeeded, "{out:?}");
    let mut vars: Vec<&str> = out
        .stdout_tail
        .lines()
        // What the shell itself sets.
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
        .collect();
    vars.sort();
    let dir_s = task_dir.display().to_string();
    let expected = [
        "GREETING=hello".to_string(),
        format!("HOME={dir_s}"),
        "PATH=/usr/bin:/bin".to_string(),
        "TAURUS_ATTEMPT=1".to_string(),
        "TAURUS_FENCING_TOKEN=42".to_string(),
        "TAURUS_TASK_ID=env-1".to_string(),
        format!("TMPDIR={dir_s}"),
    ];
    assert_eq!(vars, expected, "the whole environment");

    // The task's env may set PATH (and HOME, TMPDIR).
    let mut req = named("env-2", "echo \"$PATH\"");
    req.env.insert("PATH".into(), "/bin".into());
    let out = exec.run(&req, &KillSwitch::new()).await;
    assert_eq!(out.stdout_tail.trim(), "/bin", "{out:?}");
}

/// `exec.user` and `exec.dynamic_uids` decide the uid and gid (no supplementary groups), and
/// no task can gain privileges (`PR_SET_NO_NEW_PRIVS`, seen by every task, root's too).
async fn the_task_runs_as_the_configured_user_without_privilege_gains(supervised: bool) {
    let dir = work_dir();
    let script = "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status; umask";
    if is_root() {
        let exec = executor(
            dir.path(),
            ExecConfig {
                user: Some("65534:65533".into()),
                ..ExecConfig::default()
            },
            supervised,
        );
        assert_eq!(
            exec.exec_settings().user,
            TaskUser::Fixed {
                uid: 65534,
                gid: 65533
            }
        );
        let out = exec.run(&named("user-1", script), &KillSwitch::new()).await;
        assert_eq!(out.end, End::Succeeded, "{out:?}");
        let lines: Vec<&str> = out.stdout_tail.lines().collect();
        assert_eq!(
            lines,
            ["65534", "65533", "65533", "NoNewPrivs:\t1", "0077"],
            "{out:?}"
        );

        let exec = executor(dir.path(), dynamic_uids(), supervised);
        let out = exec.run(&named("user-2", script), &KillSwitch::new()).await;
        assert_eq!(out.end, End::Succeeded, "{out:?}");
        let lines: Vec<&str> = out.stdout_tail.lines().collect();
        let uid: u32 = lines[0].parse().expect("uid");
        assert!((FIRST_DYNAMIC_UID..=LAST_DYNAMIC_UID).contains(&uid), "{uid}");
        assert_eq!(
            &lines[1..],
            [lines[0], lines[0], "NoNewPrivs:\t1", "0077"],
            "{out:?}"
        );
    } else {
        println!("SKIPPED the user part of the_task_runs_as_the_configured_user: not root");
    }
    // Whoever runs the agent: no privilege gains.
    let exec = executor(dir.path(), ExecConfig::default(), supervised);
    let out = exec.run(&named("user-3", script), &KillSwitch::new()).await;
    assert_eq!(out.end, End::Succeeded, "{out:?}");
    // SAFETY: no preconditions.
    let own = unsafe { libc::geteuid() }.to_string();
    let lines: Vec<&str> = out.stdout_tail.lines().collect();
    assert_eq!(lines[0], own, "runs as the agent's user");
    assert_eq!(lines[3], "NoNewPrivs:\t1");
}

/// A task that holds more memory than its demand fails (cgroup v2: the OOM killer ends it;
/// rlimits: its allocation fails), while the same task with enough memory succeeds.
async fn a_memory_limit_is_enforced(supervised: bool) {
    let dir = work_dir();
    let exec = executor(dir.path(), best_isolation(), supervised);
    println!(
        "  memory limits through {}",
        if exec.uses_cgroups() {
            "cgroup v2"
        } else {
            "rlimits (RLIMIT_DATA)"
        }
    );
    // tail keeps the last 96 MiB it reads in memory.
    // The script's status is tail's.
    let hog = "head -c 100663296 /dev/zero | tail -c 100663296 >/dev/null && echo held-96MiB";
    let mut small = named("mem-1", hog);
    small.memory_mb = 32;
    let out = exec.run(&small, &KillSwitch::new()).await;
    assert_eq!(out.end, End::Failed, "96 MiB in a 32 MiB task: {out:?}");
    assert!(!out.stdout_tail.contains("held"), "{out:?}");

    let mut enough = named("mem-2", hog);
    enough.memory_mb = 512;
    let out = exec.run(&enough, &KillSwitch::new()).await;
    assert_eq!(
        (out.end, out.stdout_tail.trim()),
        (End::Succeeded, "held-96MiB"),
        "96 MiB in a 512 MiB task: {out:?}"
    );

    if exec.uses_cgroups() {
        // The task runs in a cgroup of its own with its CPU and memory limits, removed after.
        let mut req = named("cg-1", "cat /proc/self/cgroup");
        req.cpu_millis = 250;
        req.memory_mb = 64;
        let out = exec.run(&req, &KillSwitch::new()).await;
        assert_eq!(out.end, End::Succeeded, "{out:?}");
        let line = out
            .stdout_tail
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("v2 line");
        assert!(line.ends_with("/taurus-task-cg-1-42"), "{line}");
        let cgroup = PathBuf::from("/sys/fs/cgroup").join(line.trim_start_matches('/'));
        assert!(!cgroup.exists(), "the task's cgroup is removed after");
    }
}

/// What a crashed agent left under `tasks/` is removed at the next start.
async fn stale_working_directories_are_removed_at_start(supervised: bool) {
    let dir = work_dir();
    let stale = dir.path().join("tasks").join("old-7");
    std::fs::create_dir_all(stale.join("deep/er")).expect("stale");
    std::fs::write(stale.join("deep/er/f"), "x").expect("stale file");
    let exec = executor(dir.path(), best_isolation(), supervised);
    let e = exec.clone();
    tokio::task::spawn_blocking(move || e.kill_leftovers())
        .await
        .expect("join")
        .expect("kill_leftovers");
    assert!(!stale.exists());
    let tasks = std::fs::metadata(dir.path().join("tasks")).expect("tasks/ is there");
    let mode = tasks.permissions().mode() & 0o777;
    if is_root() {
        assert_eq!(mode, 0o711, "others may reach their own directory, not list");
    }
}
