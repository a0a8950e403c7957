//! The agent's lease, and the load average it heartbeats. Both are pure: time is an argument.
//!
//! # Why the lease is counted from the send time
//!
//! The leader declares an agent down `agent_ttl` after the last heartbeat it *received*, and
//! only then gives the agent's tasks to other agents. The agent cannot know when a heartbeat was
//! received, but it was received after it was *sent*. So an acknowledgement of a heartbeat sent
//! at `t` proves the leader will not reassign before `t + agent_ttl`, and the agent keeps its
//! tasks only until `t + lease_timeout` with `lease_timeout < agent_ttl`. The margin covers the
//! two clocks running at slightly different rates and the time a kill takes. Both sides measure
//! with monotonic clocks; wall-clock jumps do not matter.
//!
//! # The lease outside the agent
//!
//! Each task's supervisor ([`crate::supervisor`]) enforces the lease too, so that a paused
//! agent's tasks still stop on time. The agent tells it the deadline in `CLOCK_MONOTONIC`
//! nanoseconds ([`monotonic_ns`]): that clock is system-wide, so the two processes agree on it.

use std::time::Duration;
use std::time::Instant;

/// `CLOCK_MONOTONIC` now, in nanoseconds. Read with `clock_gettime` directly (not through
/// `Instant`, whose clock is an implementation detail) so that the agent and the task
/// supervisors, which compare deadlines across processes, read the same clock.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        // Cannot happen: the clock exists on every Linux and the pointer is valid.
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// `at` as a `CLOCK_MONOTONIC` time in nanoseconds (see [`monotonic_now_ns`]), by its distance
/// from now on both clocks.
pub fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = monotonic_now_ns();
    if at >= now {
        let ahead = u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_add(ahead)
    } else {
        let behind = u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_sub(behind)
    }
}

/// When the agent must stop running tasks unless a heartbeat is acknowledged first.
#[derive(Clone, Debug)]
pub struct Lease {
    timeout: Duration,
    expires_at: Option<Instant>,
}

impl Lease {
    /// A lease that is not held (no acknowledgement yet).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            expires_at: None,
        }
    }

    /// An acknowledgement of a request sent at `sent_at` arrived. The leader may grant less
    /// than `lease_timeout` (`granted`, from `HeartbeatResponse.lease_ms`; `None` or zero:
    /// not said). The lease never moves backwards: a late answer to an old heartbeat does not
    /// shorten it.
    pub fn renew(&mut self, sent_at: Instant, granted: Option<Duration>) {
        let length = match granted {
            Some(g) if !g.is_zero() => g.min(self.timeout),
            _ => self.timeout,
        };
        let candidate = sent_at + length;
        if self.expires_at.is_none_or(|e| candidate > e) {
            self.expires_at = Some(candidate);
        }
    }

    /// Drops the lease (after fencing, or when the epoch changes).
    pub fn clear(&mut self) {
        self.expires_at = None;
    }

    /// When the lease runs out; `None` when it is not held.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether the agent may run tasks at `now`.
    pub fn is_held(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|e| now < e)
    }
}

/// An exponentially-weighted moving average of the utilisation, over about a minute.
#[derive(Clone, Debug)]
pub struct LoadAverage {
    window: Duration,
    value: f64,
    last: Option<Instant>,
}

impl LoadAverage {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            value: 0.0,
            last: None,
        }
    }

    /// Adds a sample taken at `now`; returns the new average. The first sample is the average.
    pub fn sample(&mut self, now: Instant, utilisation: f64) -> f64 {
        let u = if utilisation.is_finite() {
            utilisation.max(0.0)
        } else {
            0.0
        };
        self.value = match self.last {
            None => u,
            Some(last) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / self.window.as_secs_f64().max(1e-3)).exp();
                self.value + alpha * (u - self.value)
            }
        };
        self.last = Some(now);
        self.value
    }

    pub fn value(&self) -> f64 {
        self.value
    }
}

