//! Retry back-off: how long a task waits before its next attempt.
//!
//! The delay doubles with every attempt used, from the spec's `backoff_ms`, up to
//! [`MAX_BACKOFF_MS`]. To keep tasks that failed together (an agent died, a dependency
//! service was down) from all coming back at the same instant, each delay is spread with
//! "equal jitter": it lies somewhere in the upper half of the doubled value, `[full / 2, full]`.
//!
//! The state machine must be deterministic, so the jitter is not random: it is a hash of the
//! task id and the attempt number. The hash is a hand-written FNV-1a, because std's
//! `DefaultHasher` / `RandomState` are seeded per process and their algorithm may change between
//! Rust releases; two replicas (or one replica before and after an upgrade) must compute the
//! same delay for the same log entry.

use crate::validate::MAX_BACKOFF_MS;

/// The delay before the next attempt, in milliseconds.
///
/// `attempt` is the number of attempts used so far (at least 1; 0 is treated as 1) and
/// `backoff_ms` the spec's first delay. The undithered delay is
/// `backoff_ms * 2^(attempt - 1)`, capped at [`MAX_BACKOFF_MS`]; the result is a value in
/// `[full / 2, full]` picked by a stable hash of `(task_id, attempt)`. A `backoff_ms` of 0 always
/// gives 0 (retry at once).
///
/// ```
/// use taurus_core::retry::retry_delay_ms;
/// let d = retry_delay_ms("job-1", 3, 1000); // full delay 4000 ms
/// assert!((2000..=4000).contains(&d));
/// assert_eq!(d, retry_delay_ms("job-1", 3, 1000));
/// ```
pub fn retry_delay_ms(task_id: &str, attempt: u32, backoff_ms: u64) -> u64 {
    let full = full_delay_ms(attempt, backoff_ms);
    let half = full / 2;
    // `full <= MAX_BACKOFF_MS`, so `span + 1` cannot overflow.
    let span = full - half;
    half + pick(jitter_hash(task_id, attempt), span + 1)
}

/// `backoff_ms * 2^(attempt - 1)`, capped at [`MAX_BACKOFF_MS`] (saturating, never overflowing).
fn full_delay_ms(attempt: u32, backoff_ms: u64) -> u64 {
    let doublings = attempt.max(1) - 1;
    let factor = 1u64
        .checked_shl(doublings)
        .filter(|f| *f != 0)
        .unwrap_or(u64::MAX);
    backoff_ms.saturating_mul(factor).min(MAX_BACKOFF_MS)
}

/// A value in `0..n` (n > 0) from a 64-bit hash, using its high bits (multiply-shift), which
/// FNV-1a mixes better than its low ones.
fn pick(hash: u64, n: u64) -> u64 {
    ((u128::from(hash) * u128::from(n)) >> 64) as u64
}

/// FNV-1a over the task id, a separator byte that never occurs in UTF-8 (so `("a1", 2)` and
/// `("a", 12)` differ), and the attempt number in little-endian.
fn jitter_hash(task_id: &str, attempt: u32) -> u64 {
    let mut h = Fnv1a::new();
    h.write(task_id.as_bytes());
    h.write(&[0xff]);
    h.write(&attempt.to_le_bytes());
    h.finish()
}

/// 64-bit FNV-1a (<http://www.isthe.com/chongo/tech/comp/fnv/>). Stable by definition.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::new();
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn zero_backoff_retries_at_once() {
        for attempt in [0, 1, 2, 30, u32::MAX] {
            assert_eq!(retry_delay_ms("t", attempt, 0), 0, "attempt {attempt}");
        }
    }

    #[test]
    fn full_delay_doubles_per_attempt_and_is_capped() {
        assert_eq!(full_delay_ms(1, 1000), 1000);
        assert_eq!(full_delay_ms(2, 1000), 2000);
        assert_eq!(full_delay_ms(3, 1000), 4000);
        assert_eq!(full_delay_ms(10, 1000), 512_000);
        assert_eq!(
            full_delay_ms(13, 1000),
            MAX_BACKOFF_MS,
            "4_096_000 is over the cap"
        );
        // Attempt 0 is read as 1; huge attempts and back-offs saturate at the cap.
        assert_eq!(full_delay_ms(0, 1000), 1000);
        assert_eq!(full_delay_ms(64, 1), MAX_BACKOFF_MS);
        assert_eq!(full_delay_ms(u32::MAX, 1), MAX_BACKOFF_MS);
        assert_eq!(full_delay_ms(2, u64::MAX), MAX_BACKOFF_MS);
        assert_eq!(full_delay_ms(1, MAX_BACKOFF_MS + 1), MAX_BACKOFF_MS);
    }

    #[test]
    fn delay_stays_within_equal_jitter_bounds() {
        for attempt in 1..=20u32 {
            for n in 0..200 {
                let id = format!("task-{n}");
                let full = full_delay_ms(attempt, 750);
                let d = retry_delay_ms(&id, attempt, 750);
                assert!(
                    (full / 2..=full).contains(&d),
                    "{id} attempt {attempt}: {d} outside [{}, {full}]",
                    full / 2
                );
            }
        }
        // The smallest back-offs: 1 ms may give 0 or 1.
        assert!(retry_delay_ms("x", 1, 1) <= 1);
    }

    #[test]
    fn delay_is_deterministic_and_actually_jittered() {
        let a: Vec<u64> = (0..100)
            .map(|n| retry_delay_ms(&format!("t{n}"), 2, 1000))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|n| retry_delay_ms(&format!("t{n}"), 2, 1000))
            .collect();
        assert_eq!(a, b);
        let distinct: std::collections::BTreeSet<u64> = a.iter().copied().collect();
        assert!(distinct.len() > 80, "only {} distinct delays", distinct.len());
        // Both halves of the range [1000, 2000] are used.
        assert!(a.iter().any(|d| *d < 1500) && a.iter().any(|d| *d > 1500));
        // The attempt number changes the jitter too.
        let other: Vec<u64> = (0..100)
            .map(|n| retry_delay_ms(&format!("t{n}"), 3, 500))
            .collect();
        assert_ne!(a, other, "same full delay (2000 ms), different attempt");
    }

    #[test]
    fn delay_values_are_pinned() {
        // Computed independently (Python FNV-1a and the same formula). A change here changes
        // what every replica computes for entries already in existing logs: do not.
        let got: Vec<[u64; 3]> = ["a", "b", "job-42"]
            .iter()
            .map(|id| {
                [
                    retry_delay_ms(id, 1, 1000),
                    retry_delay_ms(id, 2, 1000),
                    retry_delay_ms(id, 5, 250),
                ]
            })
            .collect();
        assert_eq!(got, vec![[846, 1566, 2382], [524, 1174, 3099], [557, 1240, 3230]]);
    }
}
