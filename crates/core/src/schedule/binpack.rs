//! `binpack`: best fit. Each task goes to the eligible agent whose utilisation *after* placing it
//! is highest (ties: lowest id), so busy agents fill up and the others stay empty, free for large
//! tasks or to be given back.
//!
//! Utilisation is [`AgentView::utilisation`](super::AgentView::utilisation): the largest share in
//! use of slots, cpu, memory and disk, counting the tasks already booked this round.

use std::cmp::Reverse;

use super::Policy;
use super::Round;
use super::Score;
use super::View;
use super::min_eligible_by;
use crate::command::Placement;

/// Fill the fullest agent that still fits the task.
#[derive(Clone, Copy, Debug, Default)]
pub struct Binpack;

impl Policy for Binpack {
    fn name(&self) -> &'static str {
        "binpack"
    }

    fn place(&self, view: &View) -> Vec<Placement> {
        let mut round = Round::new(view);
        round.place_candidates(|task, agents| {
            min_eligible_by(agents, task, |a| {
                Reverse(Score(a.utilisation_with(&task.resources)))
            })
        });
        round.into_placements()
    }
}
