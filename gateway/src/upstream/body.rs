//! The body sent upstream: the client's stream, or bytes the gateway holds (an empty body,
//! or a buffered one that can be replayed on a retry).

use std::collections::VecDeque;
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
    /// Its data bytes are counted when the counter is set (a body of unknown length).
    Tee(Incoming, Vec<mpsc::Sender<Bytes>>, Option<Arc<AtomicU64>>),
    /// A mirror's copy of a streamed body.
    Copy(mpsc::Receiver<Bytes>),
    /// Streamed from the client, its data bytes counted (a body of unknown length, whose
    /// size only the stream tells: Istio's `istio_request_bytes`).
    Counted(Incoming, Arc<AtomicU64>),
    /// Frames already read (while trying to buffer a body for replay), then the rest
    /// of the stream (cannot be replayed).
    Resumed(VecDeque<Frame<Bytes>>, Box<RequestBody>),
}

impl RequestBody {
    /// An empty body.
    pub fn empty() -> RequestBody {
        RequestBody::Full(None)
    }
}

/// Reads a streamed body (`Streaming`, or `Counted` whose bytes it keeps counting) of up
/// to `limit` bytes into memory so that it can be replayed: a body that ends within the
/// limit comes back `Full`; a longer one (or one with trailers) comes back `Resumed`
/// with what was read, to stream on. A body of known length over the limit is not read.
pub async fn buffer_up_to(body: RequestBody, limit: u64) -> Result<RequestBody, hyper::Error> {
    let (mut incoming, counter) = match body {
        RequestBody::Streaming(b) if b.is_end_stream() => return Ok(RequestBody::empty()),
        RequestBody::Streaming(b) if b.size_hint().lower() <= limit => (b, None),
        RequestBody::Counted(b, n) => (b, Some(n)),
        other => return Ok(other),
    };
    let mut frames = VecDeque::new();
    let mut read = 0u64;
    let ended = loop {
        if read > limit {
            break false;
        }
        let Some(frame) = http_body_util::BodyExt::frame(&mut incoming).await else {
            break true;
        };
        let frame = frame?;
        if let Some(d) = frame.data_ref() {
            read += d.len() as u64;
            if let Some(n) = &counter {
                n.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        let trailers = frame.is_trailers();
        frames.push_back(frame);
        if trailers {
            break false;
        }
    };
    if ended && read <= limit {
        let mut all = bytes::BytesMut::with_capacity(read as usize);
        for f in frames {
            if let Ok(d) = f.into_data() {
                all.extend_from_slice(&d);
            }
        }
        return Ok(RequestBody::Full((!all.is_empty()).then(|| all.freeze())));
    }
    let rest = match counter {
        Some(n) => RequestBody::Counted(incoming, n),
        None => RequestBody::Streaming(incoming),
    };
    Ok(RequestBody::Resumed(frames, Box::new(rest)))
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
            RequestBody::Tee(b, copies, counter) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r
                    && let Some(data) = f.data_ref()
                {
                    copies.retain(|c| c.try_send(data.clone()).is_ok());
                    if let Some(n) = counter {
                        n.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                r.map_err(DownstreamBodyError)
            }
            RequestBody::Copy(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            RequestBody::Resumed(read, rest) => match read.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Pin::new(rest.as_mut()).poll_frame(cx),
            },
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
            RequestBody::Streaming(b) | RequestBody::Tee(b, _, _) | RequestBody::Counted(b, _) => {
                b.is_end_stream()
            }
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Copy(_) => false,
            RequestBody::Resumed(read, rest) => read.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) | RequestBody::Tee(b, _, _) | RequestBody::Counted(b, _) => {
                b.size_hint()
            }
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Copy(_) | RequestBody::Resumed(..) => SizeHint::default(),
        }
    }
}
