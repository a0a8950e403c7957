//! Terminal states never change.
//!
//! Observations of a task's state are the `ok` reads, the state reported by `ok` cancels, and
//! the final snapshot (observed after everything else). If an observation of a terminal state
//! *completed* before another observation was *invoked* (real-time order), the later one must
//! report the same terminal state. And since a task reaches at most one terminal state, two
//! observations of *different* terminal states are an anomaly whatever their timing. Other
//! concurrent observations are not compared here (that is the linearizability checker's job).

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::history::OpValue;
use crate::history::Outcome;
use crate::history::TaskState;

/// One observed state: (invoke_ns, complete_ns, state, line; 0 for the final snapshot).
type Observation = (u64, u64, Option<TaskState>, usize);

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalChecker;

impl Checker for TerminalChecker {
    fn name(&self) -> &'static str {
        "terminal-stable"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let mut obs: BTreeMap<&str, Vec<Observation>> = BTreeMap::new();
        for op in input.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
            let Some(done) = op.complete_ns else { continue };
            match op.result() {
                OpValue::Read(r) => {
                    for (id, state) in &r.states {
                        obs.entry(id)
                            .or_default()
                            .push((op.invoke_ns, done, *state, op.line));
                    }
                }
                OpValue::Cancel(c) => {
                    if let Some(state) = c.state {
                        obs.entry(&c.id)
                            .or_default()
                            .push((op.invoke_ns, done, Some(state), op.line));
                    }
                }
                _ => {}
            }
        }
        for (id, t) in input.final_tasks {
            obs.entry(id).or_default().push((u64::MAX, u64::MAX, t.state, 0));
        }
        let mut anomalies = Vec::new();
        let mut count = 0;
        for (id, list) in obs {
            count += list.len();
            let mut terminals: Vec<&Observation> = list
                .iter()
                .filter(|o| o.2.is_some_and(|s| s.is_terminal()))
                .collect();
            terminals.sort_by_key(|o| o.1);
            // A task reaches at most one terminal state, so two different terminal observations
            // are an anomaly whatever their timing.
            if let Some(other) = terminals.iter().find(|t| t.2 != terminals[0].2) {
                let (a, b) = if terminals[0].1 <= other.1 {
                    (terminals[0], *other)
                } else {
                    (*other, terminals[0])
                };
                anomalies.push(changed(id, a, b));
                continue;
            }
            // Sweep by invoke time: once a terminal observation completed, every observation
            // invoked later must report the same state.
            let Some(first) = terminals.first() else { continue };
            if let Some(o) = list.iter().find(|o| o.0 > first.1 && o.2 != first.2) {
                anomalies.push(changed(id, first, o));
            }
        }
        Verdict::from_anomalies(anomalies, stats([("observations", count)]))
    }
}

fn changed(id: &str, before: &Observation, after: &Observation) -> Anomaly {
    let at = |o: &Observation| {
        if o.3 == 0 {
            "the final snapshot".to_string()
        } else {
            format!("line {}", o.3)
        }
    };
    Anomaly::new(
        AnomalyKind::TerminalChanged,
        id,
        format!(
            "observed {:?} ({}), later {:?} ({})",
            before.2,
            at(before),
            after.2,
            at(after)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::testkit::*;

    #[test]
    fn stable_terminal_passes_and_concurrent_reads_are_not_compared() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .read_ok(2, "t1", Some(TaskState::Running), 3, 10)
            .read_ok(3, "t1", Some(TaskState::Succeeded), 4, 6)
            .read_ok(4, "t1", Some(TaskState::Succeeded), 11, 12)
            .final_state("t1", TaskState::Succeeded);
        assert_eq!(run.check(&TerminalChecker).valid, Valid::True);
    }

    #[test]
    fn terminal_state_that_changed_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .read_ok(2, "t1", Some(TaskState::Cancelled), 3, 4)
            .read_ok(2, "t1", Some(TaskState::Succeeded), 5, 6)
            .final_state("t1", TaskState::Succeeded);
        let v = run.check(&TerminalChecker);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::TerminalChanged);
    }

    #[test]
    fn final_snapshot_disagreeing_with_a_terminal_read_is_caught() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .ok(2, cancel("t1"), 3, cancel_ok("t1", true, TaskState::Cancelled), 4)
            .final_state("t1", TaskState::Pending);
        let v = run.check(&TerminalChecker);
        assert_eq!(v.valid, Valid::False);
        assert!(v.anomalies[0].detail.contains("final snapshot"), "{v:?}");
    }

    #[test]
    fn two_different_terminal_states_are_caught_even_when_concurrent() {
        let mut run = Run::new();
        run.submit_ok(1, "t1", &[], true, 1, 2)
            .read_ok(2, "t1", Some(TaskState::Failed), 3, 10)
            .read_ok(3, "t1", Some(TaskState::Succeeded), 4, 9);
        let v = run.check(&TerminalChecker);
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies.len(), 1);
    }
}
