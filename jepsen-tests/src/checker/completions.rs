//! At most one accepted completion per task, and only with the current fencing token.
//!
//! Inputs: the final snapshot's attempt records ([`super::FinalAttempt`]: token and the
//! completion the state machine *accepted* for it, if any) and the external execution log.
//! Anomalies, per task:
//! * **double completion**: two accepted completions carry the same token, or more than one
//!   accepted completion is a success;
//! * **stale token**: a success was accepted for an attempt that is not the last one (a newer
//!   token was issued, so the success came from a superseded attempt or the task ran again); or
//!   a completion was accepted for token `T` although the log shows an execution with a newer
//!   token starting before `T`'s execution ended. The newer token was issued before `T` could
//!   report (tasks write their end line before exiting, and agents report after the exit), so
//!   when the report was accepted `T` was no longer current.

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::CompletionOutcome;
use super::Verdict;
use super::stats;
use crate::execlog::Execution;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompletionChecker;

impl Checker for CompletionChecker {
    fn name(&self) -> &'static str {
        "completions"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let mut log: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
        for e in input.executions {
            log.entry(&e.task).or_default().push(e);
        }
        let mut anomalies = Vec::new();
        let mut accepted_total = 0;
        for (id, task) in input.final_tasks {
            let accepted: Vec<_> = task
                .attempts
                .iter()
                .enumerate()
                .filter_map(|(i, a)| a.accepted.map(|o| (i, a, o)))
                .collect();
            accepted_total += accepted.len();
            let mut per_token: BTreeMap<u64, usize> = BTreeMap::new();
            for (_, a, _) in &accepted {
                *per_token.entry(a.token).or_default() += 1;
            }
            for (token, n) in per_token.iter().filter(|(_, n)| **n > 1) {
                anomalies.push(Anomaly::new(
                    AnomalyKind::DoubleCompletion,
                    id,
                    format!("{n} completions accepted for token {token}"),
                ));
            }
            let successes: Vec<u64> = accepted
                .iter()
                .filter(|(_, _, o)| *o == CompletionOutcome::Succeeded)
                .map(|(_, a, _)| a.token)
                .collect();
            if successes.len() > 1 {
                anomalies.push(Anomaly::new(
                    AnomalyKind::DoubleCompletion,
                    id,
                    format!("successes accepted for tokens {successes:?}"),
                ));
            }
            let last = task.attempts.len().saturating_sub(1);
            let runs = log.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            for (i, a, o) in &accepted {
                if *o == CompletionOutcome::Succeeded && *i != last {
                    anomalies.push(Anomaly::new(
                        AnomalyKind::StaleTokenCompletion,
                        id,
                        format!(
                            "success accepted for token {} but attempt {} came after it",
                            a.token,
                            i + 2
                        ),
                    ));
                    continue;
                }
                let ended = runs
                    .iter()
                    .filter(|e| e.token == a.token)
                    .filter_map(|e| e.end_ns)
                    .max();
                let newer = ended.and_then(|end| runs.iter().find(|e| e.token > a.token && e.start_ns < end));
                if let (Some(end), Some(n)) = (ended, newer) {
                    anomalies.push(Anomaly::new(
                        AnomalyKind::StaleTokenCompletion,
                        id,
                        format!(
                            "completion accepted for token {}, whose run ended at {end} ns, after token {} started at {} ns",
                            a.token, n.token, n.start_ns
                        ),
                    ));
                }
            }
        }
        Verdict::from_anomalies(anomalies, stats([("accepted_completions", accepted_total)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::FinalAttempt;
    use crate::checker::FinalTask;
    use crate::checker::Valid;
    use crate::history::TaskState;
    use crate::testkit::*;

    fn attempt(number: u32, token: u64, accepted: Option<CompletionOutcome>) -> FinalAttempt {
        FinalAttempt {
            number,
            token,
            agent: format!("a{number}"),
            accepted,
        }
    }

    fn run(attempts: Vec<FinalAttempt>, executions: Vec<Execution>) -> Run {
        let mut run = Run::new();
        run.final_tasks.insert(
            "t1".into(),
            FinalTask {
                state: Some(TaskState::Succeeded),
                attempts,
            },
        );
        run.executions = executions;
        run
    }

    #[test]
    fn retry_after_failure_passes() {
        let r = run(
            vec![
                attempt(1, 5, Some(CompletionOutcome::Failed)),
                attempt(2, 7, None),
                attempt(3, 8, Some(CompletionOutcome::Succeeded)),
            ],
            vec![exec("t1", 5, 10, Some(20)), exec("t1", 8, 30, Some(60))],
        );
        assert_eq!(r.check(&CompletionChecker).valid, Valid::True);
    }

    #[test]
    fn two_accepted_completions_are_caught() {
        let r = run(
            vec![
                attempt(1, 5, Some(CompletionOutcome::Succeeded)),
                attempt(2, 5, Some(CompletionOutcome::Succeeded)),
            ],
            vec![],
        );
        let v = r.check(&CompletionChecker);
        assert_eq!(v.valid, Valid::False);
        assert!(
            v.anomalies
                .iter()
                .any(|a| a.kind == AnomalyKind::DoubleCompletion),
            "{v:?}"
        );
    }

    #[test]
    fn success_on_a_superseded_attempt_is_caught() {
        let r = run(
            vec![
                attempt(1, 5, Some(CompletionOutcome::Succeeded)),
                attempt(2, 8, None),
            ],
            vec![],
        );
        let v = r.check(&CompletionChecker);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::StaleTokenCompletion, "{v:?}");
    }

    #[test]
    fn stale_token_completion_is_caught_from_the_log() {
        // Token 8 was issued (its run started at 30) before token 5's run ended at 50, yet the
        // scheduler accepted token 5's report.
        let r = run(
            vec![
                attempt(1, 5, Some(CompletionOutcome::Failed)),
                attempt(2, 8, Some(CompletionOutcome::Succeeded)),
            ],
            vec![exec("t1", 5, 10, Some(50)), exec("t1", 8, 30, Some(60))],
        );
        let v = r.check(&CompletionChecker);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies.len(), 1, "{v:?}");
        assert_eq!(v.anomalies[0].kind, AnomalyKind::StaleTokenCompletion);
    }
}
