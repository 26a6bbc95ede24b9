//! The PROXY protocol (v1 text or v2 binary, parsed by the `ppp` crate) read at accept on
//! the ports a ClientTrafficPolicy asks it for: the header's source address becomes the
//! client's (X-Forwarded-For, access log, AuthorizationPolicy), and the bytes after it
//! are replayed to TLS or HTTP. A required header that is missing or malformed closes
//! the connection; with `optional`, a connection that does not start like a header is
//! served as it is.

use std::net::SocketAddr;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest header read (a v2 header with TLVs; v1 is at most 107 bytes).
const MAX_HEADER_BYTES: usize = 4096;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What was read.
#[derive(Debug)]
pub struct Accepted {
    /// Bytes after the header (the start of TLS or HTTP).
    pub leftover: Vec<u8>,
    /// The client the header names; `None`: no header (optional), `UNKNOWN`, or `LOCAL`.
    pub source: Option<SocketAddr>,
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Nothing complete by the deadline.
    #[error("no complete PROXY protocol header within the header read timeout")]
    Timeout,
    /// The client closed or the socket failed.
    #[error("connection closed before a complete PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    /// A required header is absent.
    #[error("the port requires a PROXY protocol header and the connection did not start with one")]
    Missing,
    /// It starts like a header but is not a valid one.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// Longer than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header longer than {MAX_HEADER_BYTES} bytes")]
    TooLarge,
}

/// Reads the header from `stream` by `deadline`.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: tokio::time::Instant,
    optional: bool,
) -> Result<Accepted, ProxyHeaderError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| ProxyHeaderError::Timeout)??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if !could_be_header(&buf) {
            return match optional {
                true => Ok(Accepted {
                    leftover: buf,
                    source: None,
                }),
                false => Err(ProxyHeaderError::Missing),
            };
        }
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() > MAX_HEADER_BYTES {
                return Err(ProxyHeaderError::TooLarge);
            }
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        return Ok(Accepted {
            leftover: buf.split_off(len),
            source,
        });
    }
}

/// Whether `buf` is, or may still become, a v1 or v2 header.
fn could_be_header(buf: &[u8]) -> bool {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    starts(V1_PREFIX) || starts(V2_SIGNATURE)
}

fn v1_source(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(ip) => Some((ip.source_address, ip.source_port).into()),
        v1::Addresses::Tcp6(ip) => Some((ip.source_address, ip.source_port).into()),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == v2::Command::Local {
        return None;
    }
    match &h.addresses {
        v2::Addresses::IPv4(ip) => Some((ip.source_address, ip.source_port).into()),
        v2::Addresses::IPv6(ip) => Some((ip.source_address, ip.source_port).into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn feed(bytes: Vec<u8>, optional: bool) -> Result<Accepted, ProxyHeaderError> {
        let (mut client, mut server) = tokio::io::duplex(8192);
        tokio::spawn(async move {
            for b in bytes {
                // One byte at a time: the header arrives in pieces.
                let _ = client.write_all(&[b]).await;
            }
            std::future::pending::<()>().await;
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        read(&mut server, deadline, optional).await
    }

    #[tokio::test]
    async fn v1_header_gives_the_source_and_leaves_the_request() {
        let mut input = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n".to_vec();
        input.extend_from_slice(b"GET");
        let a = feed(input, false).await.unwrap();
        assert_eq!(a.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(a.leftover, b"GET");
    }

    #[tokio::test]
    async fn v2_header_from_the_ppp_builder_gives_the_ipv6_source() {
        let addrs = v2::IPv6::new(
            "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap(),
            "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
            4242,
            443,
        );
        let mut input = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addrs,
        )
        .build()
        .unwrap();
        input.push(0x16);
        let a = feed(input, false).await.unwrap();
        assert_eq!(a.source, Some("[2001:db8::7]:4242".parse().unwrap()));
        assert_eq!(a.leftover, [0x16]);
    }

    #[tokio::test]
    async fn a_missing_required_header_and_a_forged_one_are_refused() {
        let missing = feed(b"GET / HTTP/1.1\r\n".to_vec(), false).await;
        assert!(
            matches!(missing, Err(ProxyHeaderError::Missing)),
            "{missing:?}"
        );
        let bad = feed(b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n".to_vec(), false).await;
        assert!(matches!(bad, Err(ProxyHeaderError::Invalid(_))), "{bad:?}");
        let endless = feed([b"PROXY TCP4 ".to_vec(), vec![b'1'; 5000]].concat(), false).await;
        assert!(endless.is_err(), "an endless v1 line is refused");
    }

    #[tokio::test]
    async fn optional_serves_a_connection_without_a_header_as_it_is() {
        let a = feed(b"GET / HTTP/1.1\r\n".to_vec(), true).await.unwrap();
        assert_eq!(a.source, None);
        // Whatever was read is replayed.
        assert!(!a.leftover.is_empty());
        assert!(
            b"GET / HTTP/1.1\r\n".starts_with(&a.leftover),
            "{:?}",
            a.leftover
        );
    }
}
