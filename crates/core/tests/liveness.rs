//! The leader's agent-liveness tracker (`taurus_core::liveness`) and the lease-margin check.

use taurus_core::liveness::Liveness;
use taurus_core::liveness::MIN_LEASE_SLACK_MS;
use taurus_core::liveness::check_lease_margin;
use taurus_core::liveness::min_agent_ttl_ms;

const TTL: u64 = 10_000;
/// The leader's monotonic clock when it was elected.
const T0: u64 = 50_000;

/// A tracker elected at `T0`.
fn elected() -> Liveness {
    let mut l = Liveness::new(TTL);
    l.on_elected(T0);
    l
}

/// `(id, epoch, alive-or-draining)` rows as the replicated state would give them.
fn up(rows: &[(&'static str, u64)]) -> Vec<(&'static str, u64, bool)> {
    rows.iter().map(|&(id, epoch)| (id, epoch, true)).collect()
}

fn ids(expired: Vec<(String, u64)>) -> Vec<String> {
    expired
        .into_iter()
        .map(|(id, epoch)| format!("{id}@{epoch}"))
        .collect()
}

#[test]
fn nothing_expires_before_the_first_election() {
    let l = Liveness::new(TTL);
    assert_eq!(l.elected_at_ms(), None);
    assert!(l.expired(up(&[("a", 1)]), u64::MAX).is_empty());
    assert_eq!(l.next_expiry_in(up(&[("a", 1)]), 0), None);
}

#[test]
fn election_gives_every_agent_a_grace_period() {
    let l = elected();
    let agents = up(&[("a", 1), ("b", 2)]);
    // Never heard from: counts from the election, not from zero.
    assert!(l.expired(agents.clone(), T0).is_empty());
    assert!(l.expired(agents.clone(), T0 + TTL - 1).is_empty());
    assert_eq!(ids(l.expired(agents.clone(), T0 + TTL)), ["a@1", "b@2"]);
    assert_eq!(l.next_expiry_in(agents.clone(), T0 + 4_000), Some(TTL - 4_000));
    assert_eq!(l.next_expiry_in(agents, T0 + TTL + 5), Some(0));
}

#[test]
fn a_new_term_starts_every_clock_afresh() {
    let mut l = elected();
    l.heartbeat("a", 1, T0 + 1_000);
    assert_eq!(l.last_seen("a"), Some(T0 + 1_000));
    // Leadership lost and won again much later: heartbeats of the old term are gone, and the
    // agent gets a full ttl from the new election even though it was silent for long.
    let t1 = T0 + 100_000;
    l.on_elected(t1);
    assert_eq!(l.last_seen("a"), None);
    assert!(l.expired(up(&[("a", 1)]), t1 + TTL - 1).is_empty());
    assert_eq!(ids(l.expired(up(&[("a", 1)]), t1 + TTL)), ["a@1"]);
}

#[test]
fn silence_for_the_ttl_expires_and_heartbeats_reset_it() {
    let mut l = elected();
    let agents = up(&[("a", 1), ("b", 1)]);
    l.heartbeat("a", 1, T0 + 3_000);
    l.heartbeat("b", 1, T0 + 6_000);
    assert!(l.expired(agents.clone(), T0 + 3_000 + TTL - 1).is_empty());
    assert_eq!(ids(l.expired(agents.clone(), T0 + 3_000 + TTL)), ["a@1"]);
    assert_eq!(l.next_expiry_in(agents.clone(), T0 + 4_000), Some(TTL - 1_000));
    // A heartbeat from `a` resets its clock.
    l.heartbeat("a", 1, T0 + 12_000);
    assert!(l.expired(agents.clone(), T0 + 3_000 + TTL).is_empty());
    assert_eq!(ids(l.expired(agents.clone(), T0 + 6_000 + TTL)), ["b@1"]);
    assert_eq!(ids(l.expired(agents, T0 + 12_000 + TTL)), ["a@1", "b@1"]);
    // A late-delivered, earlier reading never moves the clock back.
    l.heartbeat("a", 1, T0 + 5_000);
    assert_eq!(l.last_seen("a"), Some(T0 + 12_000));
}

#[test]
fn agents_already_down_are_not_reported() {
    let l = elected();
    let rows = vec![("a", 1, true), ("b", 1, false)];
    assert_eq!(ids(l.expired(rows.clone(), T0 + TTL)), ["a@1"]);
    assert_eq!(l.next_expiry_in(vec![("b", 1, false)], T0), None);
}

#[test]
fn a_heartbeat_of_an_older_epoch_does_not_count() {
    let mut l = elected();
    // The old incarnation (epoch 1) keeps heartbeating; the replicated state knows epoch 5.
    l.heartbeat("a", 1, T0 + 8_000);
    assert_eq!(ids(l.expired(up(&[("a", 5)]), T0 + TTL)), ["a@5"]);
    // The new incarnation's heartbeat counts, and an old one after it is ignored.
    l.heartbeat("a", 5, T0 + 9_000);
    l.heartbeat("a", 1, T0 + 15_000);
    assert_eq!(l.last_seen("a"), Some(T0 + 9_000));
    assert!(l.expired(up(&[("a", 5)]), T0 + 9_000 + TTL - 1).is_empty());
    assert_eq!(ids(l.expired(up(&[("a", 5)]), T0 + 9_000 + TTL)), ["a@5"]);
}

#[test]
fn a_heartbeat_of_a_newer_epoch_counts() {
    // The agent re-registered (epoch 9) but this leader has not applied that yet: the
    // incarnation is alive, so its old epoch is not declared down on a silence it did not have.
    let mut l = elected();
    l.heartbeat("a", 9, T0 + 8_000);
    assert!(l.expired(up(&[("a", 5)]), T0 + TTL).is_empty());
    assert_eq!(ids(l.expired(up(&[("a", 9)]), T0 + 8_000 + TTL)), ["a@9"]);
}

#[test]
fn a_forgotten_agent_counts_from_the_election_or_its_next_heartbeat() {
    let mut l = elected();
    l.heartbeat("a", 1, T0 + 20_000);
    l.forget("a");
    assert_eq!(l.last_seen("a"), None);
    // Still in the replicated state as up (the down proposal is in flight): reported again.
    assert_eq!(ids(l.expired(up(&[("a", 1)]), T0 + TTL)), ["a@1"]);
    // It comes back under a new epoch.
    l.heartbeat("a", 2, T0 + 30_000);
    assert!(l.expired(up(&[("a", 2)]), T0 + 30_000 + TTL - 1).is_empty());
    // Forgetting an unknown agent is harmless.
    l.forget("nobody");
}

#[test]
fn next_expiry_is_the_earliest_deadline() {
    let mut l = elected();
    l.heartbeat("a", 1, T0 + 7_000);
    l.heartbeat("b", 1, T0 + 2_000);
    let agents = up(&[("a", 1), ("b", 1)]);
    assert_eq!(l.next_expiry_in(agents.clone(), T0 + 3_000), Some(TTL - 1_000));
    assert_eq!(l.next_expiry_in(Vec::new(), T0), None);
    // Sleeping that long and checking again finds `b`.
    let at = T0 + 3_000 + TTL - 1_000;
    assert_eq!(ids(l.expired(agents, at)), ["b@1"]);
}

#[test]
fn the_lease_margin_covers_drift_kill_time_and_slack() {
    // No drift, no kill time: only the slack.
    assert_eq!(min_agent_ttl_ms(5_000, 0, 0), Some(5_000 + MIN_LEASE_SLACK_MS));
    // Slack is 10% of a long lease.
    assert_eq!(min_agent_ttl_ms(60_000, 0, 0), Some(66_000));
    // Kill time adds one for one.
    assert_eq!(min_agent_ttl_ms(5_000, 0, 2_000), Some(8_000));
    // 100 ppm each way over a 10 s lease: (1 + ρ)(L / (1 − ρ) + K) = 10_002.0002.. → 10_003.
    assert_eq!(min_agent_ttl_ms(10_000, 100, 0), Some(10_003 + 1_000));
    // Absurd drift.
    assert_eq!(min_agent_ttl_ms(10_000, 1_000_000, 0), None);
    assert_eq!(min_agent_ttl_ms(10_000, 500_000, 0), Some(30_000 + 1_000));
}

#[test]
fn check_lease_margin_accepts_safe_and_refuses_unsafe_settings() {
    struct Case {
        lease: u64,
        ttl: u64,
        drift_ppm: u32,
        kill_ms: u64,
        ok: bool,
    }
    let cases = [
        // A typical setting: 10 s lease, 15 s ttl, 200 ppm, 2 s to kill.
        Case {
            lease: 10_000,
            ttl: 15_000,
            drift_ppm: 200,
            kill_ms: 2_000,
            ok: true,
        },
        // Exactly the minimum is enough: 1.0002 × (10_000 / 0.9998 + 2_000) = 12_004.4.. → 12_005,
        // plus 1 s of slack.
        Case {
            lease: 10_000,
            ttl: 13_005,
            drift_ppm: 200,
            kill_ms: 2_000,
            ok: true,
        },
        Case {
            lease: 10_000,
            ttl: 13_004,
            drift_ppm: 200,
            kill_ms: 2_000,
            ok: false,
        },
        // ttl equal to the lease, or below it.
        Case {
            lease: 10_000,
            ttl: 10_000,
            drift_ppm: 0,
            kill_ms: 0,
            ok: false,
        },
        Case {
            lease: 10_000,
            ttl: 5_000,
            drift_ppm: 0,
            kill_ms: 0,
            ok: false,
        },
        // Kill time eats the margin.
        Case {
            lease: 10_000,
            ttl: 12_000,
            drift_ppm: 0,
            kill_ms: 5_000,
            ok: false,
        },
        // Zero durations.
        Case {
            lease: 0,
            ttl: 5_000,
            drift_ppm: 0,
            kill_ms: 0,
            ok: false,
        },
        Case {
            lease: 5_000,
            ttl: 0,
            drift_ppm: 0,
            kill_ms: 0,
            ok: false,
        },
        // Drift of 100% or more.
        Case {
            lease: 1,
            ttl: u64::MAX,
            drift_ppm: 1_000_000,
            kill_ms: 0,
            ok: false,
        },
    ];
    for c in cases {
        let got = check_lease_margin(c.lease, c.ttl, c.drift_ppm, c.kill_ms);
        assert_eq!(
            got.is_ok(),
            c.ok,
            "lease {} ttl {} drift {} kill {}: {got:?}",
            c.lease,
            c.ttl,
            c.drift_ppm,
            c.kill_ms
        );
        if let Err(msg) = got {
            assert!(msg.contains("agent_ttl") || msg.contains("drift"), "{msg}");
        }
    }
    // The message names the value needed.
    let err = check_lease_margin(10_000, 10_000, 0, 0).unwrap_err();
    assert!(err.contains("11000 ms"), "{err}");
}
