//! A short loopback run of the `taurus-jepsen` binary with every nemesis: it must pass.

use std::path::Path;
use std::process::Command;

#[test]
fn short_run_with_every_nemesis_is_valid() {
    let taurus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/taurus");
    assert!(
        taurus.is_file(),
        "{} is missing: build it first with `cargo build -p taurus-cli` (or `cargo test --workspace`)",
        taurus.display()
    );
    // Exit status 3 means the harness itself failed (a process did not start, no leader in
    // time): not a verdict, so that alone is retried, a bounded number of times.
    let mut tries = 0;
    let (dir, out) = loop {
        tries += 1;
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_taurus-jepsen"))
            .args([
                "--time-limit",
                "10s",
                "--nemesis",
                "kill,pause,partition-agent",
                "--seed",
                "1",
            ])
            .arg("--taurus")
            .arg(&taurus)
            .arg("--results-dir")
            .arg(dir.path())
            .output()
            .expect("taurus-jepsen runs");
        if out.status.code() != Some(3) || tries == 3 {
            break (dir, out);
        }
        eprintln!(
            "harness failure on try {tries} (not a verdict); retrying:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).unwrap();
    assert!(!history.trim().is_empty(), "empty history");
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("verdict:"))
        .filter(|l| l.contains(": valid") || l.contains(": INVALID") || l.contains(": UNKNOWN"))
        .collect();
    assert_eq!(verdicts.len(), 9, "one verdict per checker:\n{stdout}");
    assert!(verdicts.iter().all(|l| l.contains(": valid")), "{stdout}");
    assert!(stdout.contains("verdict: valid"), "{stdout}");
}
