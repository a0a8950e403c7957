//! The operation history: what clients asked, what they were told, and when.
//!
//! # Format
//! One JSON object per line (JSON lines), in the order the harness recorded them:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"submit","value":{"tasks":[{"id":"t1","deps":["t0"]}]},"time_ns":1200}
//! {"process":3,"type":"ok","f":"submit","value":{"tasks":[{"id":"t1","created":true}]},"time_ns":5400}
//! {"process":4,"type":"invoke","f":"read","value":{"ids":["t1"]},"time_ns":5600}
//! {"process":4,"type":"ok","f":"read","value":{"ids":["t1"],"states":{"t1":"running"}},"time_ns":7000}
//! {"process":5,"type":"invoke","f":"cancel","value":{"id":"t1"},"time_ns":7100}
//! {"process":5,"type":"info","f":"cancel","value":{"id":"t1"},"time_ns":9100}
//! ```
//!
//! * `process`: the client id. One process runs one operation at a time.
//! * `type`: `invoke` starts an operation; `ok` (it happened), `fail` (it certainly did **not**
//!   happen) or `info` (unknown: a timeout, a dropped connection) completes it.
//! * `f`: `submit`, `cancel`, `read`; any other name (nemesis ops, ...) is kept as raw JSON.
//! * `value`: op-specific ([`SubmitValue`], [`CancelValue`], [`ReadValue`]). The completion
//!   carries the result (`created` flags, observed states); the invoke carries the request
//!   (dependencies live only there).
//! * `time_ns`: nanoseconds of one monotonic clock owned by the harness, shared by all clients.
//!
//! Unknown fields are ignored, so the runner may add `node`, `rev`, ... without breaking readers.
//!
//! # Pairing convention (as in Jepsen)
//! [`History::ops`] pairs each invoke with the next completion of the same process:
//! * a process has at most one outstanding invoke;
//! * an `info` never completes in the model: the op may take effect at any time after its invoke,
//!   or never. The process is then considered **crashed**: its id must never appear again, and
//!   the client continues under a fresh process id. Reusing it is a pairing error. This applies
//!   to client ops (`submit`, `cancel`, `read`); other ops (the nemesis) conventionally
//!   complete with `info` and keep their process id, as in Jepsen;
//! * an invoke still outstanding at the end of the history is treated as `info`;
//! * a `fail` must only be recorded when the op certainly had no effect (e.g. a validation
//!   rejection, `NOT_FOUND`); checkers ignore failed ops. When in doubt, record `info`.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// A client id in the history.
pub type ProcessId = u64;
/// A task id (chosen by the client).
pub type TaskId = String;

/// Lifecycle state of a task, as reads report it. Mirrors `taurus_core::types::TaskState` (same
/// snake_case names) without depending on it: the checkers treat Taurus as a black box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// Dense index in [`TaskState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The four kinds of history events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One task of a submit batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedTask {
    pub id: TaskId,
    /// Dependencies (on the invoke).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<TaskId>,
    /// On an `ok`: whether this submit created the task (`false`: the id existed already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Value of `f = "submit"`: a batch, accepted or rejected as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitValue {
    pub tasks: Vec<SubmittedTask>,
}

/// Value of `f = "cancel"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelValue {
    pub id: TaskId,
    /// On an `ok`: `true` if this cancel moved the task to `cancelled`, `false` if the task was
    /// already terminal (then `state` says which state it was in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<bool>,
    /// On an `ok`: the task's state after the cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// On an `ok`: the log index of the task's last change (diagnosis only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
}

/// Value of `f = "read"`: the states of some tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadValue {
    pub ids: Vec<TaskId>,
    /// On an `ok`: id → observed state, `null` when the task was not found. An id missing from
    /// the map was not observed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub states: BTreeMap<TaskId, Option<TaskState>>,
    /// On an `ok`: the master that answered and the log index it had applied (diagnosis only:
    /// a stale answer shows up as an applied index below an earlier write's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
}

/// The typed `f` + `value` of an event.
#[derive(Clone, Debug, PartialEq)]
pub enum OpValue {
    Submit(SubmitValue),
    Cancel(CancelValue),
    Read(ReadValue),
    /// Any other `f` (nemesis operations, ...), kept verbatim.
    Other {
        f: String,
        value: serde_json::Value,
    },
}

