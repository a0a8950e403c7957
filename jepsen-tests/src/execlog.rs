//! The external execution log: what tasks themselves say they did.
//!
//! Each task the workload submits is a small program that appends JSON lines to its agent's log
//! file (one file per agent), without asking the scheduler anything:
//!
//! ```text
//! {"task":"t1","attempt":2,"token":417,"agent":"a3","start_ns":81000}
//! {"task":"t1","attempt":2,"token":417,"agent":"a3","start_ns":81000,"end_ns":95000,"success":true}
//! ```
//!
//! * `token` is the fencing token the agent passed to the task (the log index of the `Assign`
//!   entry), `attempt` the 1-based attempt number.
//! * `start_ns` / `end_ns` are read from the same monotonic clock as the history's `time_ns`
//!   (one host), unless a clock nemesis skews it: checkers that compare the two take an epsilon.
//! * A task writes a start line when it begins and a line with `end_ns` (and `success`, whether
//!   it is about to exit 0) when it ends. A task killed before its end line stays **open**: the
//!   checkers treat it as running until a horizon they are given, unless its lines carry
//!   `ticks: true`: such a task also appends a progress line (`end_ns` = now, no `success`)
//!   every tick while it runs, so when it never wrote its end it was killed after the last line
//!   it wrote, and [`merge_executions`] ends it there, at the last time it was *seen alive*
//!   (with `success` unknown). That end is never later than the real one, so overlaps the
//!   checkers report from it are proven, never artefacts; an overlap shorter than one tick can
//!   be missed.
//!
//! [`merge_executions`] folds the start and end lines of one execution, identified by
//! (task, attempt, token, agent), into one [`Execution`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;
use crate::history::TaskId;

/// One execution of a task (or one line of the log, before merging).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub task: TaskId,
    pub attempt: u32,
    pub token: u64,
    pub agent: String,
    pub start_ns: u64,
    /// `None` while running, or when the task was killed before it could write its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ns: Option<u64>,
    /// Whether the task ended successfully, as the task itself reported; `None` if unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Whether the task logs progress ticks while it runs (see the module docs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ticks: bool,
}

impl Execution {
    /// The end, or `horizon_ns` for an open execution.
    pub fn end_or(&self, horizon_ns: u64) -> u64 {
        self.end_ns.unwrap_or(horizon_ns)
    }
}

/// Parses one agent's log. `source_name` (e.g. the file name) and the 1-based line appear in
/// errors. Blank lines are skipped. An end before its start is an error.
pub fn parse_execution_log(text: &str, source_name: &str) -> Result<Vec<Execution>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Execution =
            serde_json::from_str(line).map_err(|err| Error::parse(source_name, i + 1, err.to_string()))?;
        if let Some(end) = e.end_ns
            && end < e.start_ns
        {
            return Err(Error::parse(
                source_name,
                i + 1,
                format!("end_ns {end} is before start_ns {}", e.start_ns),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Merges the lines of each execution (same task, attempt, token and agent): earliest start,
/// latest end, and the `success` of a line that has an end. Output is sorted by task, then start.
pub fn merge_executions(lines: impl IntoIterator<Item = Execution>) -> Vec<Execution> {
    let mut by_key: BTreeMap<(TaskId, u32, u64, String), Execution> = BTreeMap::new();
    for line in lines {
        let key = (line.task.clone(), line.attempt, line.token, line.agent.clone());
        match by_key.get_mut(&key) {
            None => {
                by_key.insert(key, line);
            }
            Some(e) => {
                e.start_ns = e.start_ns.min(line.start_ns);
                if line.end_ns.is_some() && line.end_ns >= e.end_ns {
                    e.end_ns = line.end_ns;
                    e.success = line.success.or(e.success);
                }
            }
        }
    }
    let mut out: Vec<Execution> = by_key.into_values().collect();
    for e in out.iter_mut().filter(|e| e.ticks && e.end_ns.is_none()) {
        // Killed before its first tick: last seen alive at its start.
        e.end_ns = Some(e.start_ns);
    }
    out.sort_by(|a, b| (&a.task, a.start_ns).cmp(&(&b.task, b.start_ns)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_merges_start_and_end_lines() {
        let text = r#"{"task":"t1","attempt":1,"token":7,"agent":"a1","start_ns":100}
{"task":"t2","attempt":1,"token":9,"agent":"a1","start_ns":150}

{"task":"t1","attempt":1,"token":7,"agent":"a1","start_ns":100,"end_ns":300,"success":true}
"#;
        let lines = parse_execution_log(text, "a1.log").unwrap();
        assert_eq!(lines.len(), 3);
        let merged = merge_executions(lines);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].end_ns, merged[0].success), (Some(300), Some(true)));
        assert_eq!((merged[1].end_ns, merged[1].end_or(1000)), (None, 1000));
    }

    #[test]
    fn a_ticking_execution_without_an_end_ends_when_last_seen_alive() {
        let text = r#"{"task":"t1","attempt":1,"token":7,"agent":"a1","start_ns":100,"ticks":true}
{"task":"t2","attempt":1,"token":9,"agent":"a1","start_ns":100,"ticks":true}
{"task":"t2","attempt":1,"token":9,"agent":"a1","start_ns":100,"ticks":true,"end_ns":200}
{"task":"t3","attempt":1,"token":9,"agent":"a1","start_ns":100}
{"task":"t4","attempt":1,"token":9,"agent":"a1","start_ns":100,"ticks":true,"end_ns":200}
{"task":"t4","attempt":1,"token":9,"agent":"a1","start_ns":100,"ticks":true,"end_ns":400,"success":true}
"#;
        let merged = merge_executions(parse_execution_log(text, "a1.log").unwrap());
        // Killed before its first tick: seen alive only at its start.
        assert_eq!((merged[0].end_ns, merged[0].success), (Some(100), None));
        // Killed after a tick: ends at the tick.
        assert_eq!((merged[1].end_ns, merged[1].success), (Some(200), None));
        // Without ticks nothing is known: open.
        assert_eq!(merged[2].end_ns, None);
        // Its own end line wins.
        assert_eq!((merged[3].end_ns, merged[3].success), (Some(400), Some(true)));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse_execution_log("\n{\"task\":1}", "a2.log")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a2.log:2:"), "{err}");
        let bad = r#"{"task":"t","attempt":1,"token":1,"agent":"a","start_ns":9,"end_ns":3}"#;
        let err = parse_execution_log(bad, "a3.log").unwrap_err().to_string();
        assert!(err.contains("before start_ns"), "{err}");
    }
}
