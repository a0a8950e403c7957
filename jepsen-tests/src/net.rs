//! Real test hosts: one Linux network namespace per node, each with its own address on a
//! bridge, and partitions made of `iptables` rules inside the namespaces (needs root).
//!
//! ```text
//!   root namespace (the harness and its clients): 10.213.S.1 on bridge tjS-br
//!        │
//!        ├── veth ── netns tjS-m1  10.213.S.2   (eth0)
//!        ├── veth ── netns tjS-m2  10.213.S.3
//!        └── ...
//! ```
//!
//! `S` is a slot (0..=255) claimed with an exclusive lock file in [`LOCK_DIR`], so concurrent
//! runs never share a subnet or a name. Every name this module creates starts with `tjS-`.
//!
//! **Clean-up is unconditional.** [`Net`]'s `Drop` kills every process still inside its
//! namespaces, deletes the namespaces, the bridge and the one root `FORWARD` rule it added, and
//! releases the slot; [`Net::create`] first removes whatever an earlier run that died without
//! cleaning up (SIGKILL) left behind, recognised by a lock file whose process is gone.
//!
//! **Partitions** are grudges: `grudge[i]` is the set of hosts whose packets host `i` drops
//! (`iptables -A INPUT -s <ip> -j DROP` inside host `i`'s namespace). A symmetric partition puts
//! each side in the other's grudge; a one-way partition only one of them. The harness's own
//! address (the bridge) is never in a grudge, so clients reach every node throughout.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;

use crate::error::Error;

/// Where slots are claimed (one file per slot, holding the owner's pid).
pub const LOCK_DIR: &str = "/run/taurus-jepsen";

/// First two octets of every test subnet.
const NET_PREFIX: [u8; 2] = [10, 213];

/// One node's namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    /// Node name in reports (`m1`, `a2`, ...).
    pub name: String,
    /// Network namespace (`tjS-m1`).
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// Which hosts drop packets from which: `grudge[i]` = hosts whose packets host `i` drops.
pub type Grudge = BTreeMap<usize, BTreeSet<usize>>;

/// The namespaces, the bridge and the slot of one run; removed on drop.
#[derive(Debug)]
pub struct Net {
    slot: u8,
    bridge: String,
    /// The harness's address on the bridge.
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
}

