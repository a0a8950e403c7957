//! Checkers: pure functions from a run's evidence to a [`Verdict`].
//!
//! Every checker implements [`Checker`] and reads the same [`CheckInput`]:
//! * `ops`: the paired history ([`crate::history::History::ops`]);
//! * `executions`: the merged external execution log ([`crate::execlog::merge_executions`]);
//! * `final_tasks`: the final snapshot, read after the faults healed and a quiet period passed:
//!   task id → [`FinalTask`] (state and the scheduler's attempt records). A task missing from
//!   the map was not found.
//!
//! | module | invariant (architecture.md §6) |
//! |---|---|
//! | [`lost`] | 1: an acknowledged submission is never lost |
//! | [`duplicate`] | no task id is created twice |
//! | [`liveness`] | 2: every accepted task is terminal after the quiet period (Chronos) |
//! | [`terminal`] | 2: terminal states never change |
//! | [`completions`] | 3: at most one accepted completion, only with the current token |
//! | [`overlap`] | 4: no two executions of one task overlap |
//! | [`cancel`] | no execution starts after an acknowledged cancel |
//! | [`dependency`] | 6: dependencies succeed before a dependent starts |
//! | [`linearizable`] | 5: per-task status reads are linearizable (WGL) |

pub mod cancel;
pub mod completions;
pub mod dependency;
pub mod duplicate;
pub mod linearizable;
pub mod liveness;
pub mod lost;
pub mod overlap;
pub mod terminal;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::execlog::Execution;
use crate::history::Op;
use crate::history::OpValue;
use crate::history::Outcome;
use crate::history::SubmittedTask;
use crate::history::TaskId;
use crate::history::TaskState;

/// Whether a property held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Valid {
    True,
    False,
    /// The checker could not decide (e.g. its search bound ran out). Never a pass.
    Unknown,
}

impl Valid {
    /// Conjunction: `False` wins over `Unknown`, which wins over `True`.
    pub fn and(self, other: Valid) -> Valid {
        match (self, other) {
            (Valid::False, _) | (_, Valid::False) => Valid::False,
            (Valid::Unknown, _) | (_, Valid::Unknown) => Valid::Unknown,
            _ => Valid::True,
        }
    }
}

/// What kind of anomaly was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// An acknowledged submission is missing from the final snapshot.
    Lost,
    /// The final snapshot holds a task nobody tried to submit.
    Unexpected,
    /// Two submits both report `created = true` for one id.
    DuplicateCreation,
    /// An accepted task is not terminal after the quiet period.
    NotTerminal,
    /// A task was observed terminal and later observed in another state.
    TerminalChanged,
    /// More than one accepted completion for one token, or more than one success.
    DoubleCompletion,
    /// A completion was accepted from a superseded attempt.
    StaleTokenCompletion,
    /// Two executions of one task overlap in time.
    OverlappingExecutions,
    /// An execution started after a cancel of its task was acknowledged.
    StartAfterCancel,
    /// A task started before a dependency succeeded, or succeeded though a dependency did not.
    DependencyViolation,
    /// A node crashed, or refused to restart without saying why (observed by the harness,
    /// not by a checker).
    NodeFailure,
    /// A task's operations have no linearization.
    NonLinearizable,
}

/// One violation, with enough context to find it in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub task: Option<TaskId>,
    pub detail: String,
}

impl Anomaly {
    pub fn new(kind: AnomalyKind, task: &str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            task: Some(task.to_string()),
            detail: detail.into(),
        }
    }
}

/// A checker's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: Valid,
    pub anomalies: Vec<Anomaly>,
    /// Counters (ops looked at, tasks checked, ...), by name.
    pub stats: BTreeMap<String, u64>,
    /// Why the verdict is `Unknown`, when it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Verdict {
    /// `True` if there are no anomalies, `False` otherwise.
    pub fn from_anomalies(anomalies: Vec<Anomaly>, stats: BTreeMap<String, u64>) -> Verdict {
        Verdict {
            valid: if anomalies.is_empty() {
                Valid::True
            } else {
                Valid::False
            },
            anomalies,
            stats,
            notes: Vec::new(),
        }
    }
}

