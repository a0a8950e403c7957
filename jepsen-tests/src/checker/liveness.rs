//! Liveness after healing (the idea of Jepsen's Chronos checker).
//!
//! The runner heals every fault, waits a quiet period long enough for leases to expire,
//! retries to run and elections to settle, then takes the final snapshot. Every accepted task
//! (an `ok` submit, or an `info` submit whose task exists in the snapshot) must then be terminal.
//! Tasks missing from the snapshot are [`super::lost`]'s business and are only counted here.

use std::collections::BTreeSet;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::history::Outcome;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct LivenessChecker;

impl Checker for LivenessChecker {
    fn name(&self) -> &'static str {
        "terminal-after-quiet"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let mut accepted: BTreeSet<String> = input
            .submitted(Outcome::Ok)
            .into_iter()
            .map(|(_, t)| t.id)
            .collect();
        accepted.extend(input.submitted(Outcome::Info).into_iter().map(|(_, t)| t.id));
        let mut anomalies = Vec::new();
        let mut missing = 0;
        let mut checked = 0;
        for id in &accepted {
            match input.final_tasks.get(id).and_then(|t| t.state) {
                None => missing += 1,
                Some(s) => {
                    checked += 1;
                    if !s.is_terminal() {
                        anomalies.push(Anomaly::new(
                            AnomalyKind::NotTerminal,
                            id,
                            format!("still {s:?} after the quiet period"),
                        ));
                    }
                }
            }
        }
        Verdict::from_anomalies(anomalies, stats([("checked", checked), ("missing", missing)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::history::TaskState;
    use crate::testkit::*;

    #[test]
    fn all_terminal_passes() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .submit_ok(1, "t2", &[], true, 3, 4)
            .final_state("t1", TaskState::Succeeded)
            .final_state("t2", TaskState::Cancelled);
        assert_eq!(run.check(&LivenessChecker).valid, Valid::True);
    }

    #[test]
    fn non_terminal_task_after_quiet_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .submit_ok(1, "t2", &[], true, 3, 4)
            .final_state("t1", TaskState::Succeeded)
            .final_state("t2", TaskState::Running);
        let v = run.check(&LivenessChecker);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::NotTerminal);
        assert_eq!(v.anomalies[0].task.as_deref(), Some("t2"));
    }
}
