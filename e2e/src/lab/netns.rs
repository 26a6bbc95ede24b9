//! The lab's network: one namespace per pod, their `eth0` veths joined by a bridge that
//! lives in a namespace of its own, so the host's namespace gets no interface, address,
//! route or rule. Everything is made with `ip` (iproute2) and removed by [`remove_all`].

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use anyhow::{Context, bail};

/// Every lab namespace's name starts with this.
pub const PREFIX: &str = "meshlab-";
/// The namespace holding the bridge (the "node network").
pub const NET_NS: &str = "meshlab-net";
/// The bridge joining the pods.
const BRIDGE: &str = "br0";
/// The pods' prefix length on the bridge.
const PREFIX_LEN: u8 = 24;

/// Runs `ip args...`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2): is it installed?")?;
    check(&out, &format!("ip {}", args.join(" ")))
}

/// The output of a finished command as text, or an error naming it and its stderr.
pub fn check(out: &Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the bridge namespace; call once before [`add_pod`].
pub fn create_network() -> anyhow::Result<()> {
    ip(&["netns", "add", NET_NS])?;
    ip(&["-n", NET_NS, "link", "set", "lo", "up"])?;
    ip(&["-n", NET_NS, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", NET_NS, "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Creates pod namespace `ns` with loopback up and `eth0` at `addr`/24 on the bridge.
/// `port` names the veth end on the bridge.
pub fn add_pod(ns: &str, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", NET_NS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["-n", NET_NS, "link", "set", port, "master", BRIDGE, "up"])?;
    let cidr = format!("{addr}/{PREFIX_LEN}");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// The lab namespaces that exist now (from `ip netns list`).
pub fn existing() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Process ids inside `ns`.
pub fn pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in every lab namespace and deletes the namespaces (their veths,
/// bridge, addresses and iptables rules go with them). Safe to run when nothing exists.
/// Returns the namespaces it removed.
pub fn remove_all() -> anyhow::Result<Vec<String>> {
    let namespaces = existing();
    for _ in 0..50 {
        let alive: Vec<i32> = namespaces.iter().flat_map(|ns| pids(ns)).collect();
        if alive.is_empty() {
            break;
        }
        for pid in alive {
            // SAFETY: kill(2) with SIGKILL on a pid listed in a lab namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for ns in &namespaces {
        ip(&["netns", "del", ns])?;
    }
    let left = existing();
    if !left.is_empty() {
        bail!(
            "namespaces still present after removal: {}",
            left.join(", ")
        );
    }
    Ok(namespaces)
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets `f` creates
/// belong to that namespace for their whole life, whichever thread later uses them.
pub fn in_netns<T, F>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) on this thread only, with a namespace fd we hold open.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
}

/// Names the process that owns the running lab, so a second lab refuses to start instead
/// of tearing down the first.
const OWNER_FILE: &str = "/run/meshlab.pid";

/// The pid of a running lab owner other than this process, if any.
pub fn live_owner() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(OWNER_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    (pid != std::process::id() as i32 && comm.trim() == "meshlab").then_some(pid)
}

/// Makes this process the lab's owner; fails if another live lab owns it.
pub fn claim() -> anyhow::Result<()> {
    if let Some(pid) = live_owner() {
        bail!("another lab is running (meshlab pid {pid}): stop it, or run `meshlab down`");
    }
    if let Some(dir) = std::path::Path::new(OWNER_FILE).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(OWNER_FILE, std::process::id().to_string())
        .with_context(|| format!("writing {OWNER_FILE}"))
}

/// Gives up ownership if this process holds it.
pub fn release() {
    let ours = std::fs::read_to_string(OWNER_FILE)
        .map(|s| s.trim() == std::process::id().to_string())
        .unwrap_or(false);
    if ours {
        let _ = std::fs::remove_file(OWNER_FILE);
    }
}

/// Asks a running lab's owner to tear down (SIGTERM) and waits up to `timeout` for it.
/// Returns the pid if there was one.
pub fn stop_owner(timeout: std::time::Duration) -> Option<i32> {
    let pid = live_owner()?;
    // SAFETY: kill(2) on the pid recorded as the lab owner (checked to be a meshlab).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + timeout;
    while live_owner().is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(pid)
}