impl OpValue {
    /// The `f` field.
    pub fn f(&self) -> &str {
        match self {
            Self::Submit(_) => "submit",
            Self::Cancel(_) => "cancel",
            Self::Read(_) => "read",
            Self::Other { f, .. } => f,
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub process: ProcessId,
    pub kind: EventType,
    pub value: OpValue,
    pub time_ns: u64,
    /// 1-based line (or position) in the history, for error messages.
    pub line: usize,
}

/// The wire shape of an event.
#[derive(Serialize, Deserialize)]
struct RawEvent {
    process: ProcessId,
    #[serde(rename = "type")]
    kind: EventType,
    f: String,
    #[serde(default)]
    value: serde_json::Value,
    time_ns: u64,
}

impl Event {
    /// Decodes one JSON line; `line` is used in errors.
    pub fn from_json_line(text: &str, line: usize) -> Result<Event, Error> {
        let raw: RawEvent =
            serde_json::from_str(text).map_err(|e| Error::parse("history", line, e.to_string()))?;
        let bad_value =
            |e: serde_json::Error| Error::parse("history", line, format!("bad {} value: {e}", raw.f));
        let value = match raw.f.as_str() {
            "submit" => OpValue::Submit(serde_json::from_value(raw.value.clone()).map_err(bad_value)?),
            "cancel" => OpValue::Cancel(serde_json::from_value(raw.value.clone()).map_err(bad_value)?),
            "read" => OpValue::Read(serde_json::from_value(raw.value.clone()).map_err(bad_value)?),
            _ => OpValue::Other {
                f: raw.f.clone(),
                value: raw.value.clone(),
            },
        };
        Ok(Event {
            process: raw.process,
            kind: raw.kind,
            value,
            time_ns: raw.time_ns,
            line,
        })
    }

    /// Encodes the event as one JSON line (without the newline).
    pub fn to_json_line(&self) -> Result<String, Error> {
        let value = match &self.value {
            OpValue::Submit(v) => serde_json::to_value(v)?,
            OpValue::Cancel(v) => serde_json::to_value(v)?,
            OpValue::Read(v) => serde_json::to_value(v)?,
            OpValue::Other { value, .. } => value.clone(),
        };
        let raw = RawEvent {
            process: self.process,
            kind: self.kind,
            f: self.value.f().to_string(),
            value,
            time_ns: self.time_ns,
        };
        Ok(serde_json::to_string(&raw)?)
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    /// Unknown: an `info` completion, or no completion at all.
    Info,
}

/// An invoke paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub process: ProcessId,
    pub outcome: Outcome,
    /// The request (the invoke's value).
    pub invoke: OpValue,
    /// The completion's value, if there was a completion.
    pub completion: Option<OpValue>,
    pub invoke_ns: u64,
    /// When the client learned the outcome; `None` for `info` (the op may take effect until
    /// the end of time).
    pub complete_ns: Option<u64>,
    /// Line of the invoke, for reports.
    pub line: usize,
}

impl Op {
    /// The operation's name.
    pub fn f(&self) -> &str {
        self.invoke.f()
    }

    /// Whether `self` completed before `other` was invoked (real-time order).
    pub fn precedes(&self, other: &Op) -> bool {
        self.complete_ns.is_some_and(|c| c < other.invoke_ns)
    }

    /// The value that describes the result: the completion's on `ok`, the invoke's otherwise.
    pub fn result(&self) -> &OpValue {
        match (&self.outcome, &self.completion) {
            (Outcome::Ok, Some(v)) => v,
            _ => &self.invoke,
        }
    }
}

/// A whole history, in recording order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses JSON lines; blank lines are skipped, errors name the 1-based line.
    pub fn parse(text: &str) -> Result<History, Error> {
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            events.push(Event::from_json_line(line, i + 1)?);
        }
        Ok(History { events })
    }

    /// Appends an event; its `line` is its position.
    pub fn push(&mut self, process: ProcessId, kind: EventType, value: OpValue, time_ns: u64) -> &mut Self {
        let line = self.events.len() + 1;
        self.events.push(Event {
            process,
            kind,
            value,
            time_ns,
            line,
        });
        self
    }

    /// Encodes the history as JSON lines (one trailing newline per event).
    pub fn to_jsonl(&self) -> Result<String, Error> {
        let mut out = String::new();
        for e in &self.events {
            out.push_str(&e.to_json_line()?);
            out.push('\n');
        }
        Ok(out)
    }

