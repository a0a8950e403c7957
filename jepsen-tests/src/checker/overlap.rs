//! No two executions of one task overlap in time (from the external execution log).
//!
//! Executions are half-open intervals `[start_ns, end_ns)`. An execution without an end (the
//! task was killed before writing it, or is still running) counts as open until `horizon_ns`,
//! which the runner sets to the time the final snapshot was taken: after that, nothing should
//! run. The default horizon is `u64::MAX` (open forever), the strictest reading.

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::execlog::Execution;

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct OverlapChecker {
    /// End assumed for executions that never wrote an end.
    pub horizon_ns: u64,
}

impl Default for OverlapChecker {
    fn default() -> Self {
        Self { horizon_ns: u64::MAX }
    }
}

impl Checker for OverlapChecker {
    fn name(&self) -> &'static str {
        "no-overlap"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let mut by_task: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
        for e in input.executions {
            by_task.entry(&e.task).or_default().push(e);
        }
        let mut anomalies = Vec::new();
        for (task, mut list) in by_task {
            list.sort_by_key(|e| e.start_ns);
            // The execution reaching furthest so far.
            let mut reach: Option<&Execution> = None;
            for e in list {
                if let Some(r) = reach {
                    if e.start_ns < r.end_or(self.horizon_ns) {
                        anomalies.push(Anomaly::new(
                            AnomalyKind::OverlappingExecutions,
                            task,
                            format!(
                                "token {} on {} [{}, {:?}) overlaps token {} on {} starting at {}",
                                r.token, r.agent, r.start_ns, r.end_ns, e.token, e.agent, e.start_ns
                            ),
                        ));
                    }
                    if e.end_or(self.horizon_ns) > r.end_or(self.horizon_ns) {
                        reach = Some(e);
                    }
                } else {
                    reach = Some(e);
                }
            }
        }
        Verdict::from_anomalies(anomalies, stats([("executions", input.executions.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::testkit::*;

    #[test]
    fn back_to_back_executions_pass() {
        let mut run = Run::new();
        run.executions = vec![
            exec("t1", 5, 10, Some(20)),
            exec("t1", 8, 20, Some(30)),
            exec("t2", 9, 15, None),
        ];
        assert_eq!(run.check(&OverlapChecker::default()).valid, Valid::True);
    }

    #[test]
    fn overlapping_executions_are_caught() {
        let mut run = Run::new();
        run.executions = vec![exec("t1", 5, 10, Some(40)), exec("t1", 8, 30, Some(50))];
        let v = run.check(&OverlapChecker::default());
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::OverlappingExecutions);
    }

    #[test]
    fn open_execution_counts_until_the_horizon() {
        let mut run = Run::new();
        run.executions = vec![exec("t1", 5, 10, None), exec("t1", 8, 100, Some(120))];
        assert_eq!(run.check(&OverlapChecker { horizon_ns: 50 }).valid, Valid::True);
        assert_eq!(run.check(&OverlapChecker::default()).valid, Valid::False);
    }
}
