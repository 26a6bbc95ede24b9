//! The SDS unix socket: owner-only from the moment it exists.
//!
//! The socket hands out the workload's private key to whoever can connect, so it must
//! never be reachable by another user, not even between `bind` and a later `chmod`. The
//! file is created under a umask that leaves only the owner's read/write bits, and its
//! directory, when the agent creates it, is 0700.
//!
//! The umask is process-wide: a file another thread creates during the bind gets the
//! narrower mask too (the safe direction). The agent binds before it starts anything
//! that writes files.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Mode of the socket file: owner read/write.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode of a socket directory the agent creates: owner only.
pub const DIR_MODE: u32 = 0o700;
/// The umask in force while binding: clears every bit but the owner's read/write.
const BIND_UMASK: libc::mode_t = 0o177;

/// The umask is process-wide; binds in this process take turns changing it.
static UMASK: Mutex<()> = Mutex::new(());

/// Why the SDS socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create SDS socket directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("cannot remove stale SDS socket {path}: {source}")]
    Stale { path: PathBuf, source: io::Error },
    #[error("cannot bind SDS socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("SDS socket {path} was created with mode {mode:o}, not owner-only {SOCKET_MODE:o}")]
    NotOwnerOnly { path: PathBuf, mode: u32 },
}

/// Binds the SDS unix socket owner-only, replacing a stale socket file; creates a
/// missing directory (and parents) 0700. An existing directory is left as it is: in a
/// pod it is a volume shared with the gateway container.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, SocketError> {
    // Held throughout: our own umask swap must not narrow the directory we create.
    let _turn = UMASK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| SocketError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed stale SDS socket"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketError::Stale {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let listener = bind_with_umask(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    // Checked before anyone is served: a socket that came out wider is refused.
    let mode = mode_of(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    if mode != SOCKET_MODE {
        return Err(SocketError::NotOwnerOnly {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(listener)
}

/// `bind(2)` under [`BIND_UMASK`], restoring the previous umask afterwards. The caller
/// holds [`UMASK`].
fn bind_with_umask(path: &Path) -> io::Result<tokio::net::UnixListener> {
    // SAFETY: umask(2) only swaps the process's mask and cannot fail.
    let previous = unsafe { libc::umask(BIND_UMASK) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above; puts back what was there.
    unsafe { libc::umask(previous) };
    bound
}

/// Permission bits of `path` itself (not a symlink's target).
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o777)
}

/// Removes the socket file on drop so a restarted agent finds a clean slate.
#[derive(Debug)]
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even under a umask of 0 (everything allowed), the socket and the directory the
    /// agent creates come out owner-only, and the process umask is put back.
    #[tokio::test]
    async fn socket_and_new_directory_are_owner_only_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run/secrets/workload-spiffe-uds/socket");
        // The umask is only ever changed under the lock, so parallel tests cannot interleave.
        let swap_umask = |mask| {
            let _turn = UMASK.lock().unwrap();
            // SAFETY: swaps the process umask; every swap here is undone below.
            unsafe { libc::umask(mask) }
        };
        let outer = swap_umask(0);
        let listener = bind_unix(&path);
        let umask_after = swap_umask(outer);
        let listener = listener.unwrap();
        assert_eq!(mode_of(&path).unwrap(), SOCKET_MODE);
        for dir in ["run", "run/secrets", "run/secrets/workload-spiffe-uds"] {
            assert_eq!(mode_of(&tmp.path().join(dir)).unwrap(), DIR_MODE, "{dir}");
        }
        assert_eq!(
            umask_after, 0,
            "the umask in force before the bind is restored"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_and_an_existing_directory_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let path = tmp.path().join("sds.sock");
        let first = bind_unix(&path).unwrap();
        drop(first);
        assert!(path.exists(), "a dropped listener leaves its file behind");
        let _second = bind_unix(&path).unwrap();
        assert_eq!(mode_of(&path).unwrap(), SOCKET_MODE);
        assert_eq!(mode_of(tmp.path()).unwrap(), 0o750);
    }
}
