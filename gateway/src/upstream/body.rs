//! The body sent upstream: the client's stream, or bytes the gateway holds (an empty body,
//! or a buffered one that can be replayed on a retry).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// The downstream client's request body failed (bad chunked encoding, a reset stream, a
/// body cut short): the client's fault, never the upstream's. Wrapped so that the
/// attempt loop can tell it apart from upstream failures in hyper's error chain.
#[derive(Debug, thiserror::Error)]
#[error("downstream request body: {0}")]
pub struct DownstreamBodyError(#[source] pub hyper::Error);

/// A request body for the upstream client.
pub enum RequestBody {
    /// Streamed from the downstream client (cannot be replayed).
    Streaming(Incoming),
    /// Held in memory (replayable); `None` once sent.
    Full(Option<Bytes>),
    /// Streamed from the client while copies of each chunk go to mirrors; a mirror that
    /// falls behind loses its copy (its request fails alone, the client's never waits).
    Tee(Incoming, Vec<mpsc::Sender<Bytes>>),
    /// A mirror's copy of a streamed body.
    Copy(mpsc::Receiver<Bytes>),
    /// Streamed from the client, its data bytes counted (a body of unknown length, whose
    /// size only the stream tells: Istio's `istio_request_bytes`).
    Counted(Incoming, Arc<AtomicU64>),
}

impl RequestBody {
    /// An empty body.
    pub fn empty() -> RequestBody {
        RequestBody::Full(None)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = DownstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DownstreamBodyError>>> {
        match self.get_mut() {
            RequestBody::Streaming(b) => Pin::new(b).poll_frame(cx).map_err(DownstreamBodyError),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Tee(b, copies) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r
                    && let Some(data) = f.data_ref()
                {
                    copies.retain(|c| c.try_send(data.clone()).is_ok());
                }
                r.map_err(DownstreamBodyError)
            }
            RequestBody::Copy(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            RequestBody::Counted(b, n) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r
                    && let Some(data) = f.data_ref()
                {
                    n.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                r.map_err(DownstreamBodyError)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(b) | RequestBody::Tee(b, _) | RequestBody::Counted(b, _) => {
                b.is_end_stream()
            }
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Copy(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) | RequestBody::Tee(b, _) | RequestBody::Counted(b, _) => {
                b.size_hint()
            }
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Copy(_) => SizeHint::default(),
        }
    }
}
