//! The ClientHello of a TLS connection, read before anything is decided: its SNI picks
//! the listener (HTTPS, TLS Terminate or TLS Passthrough), and the bytes read are
//! replayed ([`Rewind`](super::rewind::Rewind)) to the TLS acceptor or, untouched, to a
//! passthrough upstream.
//! rustls parses the hello (on a copy), so no TLS parsing is hand-written here.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest ClientHello read before giving up (a hello is one handshake message of at
/// most a few records; post-quantum key shares make it a few KiB).
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// What was read: the bytes, and the server name asked for.
pub struct ClientHello {
    /// Every byte read so far (the whole ClientHello, perhaps more).
    pub buffered: Vec<u8>,
    /// SNI, lower case; `None` when the client sent none.
    pub sni: Option<String>,
}

/// Why no ClientHello was read.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// The deadline passed first.
    #[error("no TLS ClientHello within the header read timeout")]
    Timeout,
    /// The client closed, or the socket failed.
    #[error("connection closed before a complete ClientHello: {0}")]
    Io(#[from] std::io::Error),
    /// Not TLS, or a malformed hello.
    #[error("not a TLS ClientHello: {0}")]
    Tls(#[from] rustls::Error),
    /// Larger than [`MAX_HELLO_BYTES`].
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
}

/// Reads until a whole ClientHello has arrived, by `deadline`.
pub async fn peek<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: tokio::time::Instant,
) -> Result<ClientHello, PeekError> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buffered = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        if buffered.len() > MAX_HELLO_BYTES {
            return Err(PeekError::TooLarge);
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| PeekError::Timeout)??;
        if n == 0 {
            let eof = std::io::ErrorKind::UnexpectedEof;
            return Err(PeekError::Io(eof.into()));
        }
        buffered.extend_from_slice(&chunk[..n]);
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            // rustls takes at most one record's worth until the records it holds are
            // processed, so each take is followed by `accept()`: else a hello of more
            // than one record would fail or pass depending on how TCP split it. From a
            // slice the only error is that full buffer.
            match acceptor.read_tls(&mut rest) {
                Ok(0) | Err(_) => return Err(PeekError::TooLarge),
                Ok(_) => {}
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted
                        .client_hello()
                        .server_name()
                        .map(str::to_ascii_lowercase);
                    return Ok(ClientHello { buffered, sni });
                }
                Ok(None) => {}
                Err((e, _alert)) => return Err(PeekError::Tls(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::rewind::Rewind;
    use tokio::io::AsyncWriteExt;

    /// A real ClientHello, from rustls's client, for `sni`.
    fn client_hello(sni: &str) -> Vec<u8> {
        client_hello_offering(sni, Vec::new())
    }

    /// The same, offering `alpn` (which can make it span several records).
    fn client_hello_offering(sni: &str, alpn: Vec<Vec<u8>>) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn reads_sni_from_a_hello_split_into_one_byte_writes_and_replays_every_byte() {
        let hello = client_hello("Passthrough.Example.com");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = hello.clone();
        tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.unwrap();
            }
            client.write_all(b"after").await.unwrap();
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = peek(&mut server, deadline).await.unwrap();
        assert_eq!(got.sni.as_deref(), Some("passthrough.example.com"));
        let mut replay = Rewind::new(got.buffered, server);
        let mut all = vec![0u8; hello.len() + 5];
        replay.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..hello.len()], &hello[..]);
        assert_eq!(&all[hello.len()..], b"after");
    }

    /// A hello of about 40 KiB spans three records; however TCP splits it, it is read
    /// whole (it used to fail once rustls' one-record buffer filled between accepts).
    #[tokio::test]
    async fn a_hello_of_several_records_is_read_whatever_the_write_sizes() {
        let alpn: Vec<Vec<u8>> = (0..160u8).map(|i| vec![b'a' + i % 26; 250]).collect();
        let hello = client_hello_offering("big.example.com", alpn);
        assert!(hello.len() > 40_000, "{}", hello.len());
        for write in [hello.len(), 4096, 1000, 7] {
            let (mut client, mut server) = tokio::io::duplex(write.max(64));
            let sent = hello.clone();
            tokio::spawn(async move {
                for part in sent.chunks(write) {
                    client.write_all(part).await.unwrap();
                }
            });
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            let got = peek(&mut server, deadline).await.unwrap();
            assert_eq!(
                got.sni.as_deref(),
                Some("big.example.com"),
                "writes of {write}"
            );
            assert_eq!(got.buffered.len(), hello.len(), "writes of {write}");
        }
    }

    #[tokio::test]
    async fn plaintext_http_is_refused_as_not_tls() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = peek(&mut server, deadline).await.err().unwrap();
        assert!(matches!(err, PeekError::Tls(_)), "{err}");
    }

    #[tokio::test]
    async fn a_silent_client_times_out_at_the_deadline() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(100);
        let err = peek(&mut server, deadline).await.err().unwrap();
        assert!(matches!(err, PeekError::Timeout), "{err}");
    }
}
