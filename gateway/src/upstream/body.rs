//! The body sent upstream: the client's stream, or bytes the gateway holds (an empty body,
//! or a buffered one that can be replayed on a retry).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

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
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(b) => b.is_end_stream(),
            RequestBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) => b.size_hint(),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
