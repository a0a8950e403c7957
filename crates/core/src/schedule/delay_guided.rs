//! `delay-guided`, the founding document's load-balancing heuristic: new work goes to the agent
//! with the lowest average load weighted by how slowly it starts tasks, and not-yet-started work
//! is moved off agents that are over their limits.
//!
//! # The estimate
//!
//! For each agent, at the start of the round:
//! - `u0` = [`utilisation`](super::AgentView::utilisation) from the replicated state (the
//!   declared demands of everything assigned to or running on it);
//! - `base` = `max(load, u0)`, where `load` is the average load the agent reports (1.0 = at
//!   its declared limits), or just `u0` before its first report. The reported load lags behind
//!   assignments (a task assigned but not started uses nothing yet) and the declared demands may
//!   under- or over-state real use; the larger of the two is the safer guess;
//! - `weight` = `1 + start_latency_ms / REFERENCE_LATENCY_MS` (the observed assigned-to-started
//!   latency; no observation yet: weight 1). An agent that is slow to start tasks looks busier
//!   than its load says, in proportion: at [`REFERENCE_LATENCY_MS`] its load counts double.
//!
//! During the round, the estimated load of an agent *with* task `t` is
//! `est(t) = base + (utilisation with t and this round's bookings − u0)`, so every placement
//! raises the agent's estimate and a round's tasks spread instead of piling onto the agent that
//! looked idlest when the round began. Its score is `score(t) = est(t) × weight`.
//!
//! An agent is *over its limits* when its reported `load` exceeds 1.0.
//!
//! # Relief (first)
//!
//! Agents over their limits, highest load first (ties: id), give up their unstarted tasks
//! (`AgentView::unstarted`, oldest first). Each such task moves to the eligible agent, other than
//! one over its limits, with the lowest `score(t)`, provided that agent would stay within its
//! limits (`est(t) <= 1.0`) and `score(t)` is below the source's `base × weight` (moving must
//! improve things; a move to a slow agent may not). The move is a placement with
//! `move_from: Some(token)`; the source gets the task's demands back and the target books them.
//! A task with no such target stays where it is.
//!
//! # Placement (then)
//!
//! With the rest of the round's budget, each candidate (aged-priority order, like every policy)
//! goes to the eligible agent, other than one over its limits, with the lowest `score(t)` (ties:
//! id). An agent over its limits takes nothing new until its reported load is back to 1.0 or
//! below. A candidate with no such agent is skipped.
//!
//! Relief comes first because moved tasks were accepted earlier and are stuck behind an agent
//! that cannot start them; it is bounded by the unstarted work on overloaded agents and by the
//! room elsewhere, and moved tasks never move again in the same round.
//!
//! Non-finite or negative reports (`load`, `start_latency_ms`) are treated as absent.

use std::cmp::Reverse;

use super::AgentView;
use super::Candidate;
use super::Policy;
use super::Round;
use super::Score;
use super::View;
use crate::command::Placement;

/// The start latency, in milliseconds, at which an agent's load counts double.
pub const REFERENCE_LATENCY_MS: f64 = 1000.0;

/// Least estimated load weighted by start latency; relieves agents over their limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct DelayGuided;

/// What the round knows about one agent besides its bookings (see the module doc).
#[derive(Clone, Copy, Debug)]
struct Estimate {
    /// Reported load, if any (finite and non-negative).
    load: Option<f64>,
    /// Utilisation at the start of the round.
    u0: f64,
    /// `max(load, u0)`.
    base: f64,
    /// `1 + start_latency_ms / REFERENCE_LATENCY_MS`.
    weight: f64,
}

impl Estimate {
    fn of(agent: &AgentView) -> Self {
        let sane = |x: Option<f64>| x.filter(|v| v.is_finite() && *v >= 0.0);
        let load = sane(agent.load);
        let u0 = agent.utilisation();
        let latency = sane(agent.start_latency_ms).unwrap_or(0.0);
        Self {
            load,
            u0,
            base: load.map_or(u0, |l| l.max(u0)),
            weight: 1.0 + latency / REFERENCE_LATENCY_MS,
        }
    }

    /// Reporting a load above its declared limits.
    fn over(&self) -> bool {
        self.load.is_some_and(|l| l > 1.0)
    }

    /// `(est(t), score(t))` for `agent` (as booked so far) taking `task`.
    fn with(&self, agent: &AgentView, task: &Candidate) -> (f64, f64) {
        let est = self.base + (agent.utilisation_with(&task.resources) - self.u0);
        (est, est * self.weight)
    }
}

impl Policy for DelayGuided {
    fn name(&self) -> &'static str {
        "delay-guided"
    }

    fn place(&self, view: &View) -> Vec<Placement> {
        let mut round = Round::new(view);
        let estimates: Vec<Estimate> = round.agents.iter().map(Estimate::of).collect();

        // Relief: agents over their limits, highest load first (stable sort: ties by id).
        let mut sources: Vec<usize> = (0..round.agents.len())
            .filter(|&i| estimates[i].over() && !round.agents[i].unstarted.is_empty())
            .collect();
        sources.sort_by_key(|&i| Reverse(Score(estimates[i].base)));
        'relief: for source in sources {
            let source_score = estimates[source].base * estimates[source].weight;
            for unstarted in &view.agents[round.view_index[source]].unstarted {
                if !round.budget_left() {
                    break 'relief;
                }
                let task = &unstarted.task;
                if round.done(task) {
                    continue;
                }
                let target = best(&round.agents, &estimates, task, |est, score| {
                    est <= 1.0 && score < source_score
                });
                if let Some(to) = target {
                    round.assign(task, to, Some((source, unstarted.token)));
                }
            }
        }

        // Placement of new work.
        round.place_candidates(|task, agents| best(agents, &estimates, task, |_, _| true));
        round.into_placements()
    }
}

/// The eligible agent not over its limits with the lowest score for `task` among those `accept`
/// (given `est(t)` and `score(t)`) lets through; ties: lowest id.
fn best(
    agents: &[AgentView],
    estimates: &[Estimate],
    task: &Candidate,
    accept: impl Fn(f64, f64) -> bool,
) -> Option<usize> {
    agents
        .iter()
        .zip(estimates)
        .enumerate()
        .filter(|(_, (a, e))| !e.over() && a.eligible(task))
        .filter_map(|(i, (a, e))| {
            let (est, score) = e.with(a, task);
            accept(est, score).then_some((Score(score), i))
        })
        .min()
        .map(|(_, i)| i)
}
