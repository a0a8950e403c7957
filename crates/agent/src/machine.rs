//! What the machine has: host name, cores, memory, free disk. Used for configuration defaults.

use std::path::Path;

/// The host name (`gethostname(2)`), or `None` when it cannot be read or is not UTF-8.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Cores available to this process (affinity and cgroup quotas included) in thousandths.
pub fn cpu_millis() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores).unwrap_or(u32::MAX).saturating_mul(1000)
}

/// Total memory in MiB from `/proc/meminfo` (`MemTotal`), or `None` when it cannot be read.
pub fn memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total_kib(&text).map(|kib| kib / 1024)
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Space available to unprivileged users on the file system holding `path` (or, when `path`
/// does not exist yet, its nearest existing ancestor) in MiB (`statvfs(3)`: `f_bavail *
/// f_frsize`).
pub fn disk_free_mb(path: &Path) -> Option<u64> {
    let absolute = std::path::absolute(path).ok()?;
    let existing = absolute.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; an all-zero value is valid and is overwritten below.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a valid out-pointer, both live.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let bytes = u128::from(st.f_bavail) * u128::from(st.f_frsize);
    u64::try_from(bytes / (1024 * 1024)).ok()
}

/// What the machine measures right now: the 1-minute load average (`/proc/loadavg`, runnable
/// and uninterruptible threads) and memory in use in MiB (`MemTotal - MemAvailable`). `None`
/// for what cannot be read.
pub fn measured_use() -> (Option<f64>, Option<u64>) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg_1m(&t));
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_mem_used_kib(&t))
        .map(|kib| kib / 1024);
    (load, mem)
}

fn parse_loadavg_1m(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

fn parse_mem_used_kib(meminfo: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_and_memory_in_use_parse() {
        assert_eq!(parse_loadavg_1m("2.50 1.00 0.50 3/400 1234\n"), Some(2.5));
        assert_eq!(parse_loadavg_1m("garbage"), None);
        assert_eq!(parse_loadavg_1m(""), None);
        let meminfo = "MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(parse_mem_used_kib(meminfo), Some(12_000_000));
        assert_eq!(parse_mem_used_kib("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn the_machine_reports_something_plausible() {
        assert!(hostname().is_some_and(|h| !h.is_empty()));
        assert!(cpu_millis() >= 1000);
        assert!(memory_mb().is_some_and(|m| m > 0));
        let dir = std::env::temp_dir();
        assert!(disk_free_mb(&dir).is_some());
        assert!(
            disk_free_mb(&dir.join("does/not/exist/yet")).is_some(),
            "falls back to the nearest existing ancestor"
        );
    }

    #[test]
    fn mem_total_is_parsed_in_kib() {
        let text = "MemTotal:       16314512 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total_kib(text), Some(16_314_512));
        assert_eq!(parse_mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total_kib("MemTotal: x kB\n"), None);
    }
}