    /// Pairs invokes with completions (see the module docs for the convention). Ops come out in
    /// invoke order.
    pub fn ops(&self) -> Result<Vec<Op>, Error> {
        let mut ops: Vec<Op> = Vec::new();
        // process → index in `ops` of its outstanding invoke
        let mut open: HashMap<ProcessId, usize> = HashMap::new();
        let mut crashed: HashSet<ProcessId> = HashSet::new();
        for e in &self.events {
            if crashed.contains(&e.process) {
                return Err(Error::pairing(
                    e.line,
                    format!(
                        "process {} got `info` earlier and is crashed; use a new process id",
                        e.process
                    ),
                ));
            }
            match e.kind {
                EventType::Invoke => {
                    if let Some(&i) = open.get(&e.process) {
                        return Err(Error::pairing(
                            e.line,
                            format!(
                                "process {} invokes while its op of line {} is outstanding",
                                e.process, ops[i].line
                            ),
                        ));
                    }
                    open.insert(e.process, ops.len());
                    ops.push(Op {
                        process: e.process,
                        outcome: Outcome::Info,
                        invoke: e.value.clone(),
                        completion: None,
                        invoke_ns: e.time_ns,
                        complete_ns: None,
                        line: e.line,
                    });
                }
                kind => {
                    let Some(i) = open.remove(&e.process) else {
                        return Err(Error::pairing(
                            e.line,
                            format!("process {} completes an op it never invoked", e.process),
                        ));
                    };
                    let op = &mut ops[i];
                    if op.invoke.f() != e.value.f() {
                        return Err(Error::pairing(
                            e.line,
                            format!(
                                "completion `{}` does not match invoke `{}` of line {}",
                                e.value.f(),
                                op.invoke.f(),
                                op.line
                            ),
                        ));
                    }
                    if e.time_ns < op.invoke_ns {
                        return Err(Error::pairing(
                            e.line,
                            format!(
                                "completion at {} ns precedes its invoke at {} ns",
                                e.time_ns, op.invoke_ns
                            ),
                        ));
                    }
                    op.completion = Some(e.value.clone());
                    match kind {
                        EventType::Ok => {
                            op.outcome = Outcome::Ok;
                            op.complete_ns = Some(e.time_ns);
                        }
                        EventType::Fail => {
                            op.outcome = Outcome::Fail;
                            op.complete_ns = Some(e.time_ns);
                        }
                        _ if matches!(e.value, OpValue::Other { .. }) => {}
                        _ => {
                            crashed.insert(e.process);
                        }
                    }
                }
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn round_trips_through_jsonl() {
        let mut h = History::new();
        h.push(1, EventType::Invoke, submit(&[("t1", &["t0"])]), 10)
            .push(1, EventType::Ok, submit_created(&[("t1", true)]), 20)
            .push(2, EventType::Invoke, read("t1"), 30)
            .push(2, EventType::Ok, read_ok("t1", None), 40)
            .push(3, EventType::Invoke, cancel("t1"), 50)
            .push(3, EventType::Info, cancel("t1"), 60)
            .push(
                9,
                EventType::Info,
                OpValue::Other {
                    f: "partition".into(),
                    value: serde_json::json!({"isolate": ["m1"]}),
                },
                70,
            );
        let text = h.to_jsonl().unwrap();
        let back = History::parse(&text).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let text = "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"value\":{\"ids\":[]},\"time_ns\":1}\n\n\
                    {\"process\":1,\"type\":\"okay\",\"f\":\"read\",\"value\":{},\"time_ns\":2}\n";
        let err = History::parse(text).unwrap_err().to_string();
        assert!(err.starts_with("history:3:"), "{err}");
        let text =
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"submit\",\"value\":{\"tasks\":7},\"time_ns\":1}";
        let err = History::parse(text).unwrap_err().to_string();
        assert!(err.starts_with("history:1: bad submit value"), "{err}");
    }

    #[test]
    fn pairs_ops_and_treats_info_and_dangling_invokes_as_unknown() {
        let mut h = History::new();
        h.push(1, EventType::Invoke, read("a"), 1)
            .push(2, EventType::Invoke, cancel("a"), 2)
            .push(1, EventType::Ok, read_ok("a", Some(TaskState::Pending)), 3)
            .push(2, EventType::Info, cancel("a"), 4)
            .push(3, EventType::Invoke, read("a"), 5)
            .push(4, EventType::Invoke, read("a"), 6)
            .push(4, EventType::Fail, read("a"), 7);
        let ops = h.ops().unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!((ops[0].outcome, ops[0].complete_ns), (Outcome::Ok, Some(3)));
        assert_eq!((ops[1].outcome, ops[1].complete_ns), (Outcome::Info, None));
        assert_eq!((ops[2].outcome, ops[2].complete_ns), (Outcome::Info, None));
        assert_eq!((ops[3].outcome, ops[3].complete_ns), (Outcome::Fail, Some(7)));
        assert!(ops[0].precedes(&ops[2]));
        assert!(!ops[1].precedes(&ops[2]));
    }

    #[test]
    fn pairing_errors() {
        let mut h = History::new();
        h.push(1, EventType::Ok, read("a"), 1);
        assert!(h.ops().unwrap_err().to_string().contains("never invoked"));

        let mut h = History::new();
        h.push(1, EventType::Invoke, read("a"), 1)
            .push(1, EventType::Invoke, read("a"), 2);
        assert!(h.ops().unwrap_err().to_string().starts_with("history:2:"));

        let mut h = History::new();
        h.push(1, EventType::Invoke, read("a"), 1)
            .push(1, EventType::Info, read("a"), 2)
            .push(1, EventType::Invoke, read("a"), 3);
        assert!(h.ops().unwrap_err().to_string().contains("crashed"));

        let mut h = History::new();
        h.push(1, EventType::Invoke, read("a"), 1)
            .push(1, EventType::Ok, cancel("a"), 2);
        assert!(h.ops().unwrap_err().to_string().contains("does not match"));

        let mut h = History::new();
        h.push(1, EventType::Invoke, read("a"), 5)
            .push(1, EventType::Ok, read("a"), 2);
        assert!(h.ops().unwrap_err().to_string().contains("precedes"));
    }
}
