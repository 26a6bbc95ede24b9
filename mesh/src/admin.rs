//! The exec probe both binaries offer (`gateway probe`, `sds-agent probe`): their admin
//! servers listen on loopback only, so kubelet's httpGet probes cannot reach them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// Why a probe got no status code.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("HTTP exchange with {0} failed: {1}")]
    Http(SocketAddr, String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
}

/// GETs `path` on `addr` (HTTP/1.1); returns the status code.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ProbeError::Connect(addr, e))?;
        let http = |e: &dyn std::fmt::Display| ProbeError::Http(addr, e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProbeError::Timeout(addr, timeout))?
}

/// Runs [`probe`] on a small runtime and turns it into a process exit code.
pub fn probe_exit_code(addr: SocketAddr, path: &str, timeout: Duration) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(probe(addr, path, timeout)) {
        Ok(200) => std::process::ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("probe: {path} answered {code}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
