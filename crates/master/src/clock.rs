//! The master's wall clock, and a test aid that skews it.
//!
//! [`now_ms`] is the only wall clock of the master: every time a command carries (submit times,
//! retry back-off `not_before`, deadlines, `Tick`) comes from it, read by the proposing leader.
//! Nothing that must be monotonic uses it: the agents' liveness is judged on
//! [`crate::leader::mono_ms`], leadership waits on `Instant`, and openraft's elections and
//! leases use tokio's monotonic clock.
//!
//! **Test aid.** When [`CLOCK_OFFSET_FILE_ENV`] (`TAURUS_CLOCK_OFFSET_FILE`) names a file,
//! `now_ms()` returns the real time plus the signed offset in milliseconds written in that file
//! (a decimal integer such as `-1500`; surrounding whitespace is ignored). A missing or
//! unparsable file counts as offset 0, with a warning logged once per distinct problem. A
//! background thread re-reads the file every [`OFFSET_REFRESH`], so a failure-injection harness
//! can move the clock of a running master; `now_ms()` itself stays one clock read plus one
//! atomic load, with or without the variable.

use std::collections::HashSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

/// Names the file holding the clock offset (test aid; see the module docs).
pub const CLOCK_OFFSET_FILE_ENV: &str = "TAURUS_CLOCK_OFFSET_FILE";
/// How often the offset file is re-read.
pub const OFFSET_REFRESH: Duration = Duration::from_millis(100);
/// How long to wait before re-reading a file found empty (a harness rewriting it in place is
/// caught between truncating and writing).
const EMPTY_RETRY: Duration = Duration::from_millis(5);
/// Distinct problems remembered for "warn once" (beyond that, new ones are logged at debug).
const MAX_REMEMBERED_PROBLEMS: usize = 64;

/// The current offset in milliseconds; 0 unless the test aid is on.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (the leader's clock, carried inside commands), plus the
/// test offset if one is set.
pub fn now_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    apply_offset(real, OFFSET_MS.load(Ordering::Relaxed))
}

/// `real_ms` moved by `offset_ms`, saturating at 0 and `u64::MAX`.
pub fn apply_offset(real_ms: u64, offset_ms: i64) -> u64 {
    real_ms.saturating_add_signed(offset_ms)
}

/// Parses the offset file's contents: one decimal integer of milliseconds, optionally signed,
/// surrounded by any whitespace.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the file is empty".to_string());
    }
    t.parse::<i64>()
        .map_err(|e| format!("{t:?} is not a whole number of milliseconds ({e})"))
}

/// Starts the offset watcher once per process if [`CLOCK_OFFSET_FILE_ENV`] is set; the offset
/// is read once before this returns. Logs a warning whenever a master starts with the aid on.
pub fn init_from_env() {
    let Some(path) = std::env::var_os(CLOCK_OFFSET_FILE_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let path = PathBuf::from(path);
    tracing::warn!(
        file = %path.display(),
        "{CLOCK_OFFSET_FILE_ENV} is set: this master's wall clock is skewed by the offset in that \
         file (a test aid; never set it in production)"
    );
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let mut watcher = OffsetWatcher::new(path);
        OFFSET_MS.store(watcher.poll(), Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("taurus-clock-offset".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(OFFSET_REFRESH);
                    OFFSET_MS.store(watcher.poll(), Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the clock offset watcher; the offset stays as first read");
        }
    });
}

/// Reads the offset file and reports each distinct problem once.
pub struct OffsetWatcher {
    path: PathBuf,
    current: i64,
    warned: HashSet<String>,
}

impl OffsetWatcher {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            current: 0,
            warned: HashSet::new(),
        }
    }

    /// Reads the file now: the offset it holds, or 0 (with a warning, once per distinct
    /// problem) when it is missing or unparsable.
    pub fn poll(&mut self) -> i64 {
        let offset = match read_offset(&self.path) {
            Err(problem) if problem.is_empty() => {
                std::thread::sleep(EMPTY_RETRY);
                read_offset(&self.path)
            }
            other => other,
        };
        let offset = match offset {
            Ok(o) => o,
            Err(problem) => {
                let problem = if problem.is_empty() {
                    "the file is empty".to_string()
                } else {
                    problem
                };
                if self.warned.len() < MAX_REMEMBERED_PROBLEMS && self.warned.insert(problem.clone()) {
                    tracing::warn!(file = %self.path.display(), %problem, "clock offset unreadable; using 0");
                } else {
                    tracing::debug!(file = %self.path.display(), %problem, "clock offset unreadable; using 0");
                }
                0
            }
        };
        if offset != self.current {
            tracing::info!(file = %self.path.display(), from_ms = self.current, to_ms = offset, "clock offset changed");
            self.current = offset;
        }
        offset
    }
}

/// The offset in `path`; `Err("")` when the file is empty (worth one quick re-read), otherwise
/// a description of the problem.
fn read_offset(path: &Path) -> Result<i64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    if text.trim().is_empty() {
        return Err(String::new());
    }
    parse_offset(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_signed_and_trimmed() {
        assert_eq!(parse_offset("1500"), Ok(1500));
        assert_eq!(parse_offset("  -42\n"), Ok(-42));
        assert_eq!(parse_offset("+7\t"), Ok(7));
        assert_eq!(parse_offset("0\n"), Ok(0));
        assert_eq!(parse_offset("-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            "",
            " \n",
            "1.5",
            "12ms",
            "0x10",
            "- 3",
            "99999999999999999999",
            "1 2",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn offsets_apply_in_both_directions_and_saturate() {
        assert_eq!(apply_offset(1_000_000, 0), 1_000_000);
        assert_eq!(apply_offset(1_000_000, 2_500), 1_002_500);
        assert_eq!(apply_offset(1_000_000, -2_500), 997_500);
        assert_eq!(apply_offset(1_000, -5_000), 0);
        assert_eq!(apply_offset(u64::MAX - 1, 10), u64::MAX);
        assert_eq!(apply_offset(5, i64::MIN), 0);
    }

    #[test]
    fn the_watcher_follows_rewrites_and_falls_back_to_zero() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("offset");
        let mut w = OffsetWatcher::new(path.clone());
        assert_eq!(w.poll(), 0, "missing file");
        std::fs::write(&path, "250\n").unwrap();
        assert_eq!(w.poll(), 250);
        std::fs::write(&path, "-120000").unwrap();
        assert_eq!(w.poll(), -120_000);
        std::fs::write(&path, "soon").unwrap();
        assert_eq!(w.poll(), 0, "unparsable");
        assert_eq!(w.poll(), 0);
        assert_eq!(
            w.warned.len(),
            2,
            "one warning per distinct problem: {:?}",
            w.warned
        );
        std::fs::write(&path, "").unwrap();
        assert_eq!(w.poll(), 0, "empty");
        std::fs::write(&path, " 3 ").unwrap();
        assert_eq!(w.poll(), 3);
    }

    #[test]
    fn now_ms_is_the_real_clock_without_an_offset() {
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = now_ms();
        assert!(now >= before && now < before + 5_000, "{before} {now}");
    }
}
