//! The leader's agent-liveness tracker (in memory, never replicated).
//!
//! Heartbeats are not replicated: only the leader records when it last heard from each agent,
//! and only the leader declares an agent down (by proposing `SetAgentState { state: Down,
//! epoch: Some(e) }`). The tracker is pure: the caller passes in readings of a *monotonic*
//! clock (`now_ms`, milliseconds since any fixed origin, e.g. an `Instant` taken at start-up),
//! never wall-clock time, so a clock step cannot expire every agent at once.
//!
//! # Rules
//!
//! - On each election ([`Liveness::on_elected`]) every agent's clock starts afresh: the new
//!   leader has heard no heartbeat yet, so it gives every agent a full `agent_ttl` of grace from
//!   the moment it became leader. Heartbeats recorded in an earlier term are dropped.
//! - An agent is silent since `max(last heartbeat received at its current epoch, elected_at)`;
//!   after `agent_ttl` of silence it is reported by [`Liveness::expired`].
//! - Epochs fence incarnations: a heartbeat for an epoch older than one already recorded is
//!   ignored, and a heartbeat recorded for an older epoch than the agent's replicated one does
//!   not keep the newer incarnation alive. A heartbeat for a *newer* epoch than the replicated
//!   state knows (its registration is not applied here yet) does count: that agent is alive.
//!
//! # Why this is safe: the lease margin
//!
//! An agent fences itself (kills its tasks and stops reporting them) once `lease_timeout` has
//! passed, on its own clock, since it *sent* its last heartbeat that the leader acknowledged.
//! The leader declares it down once `agent_ttl` has passed, on the leader's clock, since it
//! *received* that heartbeat, or since it was elected. Receipt comes after sending, so the
//! leader's starting point is never earlier than the agent's. No task runs on two agents at once
//! if the agent's tasks are dead before the leader's declaration, which
//! [`check_lease_margin`] makes sure of for the configured values. It relies on the caller
//! acknowledging a heartbeat only (1) after the leader recorded it here, a follower forwarding
//! it and waiting for the leader's answer, and (2) while the leader's leadership is confirmed by
//! a quorum within the Raft leader lease, so no newer leader can have been elected, and started
//! its grace period, before the heartbeat was received.

use std::collections::HashMap;

/// Slack added to the computed lease margin for what the model leaves out: timer granularity,
/// scheduling delay between the lease check and the kill on the agent, and between the
/// heartbeat's receipt and its recording on the leader. The larger of this and 10% of the
/// lease applies.
pub const MIN_LEASE_SLACK_MS: u64 = 1_000;

/// What the leader knows about one agent's last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    epoch: u64,
    at_ms: u64,
}

/// The leader's in-memory record of agent heartbeats. See the module doc for the rules.
#[derive(Clone, Debug)]
pub struct Liveness {
    agent_ttl_ms: u64,
    /// When this node last became leader; `None` before its first election (it declares
    /// nothing then).
    elected_at_ms: Option<u64>,
    seen: HashMap<String, Seen>,
}

impl Liveness {
    pub fn new(agent_ttl_ms: u64) -> Self {
        Self {
            agent_ttl_ms,
            elected_at_ms: None,
            seen: HashMap::new(),
        }
    }

    pub fn agent_ttl_ms(&self) -> u64 {
        self.agent_ttl_ms
    }

    /// When this node last became leader, if ever.
    pub fn elected_at_ms(&self) -> Option<u64> {
        self.elected_at_ms
    }

    /// A new term of leadership: every agent's clock starts afresh at `now` (grace period), and
    /// heartbeats recorded before are forgotten.
    pub fn on_elected(&mut self, now_ms: u64) {
        self.elected_at_ms = Some(now_ms);
        self.seen.clear();
    }

    /// A heartbeat (or register) from `agent` at `epoch`, received at `now`. One for an epoch
    /// older than the one already recorded for the agent is ignored.
    pub fn heartbeat(&mut self, agent: &str, epoch: u64, now_ms: u64) {
        match self.seen.get_mut(agent) {
            Some(seen) if epoch < seen.epoch => {}
            Some(seen) if epoch == seen.epoch => seen.at_ms = seen.at_ms.max(now_ms),
            Some(seen) => *seen = Seen { epoch, at_ms: now_ms },
            None => {
                self.seen.insert(agent.to_string(), Seen { epoch, at_ms: now_ms });
            }
        }
    }

    /// Agents (from the replicated state: id, epoch, whether it is alive-or-draining) that have
    /// been silent for `agent_ttl` since `max(last heartbeat at that epoch, elected_at)`:
    /// returns `(id, epoch)` to declare down, in the order given. An agent never heard from
    /// since the election counts from `elected_at`; agents already down are skipped. Before the
    /// first election nothing expires.
    ///
    /// An expired agent is reported again on every call until the replicated state shows it
    /// down (or it heartbeats): the caller should not propose a second `SetAgentState` while
    /// one is in flight.
    pub fn expired<'a>(
        &self,
        agents: impl IntoIterator<Item = (&'a str, u64, bool)>,
        now_ms: u64,
    ) -> Vec<(String, u64)> {
        agents
            .into_iter()
            .filter(|&(id, epoch, up)| up && self.deadline(id, epoch).is_some_and(|d| now_ms >= d))
            .map(|(id, epoch, _)| (id.to_string(), epoch))
            .collect()
    }

