//! The PROXY protocol (v1 text or v2 binary, parsed by the `ppp` crate) read at accept on
//! the ports a ClientTrafficPolicy asks it for: the header's source address becomes the
//! client's (X-Forwarded-For, access log, AuthorizationPolicy), and the bytes after it
//! are replayed to TLS or HTTP. A required header that is missing or malformed closes
//! the connection; with `optional`, a connection that does not start like a header is
//! served as it is.

use std::net::SocketAddr;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, `\r\n` included (the spec's 107 bytes).
const MAX_V1_BYTES: usize = 107;
/// A v2 header's fixed part; its bytes 14-15 give the length of the rest (addresses and
/// TLVs, up to 65,535 bytes, which Envoy accepts too).
const V2_FIXED_BYTES: usize = 16;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What was read.
#[derive(Debug)]
pub struct Accepted {
    /// Bytes after the header (the start of TLS or HTTP).
    pub leftover: Vec<u8>,
    /// The client the header names; `None`: no header (optional), `UNKNOWN`, or `LOCAL`.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, as the header names it (with `source`).
    pub destination: Option<SocketAddr>,
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
    /// A v1 line longer than [`MAX_V1_BYTES`].
    #[error("PROXY protocol v1 header longer than {MAX_V1_BYTES} bytes")]
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
                    destination: None,
                }),
                false => Err(ProxyHeaderError::Missing),
            };
        }
        // Parsed only once whole: a v1 line split after a space, say, is not a
        // malformed one, only an incomplete one.
        match whole_header_len(&buf) {
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(e) => return Err(e),
        }
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            return Err(ProxyHeaderError::Invalid("incomplete header".into()));
        }
        let (len, addresses) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_addresses(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_addresses(&h)),
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        return Ok(Accepted {
            leftover: buf.split_off(len),
            source: addresses.map(|a| a.0),
            destination: addresses.map(|a| a.1),
        });
    }
}

/// The length of the header `buf` starts with once all of it has arrived: a v1 line up
/// to its `\r\n`, a v2 header by its length field; `None` until then.
fn whole_header_len(buf: &[u8]) -> Result<Option<usize>, ProxyHeaderError> {
    if buf.starts_with(V1_PREFIX) {
        return match buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) if end + 2 <= MAX_V1_BYTES => Ok(Some(end + 2)),
            Some(_) => Err(ProxyHeaderError::TooLarge),
            None if buf.len() >= MAX_V1_BYTES => Err(ProxyHeaderError::TooLarge),
            None => Ok(None),
        };
    }
    if buf.starts_with(V2_SIGNATURE) && buf.len() >= V2_FIXED_BYTES {
        let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        let total = V2_FIXED_BYTES + rest;
        return Ok((buf.len() >= total).then_some(total));
    }
    Ok(None)
}

/// Whether `buf` is, or may still become, a v1 or v2 header.
fn could_be_header(buf: &[u8]) -> bool {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    starts(V1_PREFIX) || starts(V2_SIGNATURE)
}

/// Source and destination.
type Addresses = (SocketAddr, SocketAddr);

fn v1_addresses(a: &v1::Addresses) -> Option<Addresses> {
    match a {
        v1::Addresses::Tcp4(ip) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
        v1::Addresses::Tcp6(ip) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
        v1::Addresses::Unknown => None,
    }
}

fn v2_addresses(h: &v2::Header<'_>) -> Option<Addresses> {
    if h.command == v2::Command::Local {
        return None;
    }
    match &h.addresses {
        v2::Addresses::IPv4(ip) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
        v2::Addresses::IPv6(ip) => Some((
            (ip.source_address, ip.source_port).into(),
            (ip.destination_address, ip.destination_port).into(),
        )),
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
        assert_eq!(a.destination, Some("10.0.0.1:8080".parse().unwrap()));
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
        assert_eq!(a.destination, Some("[2001:db8::1]:443".parse().unwrap()));
        assert_eq!(a.leftover, [0x16]);
    }

    /// Yields its chunks one per read, as TCP may deliver them.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some(c) => {
                    buf.put_slice(&c);
                    std::task::Poll::Ready(Ok(()))
                }
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_v1_header_split_at_any_point_is_read() {
        let line = b"PROXY TCP4 198.51.100.8 10.0.0.1 5555 8080\r\n";
        let input = [&line[..], b"GET"].concat();
        for k in 1..line.len() {
            let mut stream = Chunks([input[..k].to_vec(), input[k..].to_vec()].into());
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            let a = read(&mut stream, deadline, false).await;
            let a = a.unwrap_or_else(|e| panic!("split at {k}: {e}"));
            assert_eq!(a.source, Some("198.51.100.8:5555".parse().unwrap()));
            assert_eq!(a.leftover, b"GET", "split at {k}");
        }
    }

    #[tokio::test]
    async fn a_v2_header_with_a_5000_byte_tlv_is_read() {
        let addrs = v2::IPv4::new([203, 0, 113, 14], [10, 0, 0, 1], 4242, 443);
        let mut input = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addrs,
        )
        .write_tlv(0xE0, &[7u8; 5000])
        .unwrap()
        .build()
        .unwrap();
        assert!(input.len() > 5000);
        input.push(0x16);
        let a = feed(input, false).await.unwrap();
        assert_eq!(a.source, Some("203.0.113.14:4242".parse().unwrap()));
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
