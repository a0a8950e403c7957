//! `spread`: each task goes to the eligible agent whose utilisation *after* placing it is lowest
//! (ties: fewer tasks, then lowest id), so work is spread evenly and every agent keeps headroom.
//!
//! Comparing utilisation after placing (rather than before) spreads in proportion to capacity: a
//! task goes where it raises the fullest dimension least, so a large agent takes more tasks
//! than a small one before they look equally full. Utilisation is
//! [`AgentView::utilisation`](super::AgentView::utilisation), counting this round's bookings.

use super::Policy;
use super::Round;
use super::Score;
use super::View;
use super::min_eligible_by;
use crate::command::Placement;

/// Place on the emptiest agent that fits the task.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread;

impl Policy for Spread {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn place(&self, view: &View) -> Vec<Placement> {
        let mut round = Round::new(view);
        round.place_candidates(|task, agents| {
            min_eligible_by(agents, task, |a| {
                (Score(a.utilisation_with(&task.resources)), a.tasks)
            })
        });
        round.into_placements()
    }
}
