//! Duplicate creation: no task id is created twice.
//!
//! Submits are idempotent by task id: resubmitting an existing id must answer `created = false`.
//! Two `ok` submits that both answer `created = true` for one id mean the scheduler created the
//! task twice (e.g. a retried submit applied on both sides of a failover).

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::history::Outcome;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct DuplicateChecker;

impl Checker for DuplicateChecker {
    fn name(&self) -> &'static str {
        "duplicate-creation"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let mut creations: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (op, t) in input.submitted(Outcome::Ok) {
            if t.created == Some(true) {
                creations.entry(t.id).or_default().push(op.line);
            }
        }
        let anomalies = creations
            .iter()
            .filter(|(_, lines)| lines.len() > 1)
            .map(|(id, lines)| {
                Anomaly::new(
                    AnomalyKind::DuplicateCreation,
                    id,
                    format!("created {} times, by the submits of lines {lines:?}", lines.len()),
                )
            })
            .collect();
        Verdict::from_anomalies(anomalies, stats([("created", creations.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::testkit::*;

    #[test]
    fn idempotent_resubmit_passes() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .submit_ok(2, "t1", &[], false, 3, 4);
        assert_eq!(run.check(&DuplicateChecker).valid, Valid::True);
    }

    #[test]
    fn duplicate_creation_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .submit_ok(2, "t1", &[], true, 3, 4);
        let v = run.check(&DuplicateChecker);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::DuplicateCreation);
        assert_eq!(v.anomalies[0].task.as_deref(), Some("t1"));
    }
}