fn run_cmd(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Net(format!("{program} {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Net(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, Error> {
    run_cmd("ip", args)
}

/// Runs `iptables` inside namespace `ns` (`-w`: wait for the xtables lock).
fn ns_iptables(ns: &str, args: &[&str]) -> Result<String, Error> {
    let mut full = vec!["netns", "exec", ns, "iptables", "-w"];
    full.extend_from_slice(args);
    ip(&full)
}

fn prefix(slot: u8) -> String {
    format!("tj{slot}-")
}

fn pid_alive(pid: i32) -> bool {
    // A zombie (killed, not reaped yet: this sandbox's init may be slow to reap) is dead.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(state) = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
        && state == "Z"
    {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Whether this process may create namespaces (it runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Net {
    /// Creates one namespace per name, all on a fresh bridge, after removing what dead runs
    /// left behind. Fails (having removed whatever it made) when anything cannot be created.
    pub fn create(names: &[String]) -> Result<Net, Error> {
        if !is_root() {
            return Err(Error::Net(
                "network namespaces need root: run the suite as root (CI does)".into(),
            ));
        }
        if names.len() > 250 {
            return Err(Error::Net(format!("{} hosts: at most 250", names.len())));
        }
        std::fs::create_dir_all(LOCK_DIR).map_err(|e| Error::Net(format!("creating {LOCK_DIR}: {e}")))?;
        cleanup_stale();
        let slot = claim_slot()?;
        let gateway = Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], slot, 1);
        let mut net = Net {
            slot,
            bridge: format!("{}br", prefix(slot)),
            gateway,
            hosts: Vec::new(),
        };
        net.build(names)?;
        Ok(net)
    }

    fn build(&mut self, names: &[String]) -> Result<(), Error> {
        let br = self.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", self.gateway), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        // Docker sets the root FORWARD policy to DROP, which also drops bridged traffic when
        // br_netfilter is loaded: accept everything that stays on this bridge.
        run_cmd(
            "iptables",
            &["-w", "-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
        )?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{}{name}", prefix(self.slot));
            let host_ip = Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], self.slot, (i + 2) as u8);
            ip(&["netns", "add", &ns])?;
            self.hosts.push(Host {
                name: name.clone(),
                ns: ns.clone(),
                ip: host_ip,
            });
            let outside = format!("{}{i}", prefix(self.slot));
            let inside = format!("{}{i}p", prefix(self.slot));
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            ip(&["link", "set", &outside, "master", &br])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &inside, "name", "eth0"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{host_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Prepares `cmd` to run inside host `i`'s namespace; the child also gets SIGKILL when the
    /// thread that spawned it dies (so a killed harness leaves no node running).
    pub fn enter(&self, i: usize, cmd: &mut Command) -> Result<(), Error> {
        let host = self
            .hosts
            .get(i)
            .ok_or_else(|| Error::Net(format!("no host {i}")))?;
        let path = PathBuf::from("/run/netns").join(&host.ns);
        let file = File::open(&path).map_err(|e| Error::Net(format!("{}: {e}", path.display())))?;
        // SAFETY: only async-signal-safe calls (setns, prctl) between fork and exec; the file
        // is moved into the closure, so its descriptor stays open until the command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Replaces every partition with `grudge` (an empty one heals everything).
    pub fn set_grudge(&self, grudge: &Grudge) -> Result<(), Error> {
        for (i, h) in self.hosts.iter().enumerate() {
            ns_iptables(&h.ns, &["-F", "INPUT"])?;
            for &j in grudge.get(&i).into_iter().flatten() {
                let Some(from) = self.hosts.get(j) else {
                    continue;
                };
                ns_iptables(&h.ns, &["-A", "INPUT", "-s", &from.ip.to_string(), "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// The slot: every name of this run starts with `tj<slot>-`, its subnet is 10.213.<slot>.0/24.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Names of this run's namespaces (for tests and reports).
    pub fn namespaces(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.ns.clone()).collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_slot(self.slot);
    }
}

/// Removes everything of `slot` (see [`remove_slot_network`]) and its lock.
fn remove_slot(slot: u8) {
    remove_slot_network(slot);
    let _ = std::fs::remove_file(PathBuf::from(LOCK_DIR).join(format!("slot-{slot}")));
}

/// Removes every namespace of `slot` (killing the processes inside), its bridge, its FORWARD
/// rule and any leftover veth. Best effort: each step runs even if an earlier one failed.
fn remove_slot_network(slot: u8) {
    let p = prefix(slot);
    let namespaces: Vec<String> = ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&p))
        .map(str::to_string)
        .collect();
    for ns in &namespaces {
        kill_namespace_processes(ns);
        let _ = ip(&["netns", "delete", ns]);
    }
    let bridge = format!("{p}br");
    // Delete every copy (a crashed run may have added one and a retry another).
    while run_cmd(
        "iptables",
        &[
            "-w", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ],
    )
    .is_ok()
    {}
    // Deleting the bridge also deletes the host ends of the veths (the namespace ends went
    // with the namespaces).
    let _ = ip(&["link", "delete", &bridge]);
    for i in 0..=250u32 {
        let veth = format!("{p}{i}");
        if std::path::Path::new("/sys/class/net").join(&veth).exists() {
            let _ = ip(&["link", "delete", &veth]);
        }
    }
}

/// SIGKILLs every process in namespace `ns` and waits (bounded) until none is left.
fn kill_namespace_processes(ns: &str) {
    for _ in 0..50 {
        let pids: Vec<i32> = ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2); the pid was just listed inside a namespace this run owns.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Claims the lowest free slot by creating its lock file exclusively.
fn claim_slot() -> Result<u8, Error> {
    for slot in 0..=255u8 {
        let path = PathBuf::from(LOCK_DIR).join(format!("slot-{slot}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                // Leftovers of this slot without a lock (removed by hand?) would collide.
                remove_slot_network(slot);
                return Ok(slot);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::Net(format!("{}: {e}", path.display()))),
        }
    }
    Err(Error::Net(format!(
        "no free slot in {LOCK_DIR} (256 runs at once?)"
    )))
}

/// Removes every slot whose owner process is gone: what a SIGKILLed run left behind.
pub fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir(LOCK_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(slot) = name.strip_prefix("slot-").and_then(|s| s.parse::<u8>().ok()) else {
            continue;
        };
        let owner: i32 = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if !pid_alive(owner) {
            remove_slot(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_interface_limits() {
        // IFNAMSIZ is 16 including the NUL: the longest names must have at most 15 bytes.
        assert!(format!("{}br", prefix(255)).len() <= 15);
        assert!(format!("{}{}p", prefix(255), 249).len() <= 15);
    }
}
