//! No execution starts after an acknowledged cancel.
//!
//! Once a cancel of task `t` returned `ok` at history time `c` (whether it cancelled the task or
//! found it already terminal), no execution of `t` may start after `c`. The execution log and the
//! history use the same host clock, but agents stamp their log lines themselves, so a small
//! `epsilon_ns` of allowed skew is subtracted in the log's favour: a start is an anomaly only if
//! `start_ns > c + epsilon_ns`.
//!
//! The start a task logs is not the moment the scheduler let it start: the agent claims the
//! attempt (the claim is committed before the cancel, or the cancel wins and nothing is spawned),
//! then starts a supervisor process, which starts the task's shell, which runs `date`. That
//! start-up takes milliseconds, and up to a few hundred under load on 2 cores, so a task whose
//! claim was committed just before the cancel legitimately logs a start just after the cancel's
//! acknowledgement. [`all_checkers`](super::all_checkers) therefore uses
//! [`START_UP_ALLOWANCE_NS`] as epsilon, and starts inside the allowance are counted
//! (`starts_within_allowance`) rather than ignored. A scheduler that really starts cancelled work
//! starts it whenever it next places it, typically far beyond the allowance.

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::history::OpValue;
use crate::history::Outcome;

/// How much later than a cancel's acknowledgement a task may log its start (see the module
/// docs): 250 ms.
pub const START_UP_ALLOWANCE_NS: u64 = 250_000_000;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct CancelChecker {
    /// Allowed clock skew between the execution log and the history, in nanoseconds.
    pub epsilon_ns: u64,
}

impl Checker for CancelChecker {
    fn name(&self) -> &'static str {
        "no-start-after-cancel"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        // Earliest acknowledged cancel per task: (complete_ns, line).
        let mut acked: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        for op in input.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
            let (OpValue::Cancel(c), Some(done)) = (&op.invoke, op.complete_ns) else {
                continue;
            };
            let entry = acked.entry(&c.id).or_insert((done, op.line));
            if done < entry.0 {
                *entry = (done, op.line);
            }
        }
        let mut anomalies = Vec::new();
        let mut within = 0usize;
        for e in input.executions {
            let Some(&(done, line)) = acked.get(e.task.as_str()) else {
                continue;
            };
            if e.start_ns > done && e.start_ns <= done.saturating_add(self.epsilon_ns) {
                within += 1;
            }
            if e.start_ns > done.saturating_add(self.epsilon_ns) {
                anomalies.push(Anomaly::new(
                    AnomalyKind::StartAfterCancel,
                    &e.task,
                    format!(
                        "token {} started on {} at {} ns, after the cancel acknowledged at {done} ns (line {line})",
                        e.token, e.agent, e.start_ns
                    ),
                ));
            }
        }
        Verdict::from_anomalies(
            anomalies,
            stats([
                ("acknowledged_cancels", acked.len()),
                ("starts_within_allowance", within),
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::history::TaskState;
    use crate::testkit::*;

    fn run_with_start(start: u64) -> Run {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2).ok(
            2,
            cancel("t1"),
            10,
            cancel_ok("t1", true, TaskState::Cancelled),
            20,
        );
        run.executions = vec![exec("t1", 5, start, None)];
        run
    }

    #[test]
    fn start_before_cancel_ack_passes() {
        assert_eq!(
            run_with_start(15).check(&CancelChecker::default()).valid,
            Valid::True
        );
    }

    #[test]
    fn start_after_acknowledged_cancel_is_caught() {
        let v = run_with_start(25).check(&CancelChecker::default());
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::StartAfterCancel);
    }

    #[test]
    fn epsilon_absorbs_small_skew() {
        assert_eq!(
            run_with_start(25).check(&CancelChecker { epsilon_ns: 10 }).valid,
            Valid::True
        );
    }
}