    /// Forget an agent (declared down). If it comes back it counts from its next heartbeat, or
    /// from `elected_at` while it has not sent one.
    pub fn forget(&mut self, agent: &str) {
        self.seen.remove(agent);
    }

    /// When the last heartbeat from `agent` was received in this term (at any epoch).
    pub fn last_seen(&self, agent: &str) -> Option<u64> {
        self.seen.get(agent).map(|s| s.at_ms)
    }

    /// Milliseconds until the first of `agents` (same shape as for [`expired`](Self::expired))
    /// could expire, for the caller's timer: `Some(0)` if one already has, `None` if none can
    /// (no agent is up, or this node was never elected). A heartbeat only pushes deadlines
    /// later, so sleeping this long never misses an expiry.
    pub fn next_expiry_in<'a>(
        &self,
        agents: impl IntoIterator<Item = (&'a str, u64, bool)>,
        now_ms: u64,
    ) -> Option<u64> {
        agents
            .into_iter()
            .filter(|&(_, _, up)| up)
            .filter_map(|(id, epoch, _)| self.deadline(id, epoch))
            .min()
            .map(|d| d.saturating_sub(now_ms))
    }

    /// The moment `agent` at `epoch` expires unless heard from: `agent_ttl` after its last
    /// heartbeat at `epoch` or a newer one, or after the election if later.
    fn deadline(&self, agent: &str, epoch: u64) -> Option<u64> {
        let elected = self.elected_at_ms?;
        let heard = self
            .seen
            .get(agent)
            .filter(|s| s.epoch >= epoch)
            .map_or(elected, |s| s.at_ms.max(elected));
        Some(heard.saturating_add(self.agent_ttl_ms))
    }
}

/// The smallest `agent_ttl` that is safe for an agent lease of `lease_timeout_ms`, given a
/// maximum clock-rate drift of `max_drift_ppm` (parts per million, for the agent's and the
/// leader's clocks alike) and `kill_grace_ms`, the longest an agent takes from deciding to fence
/// until its tasks' processes are dead. `None` when the drift is 100% or more (no safe value).
///
/// With `s` the real time the agent sent its last acknowledged heartbeat and `ρ` the drift:
/// the agent's clock measures `lease_timeout` by real time at most
/// `s + lease_timeout / (1 − ρ)`, and its tasks are dead by that plus `kill_grace`. The leader
/// starts counting at `r ≥ s` and its clock measures `agent_ttl` no earlier than
/// `r + agent_ttl / (1 + ρ)`. Safety needs the second after the first for `r = s`:
///
/// `agent_ttl > (1 + ρ) × (lease_timeout / (1 − ρ) + kill_grace)`
///
/// plus a slack of `max(MIN_LEASE_SLACK_MS, lease_timeout / 10)` for what the model leaves out
/// (see [`MIN_LEASE_SLACK_MS`]). The result is rounded up to the millisecond.
pub fn min_agent_ttl_ms(lease_timeout_ms: u64, max_drift_ppm: u32, kill_grace_ms: u64) -> Option<u64> {
    const PPM: u128 = 1_000_000;
    let rho = max_drift_ppm as u128;
    if rho >= PPM {
        return None;
    }
    let lease = lease_timeout_ms as u128;
    let kill = kill_grace_ms as u128;
    // (1+ρ)(L/(1−ρ) + K) = (PPM+ρ)(L·PPM + K(PPM−ρ)) / (PPM(PPM−ρ)), rounded up.
    let num = (PPM + rho) * (lease * PPM + kill * (PPM - rho));
    let den = PPM * (PPM - rho);
    let bound = num.div_ceil(den);
    let slack = (MIN_LEASE_SLACK_MS as u128).max(lease / 10);
    u64::try_from(bound + slack).ok()
}

/// Checks that `agent_ttl_ms` exceeds `lease_timeout_ms` by a safe margin (see
/// [`min_agent_ttl_ms`] for the derivation), so an agent cut off from the leader has killed its
/// tasks before the leader declares it down and reassigns them. The error says which value is
/// needed. Both durations must be non-zero.
pub fn check_lease_margin(
    lease_timeout_ms: u64,
    agent_ttl_ms: u64,
    max_drift_ppm: u32,
    kill_grace_ms: u64,
) -> Result<(), String> {
    if lease_timeout_ms == 0 || agent_ttl_ms == 0 {
        return Err(format!(
            "lease_timeout ({lease_timeout_ms} ms) and agent_ttl ({agent_ttl_ms} ms) must both be \
             greater than zero"
        ));
    }
    match min_agent_ttl_ms(lease_timeout_ms, max_drift_ppm, kill_grace_ms) {
        None => Err(format!(
            "max clock drift of {max_drift_ppm} ppm is not below 1,000,000 ppm: no agent_ttl is safe"
        )),
        Some(min) if agent_ttl_ms < min => Err(format!(
            "agent_ttl ({agent_ttl_ms} ms) must be at least {min} ms for lease_timeout \
             {lease_timeout_ms} ms, clock drift {max_drift_ppm} ppm and kill grace \
             {kill_grace_ms} ms ((1+drift) × (lease/(1−drift) + kill grace), plus a slack of \
             max({MIN_LEASE_SLACK_MS} ms, 10% of the lease)), or an agent cut off from the leader \
             could still be running tasks when they are reassigned"
        )),
        Some(_) => Ok(()),
    }
}
