//! Network namespaces for tests: a "pod" joined to a "client" by a veth pair, TCP
//! listeners that say which port took a connection (and where it was headed before a
//! REDIRECT), and clients that connect from either side, as any uid.
//!
//! Every namespace has a unique name (process id + counter) so tests run in parallel, and
//! is deleted when its guard drops, also when a test panics.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The pod's addresses on the veth link.
pub const POD_V4: &str = "10.77.0.2";
pub const POD_V6: &str = "fd77::2";
/// The client's addresses on the veth link.
pub const CLIENT_V4: &str = "10.77.0.1";
pub const CLIENT_V6: &str = "fd77::1";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Panics with a clear message unless this process may create namespaces: these tests
/// are `#[ignore]`d and run only where asked (`scripts/test` as root).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "needs root: creates network namespaces and iptables rules (run as root, or leave it ignored)"
    );
}

/// Runs a command, panicking with its output if it fails.
pub fn must(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `ip` binary, looked up in this process's `$PATH`.
fn ip_program() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .expect("`ip` (iproute2) not found in PATH")
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// The name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name ending in `role`, loopback up.
    pub fn new(role: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "mgi-{}-{}-{role}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        must(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        must(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// A command that runs `program` inside this namespace. `ip` is found through this
    /// process's `$PATH`, so the command's own `PATH` may be changed freely.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(ip_program());
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace; returns its result. Sockets
    /// made there stay in this namespace whichever thread uses them later.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on a namespace fd affects only this thread, which ends with f.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }

    /// `iptables-save` (or the ip6tables / backend-specific variant) in this namespace.
    pub fn save(&self, program: &str) -> String {
        String::from_utf8(must(&mut self.command(program)).stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A "pod" namespace and a "client" namespace joined by a veth pair (`eth0` in both),
/// with IPv4 and IPv6 addresses.
pub struct PodAndClient {
    pub pod: Netns,
    pub client: Netns,
}

impl PodAndClient {
    pub fn new() -> Self {
        let pod = Netns::new("pod");
        let client = Netns::new("cli");
        must(Command::new("ip").args([
            "-n",
            &pod.name,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ]));
        for (ns, v4, v6) in [(&pod, POD_V4, POD_V6), (&client, CLIENT_V4, CLIENT_V6)] {
            let n = ns.name.as_str();
            must(Command::new("ip").args([
                "-n",
                n,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                "eth0",
            ]));
            must(Command::new("ip").args([
                "-n",
                n,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]));
            must(Command::new("ip").args(["-n", n, "link", "set", "eth0", "up"]));
        }
        PodAndClient { pod, client }
    }
}

/// A TCP listener standing in for a program of the pod (or an upstream): it answers each
/// connection with `"<name> port=<local port> orig=<original destination or ->"` and
/// closes it.
pub struct Listener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Netns, name: &'static str, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("listener address");
        let listener = ns.enter(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            l.set_nonblocking(true).unwrap();
            l
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let local = conn.local_addr().map(|a| a.port()).unwrap_or(0);
                        let orig = original_destination(&conn)
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "-".into());
                        let _ = writeln!(conn, "{name} port={local} orig={orig}");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Listener {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where a REDIRECTed connection was headed (SO_ORIGINAL_DST), if it was redirected.
fn original_destination(conn: &TcpStream) -> Option<SocketAddr> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    let fd = conn.as_raw_fd();
    let local = conn.local_addr().ok()?;
    // A dual-stack listener sees IPv4 connections as IPv4-mapped IPv6 ones; their
    // conntrack entry is IPv4.
    let local = match local.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), local.port()),
            None => local,
        },
        IpAddr::V4(_) => local,
    };
    // SAFETY: getsockopt writes at most `len` bytes into a zeroed sockaddr of that size.
    unsafe {
        if local.is_ipv4() {
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            (rc == 0).then(|| {
                SocketAddr::new(
                    IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()),
                    u16::from_be(sa.sin_port),
                )
            })
        } else {
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            );
            (rc == 0).then(|| {
                SocketAddr::new(
                    IpAddr::from(sa.sin6_addr.s6_addr),
                    u16::from_be(sa.sin6_port),
                )
            })
        }
    }
    .filter(|orig| *orig != local)
}

/// Connects from inside `ns` (as root) and returns the listener's answer, or the error
/// (a reset shows as `ConnectionRefused`).
pub fn connect(ns: &Netns, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("connect address");
    ns.enter(move || {
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.trim().to_owned())
    })
}

/// Connects from inside `ns` as `uid`/`gid` (through `setpriv` and bash's `/dev/tcp`) and
/// returns the answer, or what went wrong.
pub fn connect_as(ns: &Netns, uid: u32, gid: u32, host: &str, port: u16) -> Result<String, String> {
    let script = format!("exec 3<>/dev/tcp/{host}/{port} || exit 7; cat <&3");
    let out = ns
        .command("timeout")
        .args(["5", "setpriv"])
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--clear-groups", "bash", "-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
