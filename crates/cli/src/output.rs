//! Printing: JSON views of the wire types, aligned tables, timestamps.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::UNIX_EPOCH;

use serde::Serialize;
use taurus_client::v1;
use taurus_protocol::convert::task_state_from_i32;

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Lower-case state name (`pending`, ..., `timed_out`), or `unknown(N)`.
pub fn state_name(state: i32) -> String {
    match task_state_from_i32(state, "state") {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("unknown({state})"),
    }
}

/// RFC 3339 UTC time of a Unix-milliseconds timestamp; `-` for 0.
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `1m 30s` for a number of milliseconds.
pub fn duration_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// `k=v, k2=v2`, or `-` when empty.
pub fn pairs<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let joined: Vec<String> = m.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if joined.is_empty() {
        "-".into()
    } else {
        joined.join(", ")
    }
}

/// The agent of a task's latest attempt, or `""` when it has none.
pub fn latest_agent(task: &v1::Task) -> &str {
    task.attempts.last().map_or("", |a| a.agent_id.as_str())
}

/// A task as the CLI prints it in JSON.
#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub state: String,
    /// How many attempts were made.
    pub attempts: usize,
    pub attempt_history: Vec<AttemptView>,
    pub log_index: u64,
    pub created_index: u64,
    pub priority: i32,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: ResourcesView,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub depends_on: Vec<String>,
    pub unmet_dependencies: u32,
    pub labels: BTreeMap<String, String>,
    pub reason: String,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    /// Agent pool the task must run in; empty: any.
    pub pool: String,
    /// Agent labels the task requires (all must match).
    pub constraints: BTreeMap<String, String>,
    /// First retry delay; `null`: the default (1000 ms).
    pub backoff_ms: Option<u64>,
    /// Hard deadline after submission; 0: none.
    pub deadline_ms: u64,
    /// A pending task waits for its retry back-off until then; 0: not waiting.
    pub not_before_ms: u64,
    /// When it last became runnable.
    pub queued_at_ms: u64,
    /// The principal that submitted it.
    pub submitted_by: String,
    /// The principal whose cancel request ended it; empty otherwise.
    pub cancelled_by: String,
}

#[derive(Debug, Serialize)]
pub struct ResourcesView {
    pub cpu_millis: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub number: u32,
    pub agent_id: String,
    pub fencing_token: u64,
    pub assigned_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub error: String,
    /// How the attempt ended (succeeded, failed, timed_out, killed, cancelled, lost, moved);
    /// empty while it is current.
    pub end: String,
    /// The last bytes of its stdout (reported when it ended).
    pub stdout_tail: String,
    pub stderr_tail: String,
}

impl From<&v1::Task> for TaskView {
    fn from(t: &v1::Task) -> Self {
        let spec = t.spec.clone().unwrap_or_default();
        let r = spec.resources.unwrap_or_default();
        TaskView {
            id: spec.id,
            name: spec.name,
            state: state_name(t.state),
            attempts: t.attempts.len(),
            attempt_history: t.attempts.iter().map(AttemptView::from).collect(),
            log_index: t.log_index,
            created_index: t.created_index,
            priority: spec.priority,
            command: spec.command,
            env: spec.env.into_iter().collect(),
            resources: ResourcesView {
                cpu_millis: r.cpu_millis,
                memory_mb: r.memory_mb,
                disk_mb: r.disk_mb,
            },
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            depends_on: spec.depends_on,
            unmet_dependencies: t.unmet_dependencies,
            labels: spec.labels.into_iter().collect(),
            reason: t.reason.clone(),
            submitted_at_ms: t.submitted_at_ms,
            updated_at_ms: t.updated_at_ms,
            pool: spec.pool,
            constraints: spec.constraints.into_iter().collect(),
            backoff_ms: spec.backoff_ms,
            deadline_ms: spec.deadline_ms,
            not_before_ms: t.not_before_ms,
            queued_at_ms: t.queued_at_ms,
            submitted_by: t.submitted_by.clone(),
            cancelled_by: t.cancelled_by.clone(),
        }
    }
}

impl From<&v1::Attempt> for AttemptView {
    fn from(a: &v1::Attempt) -> Self {
        AttemptView {
            number: a.number,
            agent_id: a.agent_id.clone(),
            fencing_token: a.fencing_token,
            assigned_at_ms: a.assigned_at_ms,
            started_at_ms: a.started_at_ms,
            finished_at_ms: a.finished_at_ms,
            exit_code: a.exit_code,
            error: a.error.clone(),
            end: a.end.clone(),
            stdout_tail: a.stdout_tail.clone(),
            stderr_tail: a.stderr_tail.clone(),
        }
    }
}

/// How a read was served, in JSON.
#[derive(Debug, Serialize)]
pub struct ReadView {
    pub served_by: u64,
    pub applied_index: u64,
    pub stale: bool,
}

impl From<&v1::ReadInfo> for ReadView {
    fn from(r: &v1::ReadInfo) -> Self {
        ReadView {
            served_by: r.served_by,
            applied_index: r.applied_index,
            stale: r.stale,
        }
    }
}

/// `read: ...` line for human output.
pub fn describe_read(read: Option<&v1::ReadInfo>) -> String {
    match read {
        Some(r) if r.stale => {
            format!(
                "stale read from master {} (applied index {}; may be out of date)",
                r.served_by, r.applied_index
            )
        }
        Some(r) => format!(
            "linearizable read from master {} (applied index {})",
            r.served_by, r.applied_index
        ),
        None => "-".into(),
    }
}

/// A command line for display: arguments with spaces or quotes are quoted.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `-` for empty strings.
pub fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Shortens `s` to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A left-aligned text table; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["abc".into(), "pending".into()]);
        t.row(vec!["a".into(), "x".into()]);
        assert_eq!(t.render(), "ID   STATE\nabc  pending\na    x\n");
    }

    #[test]
    fn task_json_has_the_documented_fields() {
        let task = v1::Task {
            spec: Some(v1::TaskSpec {
                id: "t1".into(),
                command: vec!["true".into()],
                ..Default::default()
            }),
            state: v1::TaskState::Cancelled as i32,
            attempts: vec![v1::Attempt {
                number: 1,
                ..Default::default()
            }],
            log_index: 7,
            ..Default::default()
        };
        let json = serde_json::to_value(TaskView::from(&task)).unwrap();
        assert_eq!(json["state"], "cancelled");
        assert_eq!(json["attempts"], 1);
        assert_eq!(json["attempt_history"][0]["number"], 1);
        for field in ["end", "stdout_tail", "stderr_tail", "fencing_token"] {
            assert!(json["attempt_history"][0].get(field).is_some(), "{field}");
        }
        for field in [
            "id",
            "name",
            "log_index",
            "created_index",
            "priority",
            "command",
            "depends_on",
            "labels",
            "reason",
            "submitted_at_ms",
            "updated_at_ms",
            "pool",
            "constraints",
            "backoff_ms",
            "deadline_ms",
            "not_before_ms",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn shell_words_quotes_only_what_needs_it() {
        let argv: Vec<String> = ["echo", "hello world", "it's", "a=b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_words(&argv), r"echo 'hello world' 'it'\''s' a=b");
    }

    #[test]
    fn times_and_truncation() {
        assert_eq!(time_ms(0), "-");
        assert_eq!(time_ms(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(duration_ms(90_000), "1m 30s");
        let m: BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert_eq!(pairs(&m), "a=1, b=2");
        assert_eq!(pairs(&BTreeMap::new()), "-");
    }
}