/// Utilisation of the declared limits: the highest of the fractions of CPU, memory, disk and
/// task slots in use (limits of 0 are skipped). 1.0 means at a limit.
pub fn utilisation(used: [f64; 4], limits: [f64; 4]) -> f64 {
    used.iter()
        .zip(limits.iter())
        .filter(|(_, l)| **l > 0.0)
        .map(|(u, l)| u / l)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_counts_from_the_send_time_and_never_shrinks() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lease = Lease::new(6 * s);
        assert!(!lease.is_held(t0), "not held before the first acknowledgement");
        lease.renew(t0, None);
        assert_eq!(lease.expires_at(), Some(t0 + 6 * s));
        assert!(lease.is_held(t0 + 5 * s));
        assert!(
            !lease.is_held(t0 + 6 * s),
            "expired exactly at send time + timeout"
        );
        // A late answer to an older heartbeat does not move the lease back.
        lease.renew(t0 - 3 * s, None);
        assert_eq!(lease.expires_at(), Some(t0 + 6 * s));
        lease.renew(t0 + 2 * s, None);
        assert_eq!(lease.expires_at(), Some(t0 + 8 * s));
        lease.clear();
        assert!(!lease.is_held(t0 + 2 * s));
    }

    #[test]
    fn the_leader_may_grant_less_but_never_more_than_the_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut lease = Lease::new(6 * s);
        lease.renew(t0, Some(4 * s));
        assert_eq!(lease.expires_at(), Some(t0 + 4 * s));
        let mut lease = Lease::new(6 * s);
        lease.renew(t0, Some(60 * s));
        assert_eq!(lease.expires_at(), Some(t0 + 6 * s));
        let mut lease = Lease::new(6 * s);
        lease.renew(t0, Some(Duration::ZERO));
        assert_eq!(lease.expires_at(), Some(t0 + 6 * s), "0 means not said");
    }

    #[test]
    fn instants_convert_to_the_monotonic_clock() {
        let before = monotonic_now_ns();
        let now = Instant::now();
        let ahead = monotonic_ns(now + Duration::from_secs(2));
        let behind = monotonic_ns(now - Duration::from_millis(1));
        let after = monotonic_now_ns();
        assert!(before > 0);
        // Within the time this test took, on either side.
        let slack = after - before + 1_000_000;
        assert!(
            ahead.abs_diff(before + 2_000_000_000) <= slack,
            "{ahead} vs {before}"
        );
        assert!(
            behind.abs_diff(before.saturating_sub(1_000_000)) <= slack,
            "{behind} vs {before}"
        );
        assert!(behind < ahead);
    }

    #[test]
    fn load_moves_towards_the_samples_at_the_window_rate() {
        let t0 = Instant::now();
        let mut load = LoadAverage::new(Duration::from_secs(60));
        assert_eq!(load.sample(t0, 0.0), 0.0);
        let after_a_minute = load.sample(t0 + Duration::from_secs(60), 1.0);
        assert!(
            (after_a_minute - (1.0 - (-1.0f64).exp())).abs() < 1e-9,
            "{after_a_minute}"
        );
        let same_instant = load.sample(t0 + Duration::from_secs(60), 0.0);
        assert_eq!(same_instant, after_a_minute, "no time passed: no change");
        assert!(
            load.sample(t0 + Duration::from_secs(3600), f64::NAN) < 1e-9,
            "NaN counts as 0"
        );
    }

    #[test]
    fn utilisation_is_the_tightest_limit() {
        assert_eq!(
            utilisation([500.0, 10.0, 0.0, 1.0], [1000.0, 100.0, 0.0, 4.0]),
            0.5
        );
        assert_eq!(utilisation([0.0; 4], [0.0; 4]), 0.0);
        assert_eq!(utilisation([0.0, 0.0, 0.0, 8.0], [1.0, 1.0, 1.0, 4.0]), 2.0);
    }
}
