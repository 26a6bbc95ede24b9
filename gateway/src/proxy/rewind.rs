//! A stream that first yields bytes already read from it: the TLS ClientHello read to
//! pick a listener by SNI, what followed a PROXY protocol header, and the first bytes of
//! a plain HTTP connection ([`read_first`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How much [`read_first`] reads: a whole request head, usually, in one read.
const FIRST_READ_BYTES: usize = 4096;

/// Waits for a plain HTTP connection's first bytes and reads what has arrived (up to
/// 4 KiB) in one read; `Ok(None)` when the client closed first. Served through
/// [`Rewind`], they save a read: hyper's HTTP/1-or-2 detection reads exactly the 24
/// bytes of the HTTP/2 preface, then hyper reads the rest of the request, two reads where
/// one does.
pub async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: tokio::time::Instant,
) -> Result<Option<Vec<u8>>, FirstReadError> {
    let mut buf = Vec::with_capacity(FIRST_READ_BYTES);
    match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
        Err(_) => Err(FirstReadError::Timeout),
        Ok(Err(e)) => Err(FirstReadError::Io(e)),
        Ok(Ok(0)) => Ok(None),
        Ok(Ok(_)) => Ok(Some(buf)),
    }
}

/// Why a connection's first bytes were not read.
#[derive(Debug, thiserror::Error)]
pub enum FirstReadError {
    /// Nothing arrived by the header read timeout.
    #[error("no request within the header read timeout")]
    Timeout,
    /// The socket failed.
    #[error("reading the first request: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    /// What is left of the bytes to replay; `None` once replayed. Boxed: a connection
    /// task holds its stream at several levels of futures for its whole life, and this
    /// keeps the wrapper at one pointer there (README, "Memory per connection").
    #[allow(clippy::box_collection)]
    prefix: Option<Box<Vec<u8>>>,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `prefix` read again first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind {
            prefix: (!prefix.is_empty()).then(|| Box::new(prefix)),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            if n == prefix.len() {
                self.prefix = None;
            } else {
                prefix.drain(..n);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn first_bytes_are_read_once_and_replayed_before_the_rest() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let first = read_first(&mut server, deadline).await.unwrap().unwrap();
        assert_eq!(first, b"GET / HTTP/1.1\r\n");
        client.write_all(b"\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        Rewind::new(first, server)
            .read_to_end(&mut all)
            .await
            .unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_prefix_larger_than_the_readers_buffer_is_replayed_in_order() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut r = Rewind::new(b"0123456789".to_vec(), server);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 4);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"0123456789");
        assert!(r.prefix.is_none(), "the replayed bytes are freed");
    }

    #[tokio::test]
    async fn a_client_closing_before_its_first_byte_is_no_error() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert!(read_first(&mut server, deadline).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_silent_client_times_out_at_the_deadline() {
        let (_client, mut server) = tokio::io::duplex(64);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let r = read_first(&mut server, deadline).await;
        assert!(matches!(r, Err(FirstReadError::Timeout)), "{r:?}");
        assert!(tokio::time::Instant::now() >= deadline);
    }
}
