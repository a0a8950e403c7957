//! What Linux's `/proc` says about processes, for the `/metrics` of masters and agents.
//!
//! - [`ProcessCollector`]: the standard `process_*` metrics of this process (CPU seconds,
//!   resident and virtual memory, threads, start time, open and maximum descriptors), read at
//!   scrape time. prometheus-client has no process collector of its own.
//! - [`ProcStat`]: the fields of `/proc/PID/stat` that those metrics and the agent's
//!   per-task resource use need.
//!
//! Every reading is best effort: a file that cannot be read or parsed leaves its metric out of
//! the scrape (never an error, never a panic). Reads files: call from a blocking thread.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The fields of `/proc/PID/stat` used here (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    /// Process group id.
    pub pgrp: i32,
    /// User CPU time, in clock ticks ([`clock_ticks`]).
    pub utime: u64,
    /// System CPU time, in clock ticks.
    pub stime: u64,
    /// OS threads.
    pub threads: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size, bytes.
    pub vsize_bytes: u64,
    /// Resident set size, pages ([`page_size`]).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Parses `PID (COMM) STATE PPID PGRP ...`; COMM may hold spaces and parentheses, so the
    /// fields are counted after the last `)`. `None` for a truncated or malformed line.
    pub fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(Self {
            state: f.first()?.chars().next()?,
            pgrp: f.get(2)?.parse().ok()?,
            utime: num(11)?,
            stime: num(12)?,
            threads: num(17)?,
            start_ticks: num(19)?,
            vsize_bytes: num(20)?,
            rss_pages: num(21)?,
        })
    }

    /// `/proc/self/stat` of this process, parsed.
    pub fn of_self() -> Option<Self> {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| Self::parse(&t))
    }

    /// User plus system CPU time, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`, 100 on Linux).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Bytes per memory page.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files (`RLIMIT_NOFILE`); `None` when unlimited or unknown.
fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// One gauge or counter at scrape time.
pub fn put<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> fmt::Result {
    let e = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(e)
}

/// The standard `process_*` metrics of this process, read from `/proc/self` at scrape time
/// (register it with `Registry::register_collector`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(stat) = ProcStat::of_self() else {
            return Ok(());
        };
        let ticks = clock_ticks();
        put(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(stat.cpu_ticks() as f64 / ticks),
        )?;
        put(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ConstGauge::new(stat.rss_pages.saturating_mul(page_size()) as f64),
        )?;
        put(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            ConstGauge::new(stat.vsize_bytes as f64),
        )?;
        put(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process",
            ConstGauge::new(stat.threads as f64),
        )?;
        if let Some(boot) = boot_time() {
            put(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(boot as f64 + stat.start_ticks as f64 / ticks),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            put(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                ConstGauge::new(fds.count() as f64),
            )?;
        }
        if let Some(max) = max_fds() {
            put(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(max as f64),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn proc_stat_parses_commands_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 \
                    123456 10485760 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = ProcStat::parse(line).expect("parses");
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                pgrp: 4240,
                utime: 7,
                stime: 3,
                threads: 5,
                start_ticks: 123456,
                vsize_bytes: 10485760,
                rss_pages: 250,
            }
        );
        assert_eq!(s.cpu_ticks(), 10);
        assert_eq!(ProcStat::parse("12 (x) S 1"), None, "truncated");
        assert_eq!(ProcStat::parse("no parenthesis"), None);
    }

    /// The value of the one series `name` in `text`.
    fn value(text: &str, name: &str) -> f64 {
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }

    #[test]
    fn the_process_collector_reports_this_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encodes");
        assert!(value(&text, "process_resident_memory_bytes") > 0.0, "{text}");
        assert!(value(&text, "process_virtual_memory_bytes") > 0.0, "{text}");
        // The test harness runs this test on a thread of its own, besides the main thread.
        assert!(value(&text, "process_threads") >= 2.0, "{text}");
        assert!(value(&text, "process_open_fds") >= 3.0, "{text}");
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0, "{text}");
        let started = value(&text, "process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "start {started} vs now {now}"
        );
    }
}
