//! Lost acknowledged submissions (Jepsen's `set` checker).
//!
//! Every task of an `ok` submit must be in the final snapshot (`final_tasks`, read after faults
//! healed). A task in the snapshot that no submit ever tried to create is `unexpected`. Tasks
//! whose submit was `info` (unknown) may or may not be there; those that are count as
//! `recovered` in the stats.

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
pub struct LostChecker;

impl Checker for LostChecker {
    fn name(&self) -> &'static str {
        "lost"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let acked: BTreeSet<String> = input
            .submitted(Outcome::Ok)
            .into_iter()
            .map(|(_, t)| t.id)
            .collect();
        let unknown: BTreeSet<String> = input
            .submitted(Outcome::Info)
            .into_iter()
            .map(|(_, t)| t.id)
            .collect();
        let attempted: BTreeSet<String> = input
            .ops
            .iter()
            .filter_map(|op| match &op.invoke {
                crate::history::OpValue::Submit(v) => Some(v.tasks.iter().map(|t| t.id.clone())),
                _ => None,
            })
            .flatten()
            .collect();
        let present = |id: &String| input.final_tasks.get(id).is_some_and(|t| t.state.is_some());
        let mut anomalies = Vec::new();
        for id in acked.iter().filter(|id| !present(id)) {
            anomalies.push(Anomaly::new(
                AnomalyKind::Lost,
                id,
                "acknowledged submit, missing from the final snapshot",
            ));
        }
        for (id, _) in input
            .final_tasks
            .iter()
            .filter(|(id, t)| t.state.is_some() && !attempted.contains(*id))
        {
            anomalies.push(Anomaly::new(
                AnomalyKind::Unexpected,
                id,
                "in the final snapshot but never submitted",
            ));
        }
        let recovered = unknown
            .iter()
            .filter(|id| !acked.contains(*id) && present(id))
            .count();
        Verdict::from_anomalies(
            anomalies,
            stats([
                ("acknowledged", acked.len()),
                ("attempted", attempted.len()),
                ("recovered", recovered),
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;
    use crate::history::TaskState;
    use crate::testkit::*;

    #[test]
    fn acknowledged_tasks_present_pass() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .op(
                2,
                submit(&[("t2", &[])]),
                3,
                EventType::Info,
                submit(&[("t2", &[])]),
                Some(4),
            )
            .final_state("t1", TaskState::Succeeded)
            .final_state("t2", TaskState::Succeeded);
        let v = run.check(&LostChecker);
        assert_eq!(v.valid, super::super::Valid::True, "{v:?}");
        assert_eq!(v.stats["recovered"], 1);
    }

    #[test]
    fn lost_ack_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .submit_ok(2, "t2", &[], true, 1, 2)
            .final_state("t2", TaskState::Pending);
        let v = run.check(&LostChecker);
        assert_eq!(v.valid, super::super::Valid::False);
        assert_eq!(v.anomalies.len(), 1);
        assert_eq!(
            (v.anomalies[0].kind, v.anomalies[0].task.as_deref()),
            (AnomalyKind::Lost, Some("t1"))
        );
    }

    #[test]
    fn unexpected_task_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .final_state("t1", TaskState::Pending)
            .final_state("ghost", TaskState::Pending);
        let v = run.check(&LostChecker);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::Unexpected);
    }
}
