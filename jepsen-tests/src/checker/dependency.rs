//! Dependency order: a task never starts before all its dependencies have succeeded.
//!
//! Dependencies come from the submit invokes. For every execution of a task `t` and every
//! dependency `d` of `t`, the execution log must hold an execution of `d` that ended with
//! `success: true` no later than `t`'s start (plus `epsilon_ns`, for agents whose clocks differ;
//! 0 on one host). Also, a task whose final state is `succeeded` must have only dependencies
//! whose final state is `succeeded` (a failed or cancelled dependency fails its dependents).

use std::collections::BTreeMap;

use super::Anomaly;
use super::AnomalyKind;
use super::CheckInput;
use super::Checker;
use super::Verdict;
use super::stats;
use crate::execlog::Execution;
use crate::history::TaskState;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct DependencyChecker {
    /// Allowed clock skew between agents' log clocks, in nanoseconds.
    pub epsilon_ns: u64,
}

impl Checker for DependencyChecker {
    fn name(&self) -> &'static str {
        "dependency-order"
    }

    fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let deps = input.dependencies();
        // Earliest successful end per task.
        let mut first_success: BTreeMap<&str, u64> = BTreeMap::new();
        for e in input.executions.iter().filter(|e| e.success == Some(true)) {
            if let Some(end) = e.end_ns {
                let v = first_success.entry(&e.task).or_insert(end);
                *v = (*v).min(end);
            }
        }
        let mut anomalies = Vec::new();
        let mut checked = 0;
        for e in input.executions {
            let Some(ds) = deps.get(&e.task) else { continue };
            for d in ds {
                checked += 1;
                if let Some(a) = violation(e, d, first_success.get(d.as_str()).copied(), self.epsilon_ns) {
                    anomalies.push(a);
                }
            }
        }
        for (id, ds) in &deps {
            let Some(TaskState::Succeeded) = input.final_tasks.get(id).and_then(|t| t.state) else {
                continue;
            };
            for d in ds {
                let dep_state = input.final_tasks.get(d).and_then(|t| t.state);
                if dep_state.is_some_and(|s| s != TaskState::Succeeded) {
                    anomalies.push(Anomaly::new(
                        AnomalyKind::DependencyViolation,
                        id,
                        format!("succeeded although its dependency {d} ended {dep_state:?}"),
                    ));
                }
            }
        }
        Verdict::from_anomalies(anomalies, stats([("dependency_edges_checked", checked)]))
    }
}

fn violation(e: &Execution, dep: &str, dep_success_end: Option<u64>, epsilon_ns: u64) -> Option<Anomaly> {
    let detail = match dep_success_end {
        None => format!(
            "token {} started at {} ns, but dependency {dep} never succeeded",
            e.token, e.start_ns
        ),
        Some(end) if end > e.start_ns.saturating_add(epsilon_ns) => format!(
            "token {} started at {} ns, before dependency {dep} succeeded at {end} ns",
            e.token, e.start_ns
        ),
        Some(_) => return None,
    };
    Some(Anomaly::new(AnomalyKind::DependencyViolation, &e.task, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Valid;
    use crate::testkit::*;

    fn run(dep_end: u64, child_start: u64) -> Run {
        let mut run = Run::new();
        run.submit_ok(1, "parent", &[], true, 1, 2)
            .submit_ok(1, "child", &["parent"], true, 3, 4)
            .final_state("parent", TaskState::Succeeded)
            .final_state("child", TaskState::Succeeded);
        run.executions = vec![
            exec("parent", 5, 10, Some(dep_end)),
            exec("child", 6, child_start, Some(100)),
        ];
        run
    }

    #[test]
    fn child_after_parent_passes() {
        assert_eq!(
            run(20, 30).check(&DependencyChecker::default()).valid,
            Valid::True
        );
    }

    #[test]
    fn child_started_before_parent_finished_is_caught() {
        let v = run(50, 30).check(&DependencyChecker::default());
        assert_eq!(v.valid, Valid::False);
        assert_eq!(v.anomalies[0].kind, AnomalyKind::DependencyViolation);
        assert_eq!(v.anomalies[0].task.as_deref(), Some("child"));
    }

    #[test]
    fn child_succeeding_after_failed_parent_is_caught() {
        let mut r = run(20, 30);
        r.executions[0].success = Some(false);
        r.final_state("parent", TaskState::Failed);
        let v = r.check(&DependencyChecker::default());
        assert_eq!(v.anomalies.len(), 2, "{v:?}");
    }
}
