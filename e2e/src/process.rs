//! Child processes that die with the test, and port helpers.
//!
//! Start a program with [`ChildGuard::spawn`]: its stdout and stderr go to a log file,
//! it is killed when the guard drops (the log is printed if the test is panicking), and
//! [`ChildGuard::stop_with`] asks it to stop first with a signal (gunicorn: SIGINT stops
//! its workers too).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) when dropped, with its output in a log file.
pub struct ChildGuard {
    child: Option<Child>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    name: String,
    /// Signal sent on drop before SIGKILL, and how long to wait for it to work.
    stop: Option<(i32, Duration)>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> ChildGuard {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child: Some(child),
            log,
            name: name.to_string(),
            stop: None,
        }
    }

    /// On drop, sends `signal` (e.g. [`SIGINT`], [`SIGTERM`]) and waits up to `grace`
    /// before killing.
    pub fn stop_with(mut self, signal: i32, grace: Duration) -> ChildGuard {
        self.stop = Some((signal, grace));
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout`; returns the exit status if it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_and_wait(SIGTERM, timeout)
    }

    /// Sends `signal` and waits up to `timeout`; returns the exit status if it exited.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc_kill(child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the process now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Some((signal, grace)) = self.stop
            && self.is_running()
        {
            self.signal_and_wait(signal, grace);
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}

/// SIGINT, for [`ChildGuard::stop_with`].
pub const SIGINT: i32 = 2;
/// SIGTERM, for [`ChildGuard::stop_with`].
pub const SIGTERM: i32 = 15;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    // Nothing holds the port once it is returned, so the kernel may hand the same one out
    // again (it did: a gateway's admin port and its listener collided); never return a
    // port twice in one process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