/// The final record of one task, as the scheduler reports it after the quiet period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalTask {
    pub state: Option<TaskState>,
    /// The scheduler's attempts, oldest first (used by [`completions`]).
    #[serde(default)]
    pub attempts: Vec<FinalAttempt>,
}

impl FinalTask {
    /// A final record with a state and no attempts.
    pub fn in_state(state: TaskState) -> FinalTask {
        FinalTask {
            state: Some(state),
            attempts: Vec::new(),
        }
    }
}

/// One attempt in a final task record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalAttempt {
    pub number: u32,
    pub token: u64,
    pub agent: String,
    /// The completion the state machine accepted for this attempt, if any (an attempt that was
    /// lost, moved or cancelled has none).
    #[serde(default)]
    pub accepted: Option<CompletionOutcome>,
}

/// Outcome of an accepted completion report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompletionOutcome {
    Succeeded,
    Failed,
    TimedOut,
}

/// Everything a checker may look at.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    pub ops: &'a [Op],
    pub executions: &'a [Execution],
    pub final_tasks: &'a BTreeMap<TaskId, FinalTask>,
}

impl CheckInput<'_> {
    /// Submitted tasks of every submit op with the given outcome, with the op. The task entry
    /// is the completion's when it has one for that id (it carries `created`), else the invoke's.
    pub(crate) fn submitted(&self, outcome: Outcome) -> Vec<(&Op, SubmittedTask)> {
        let mut out = Vec::new();
        for op in self.ops.iter().filter(|op| op.outcome == outcome) {
            let OpValue::Submit(req) = &op.invoke else {
                continue;
            };
            let resp = match &op.completion {
                Some(OpValue::Submit(v)) => Some(v),
                _ => None,
            };
            for t in &req.tasks {
                let answered = resp.and_then(|r| r.tasks.iter().find(|r| r.id == t.id));
                let mut task = t.clone();
                if let Some(a) = answered {
                    task.created = a.created;
                }
                out.push((op, task));
            }
        }
        out
    }

    /// Dependencies of each task, from submit invokes (first mention wins).
    pub(crate) fn dependencies(&self) -> BTreeMap<TaskId, Vec<TaskId>> {
        let mut deps = BTreeMap::new();
        for op in self.ops {
            let OpValue::Submit(req) = &op.invoke else {
                continue;
            };
            for t in &req.tasks {
                deps.entry(t.id.clone()).or_insert_with(|| t.deps.clone());
            }
        }
        deps
    }
}

/// A property of a run.
pub trait Checker {
    /// Short name, used in reports.
    fn name(&self) -> &'static str;
    /// Checks the property. Never panics on odd input: anomalies are data.
    fn check(&self, input: &CheckInput<'_>) -> Verdict;
}

/// Runs each checker and returns (name, verdict) pairs plus the conjunction of their validity.
pub fn check_all(checkers: &[&dyn Checker], input: &CheckInput<'_>) -> (Valid, Vec<(&'static str, Verdict)>) {
    let mut valid = Valid::True;
    let mut out = Vec::new();
    for c in checkers {
        let v = c.check(input);
        valid = valid.and(v.valid);
        out.push((c.name(), v));
    }
    (valid, out)
}

/// Every checker with its default settings (no clock-skew allowance, open executions open
/// forever, the default linearizability bound).
pub fn all_checkers() -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(lost::LostChecker),
        Box::new(duplicate::DuplicateChecker),
        Box::new(liveness::LivenessChecker),
        Box::new(terminal::TerminalChecker),
        Box::new(completions::CompletionChecker),
        Box::new(overlap::OverlapChecker::default()),
        Box::new(cancel::CancelChecker {
            epsilon_ns: cancel::START_UP_ALLOWANCE_NS,
        }),
        Box::new(dependency::DependencyChecker::default()),
        Box::new(linearizable::LinearizableChecker::default()),
    ]
}

/// Builds a stats map from (name, value) pairs.
pub(crate) fn stats<const N: usize>(pairs: [(&str, usize); N]) -> BTreeMap<String, u64> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_is_pessimistic() {
        assert_eq!(Valid::True.and(Valid::True), Valid::True);
        assert_eq!(Valid::True.and(Valid::Unknown), Valid::Unknown);
        assert_eq!(Valid::Unknown.and(Valid::False), Valid::False);
    }
}
