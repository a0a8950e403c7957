//! `greedy`, the founding document's default: highest (aged) priority first, onto the first agent
//! with room.
//!
//! Agents are scanned in id order starting from a cursor; after each placement the cursor moves
//! to the agent after the one that took the task. Equal agents therefore share a round's work
//! round-robin instead of the lowest id filling up first, and the result stays a deterministic
//! function of the view (the cursor starts at the lowest id every round).
//!
//! Unlike the founding document's greedy, which ignores agent limits, this one places only where
//! the task fits (the shared rules in [`super`]).

use super::Policy;
use super::Round;
use super::View;
use crate::command::Placement;

/// Priority first, any agent with room, round-robin among agents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

impl Policy for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn place(&self, view: &View) -> Vec<Placement> {
        let mut round = Round::new(view);
        let mut cursor = 0;
        round.place_candidates(|task, agents| {
            let n = agents.len();
            let chosen = (0..n)
                .map(|k| (cursor + k) % n)
                .find(|&i| agents[i].eligible(task))?;
            cursor = (chosen + 1) % n;
            Some(chosen)
        });
        round.into_placements()
    }
}
