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
    }
}
