//! Running the `taurus-jepsen` binary from tests: one run at a time per test binary, harness
//! failures (exit 3) retried a bounded number of times, leftovers checked after every run.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// Exit status of `taurus-jepsen` when the harness itself failed (a host could not be made, no
/// leader in time): not a verdict, so the run is retried, at most [`HARNESS_TRIES`] times.
pub const HARNESS_FAILED: i32 = 3;
pub const HARNESS_TRIES: usize = 3;

/// Checkers the binary reports on: the 9 of the library plus `no-crash` and `damaged-start`.
pub const VERDICTS: usize = 11;

/// Runs share 2 cores and the timing the faults rely on: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    /// stdout and stderr, for assertion messages.
    pub text: String,
    pub dir: tempfile::TempDir,
}

impl Run {
    /// The per-checker verdict lines (`name: valid {...}`).
    pub fn verdicts(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with("verdict:") && !l.starts_with(' '))
            .filter(|l| l.contains(": valid") || l.contains(": INVALID") || l.contains(": UNKNOWN"))
            .map(str::to_string)
            .collect()
    }

    /// How many times each fault started, from the recorded history (`start-<fault>` events).
    pub fn faults(&self) -> BTreeMap<String, u64> {
        let history = std::fs::read_to_string(self.dir.path().join("history.jsonl")).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in history.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("history lines are JSON");
            if v["type"] == "invoke"
                && let Some(name) = v["f"].as_str().and_then(|f| f.strip_prefix("start-"))
            {
                *out.entry(name.to_string()).or_default() += 1;
            }
        }
        out
    }

    pub fn assert_all_valid(&self) {
        if self.code != Some(0) {
            // The history, logs and report are what explains a failure: keep a copy (the
            // temporary directory goes with `self`).
            let keep = std::env::temp_dir().join(format!(
                "taurus-jepsen-failed-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            let copied = Command::new("cp")
                .arg("-a")
                .arg(self.dir.path())
                .arg(&keep)
                .status()
                .is_ok_and(|s| s.success());
            let kept = if copied {
                format!("results kept in {}", keep.display())
            } else {
                "results could not be kept".to_string()
            };
            panic!("the run failed ({kept})\n{}", self.text);
        }
        let verdicts = self.verdicts();
        assert_eq!(verdicts.len(), VERDICTS, "one verdict per checker\n{}", self.text);
        assert!(verdicts.iter().all(|l| l.contains(": valid")), "{}", self.text);
        for file in [
            "history.jsonl",
            "report.txt",
            "report.html",
            "latency.svg",
            "rate.svg",
        ] {
            assert!(
                self.dir.path().join(file).is_file(),
                "{file} missing\n{}",
                self.text
            );
        }
        let exec_logs = std::fs::read_dir(self.dir.path().join("executions"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .count()
            })
            .unwrap_or(0);
        assert!(
            exec_logs > 0,
            "no per-agent execution log in executions/\n{}",
            self.text
        );
    }
}

fn taurus() -> std::path::PathBuf {
    let taurus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/taurus");
    assert!(
        taurus.is_file(),
        "{} is missing: build it first with `cargo build -p taurus-cli` (or `cargo test --workspace`)",
        taurus.display()
    );
    taurus
}

/// Runs the binary with `args`, retrying only harness failures (never a verdict).
pub fn run(args: &[&str]) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 1..=HARNESS_TRIES {
        let run = run_once(args);
        if run.code != Some(HARNESS_FAILED) || attempt == HARNESS_TRIES {
            return run;
        }
        eprintln!(
            "harness failure on attempt {attempt} (not a verdict); retrying:\n{}",
            run.text
        );
    }
    unreachable!("the last attempt returns")
}

fn run_once(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_taurus-jepsen"))
        .args(args)
        .arg("--taurus")
        .arg(taurus())
        .arg("--results-dir")
        .arg(dir.path())
        .output()
        .expect("taurus-jepsen runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!(
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Run {
        code: out.status.code(),
        stdout,
        text,
        dir,
    };
    assert_nothing_left(&run);
    run
}

/// No process of the run and none of its namespaces or data directories survive it.
fn assert_nothing_left(run: &Run) {
    let dir = run.dir.path().display().to_string();
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .expect("ps runs");
    let leftovers: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_string)
        .collect();
    assert!(
        leftovers.is_empty(),
        "processes left behind: {leftovers:?}\n{}",
        run.text
    );
    if let Some(slot) = run.stdout.lines().find_map(|l| {
        l.strip_prefix("network: slot ")
            .and_then(|r| r.split_whitespace().next())
    }) {
        let netns = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip runs");
        let prefix = format!("tj{slot}-");
        let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        assert!(left.is_empty(), "namespaces left behind: {left:?}\n{}", run.text);
    }
    for entry in std::fs::read_dir(run.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !(name.ends_with("-data") || (entry.path().is_dir() && name.starts_with('a'))),
            "data directory {name} left behind\n{}",
            run.text
        );
    }
}
