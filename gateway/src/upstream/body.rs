//! The body sent upstream: the client's stream, bytes the gateway holds (an empty body, or
//! a small one it read whole), or a client stream shared by the attempts of a retrying
//! request ([`Replayable`]).

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
pub enum DownstreamBodyError {
    /// The client's stream failed.
    #[error("downstream request body: {0}")]
    Client(#[source] hyper::Error),
    /// A retry took the body over: the earlier attempt's copy stops here.
    #[error("downstream request body: a newer attempt of the request reads it")]
    Superseded,
}

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
    /// One attempt's reading of a [`Replayable`] body.
    Replaying(Replaying),
}

/// A streamed request body shared by the attempts of a retrying request. It is sent as
/// it arrives (never held back, so interactive streams flow), while the bytes read are
/// kept up to a limit: a retry sends them again, then goes on reading the client's
/// stream where the last attempt left off, as Envoy's retry buffer does. Past the limit
/// (or with trailers) the copy is dropped and the request cannot be retried.
#[derive(Clone)]
pub struct Replayable(Arc<std::sync::Mutex<ReplayState>>);

struct ReplayState {
    /// The client's stream; `None` once it ended.
    source: Option<Box<RequestBody>>,
    kept: Vec<Bytes>,
    kept_bytes: u64,
    limit: u64,
    /// More than `limit` read, trailers, or a failed stream: nothing to send again.
    lost: bool,
    /// The attempt now reading; earlier ones are superseded.
    generation: u32,
}

/// One attempt's view of a [`Replayable`] body.
pub struct Replaying {
    state: Arc<std::sync::Mutex<ReplayState>>,
    generation: u32,
    /// Kept chunks this attempt has sent.
    next: usize,
}

impl Replayable {
    /// Shares `body` (a client stream) between attempts, keeping up to `limit` bytes.
    pub fn new(body: RequestBody, limit: u64) -> Replayable {
        Replayable(Arc::new(std::sync::Mutex::new(ReplayState {
            source: Some(Box::new(body)),
            kept: Vec::new(),
            kept_bytes: 0,
            limit,
            lost: false,
            generation: 0,
        })))
    }

    /// The body of the next attempt (it supersedes the earlier ones), or `None` when
    /// what was read cannot be sent again.
    pub fn attempt(&self) -> Option<RequestBody> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.lost {
            return None;
        }
        s.generation += 1;
        Some(RequestBody::Replaying(Replaying {
            state: self.0.clone(),
            generation: s.generation,
            next: 0,
        }))
    }
}

impl Replaying {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DownstreamBodyError>>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return Poll::Ready(Some(Err(DownstreamBodyError::Superseded)));
        }
        if let Some(chunk) = s.kept.get(self.next).cloned() {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(source.as_mut()).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => match f.data_ref() {
                Some(d) if !s.lost => {
                    s.kept_bytes += d.len() as u64;
                    if s.kept_bytes > s.limit {
                        s.lost = true;
                        s.kept = Vec::new();
                    } else {
                        s.kept.push(d.clone());
                    }
                    self.next = s.kept.len();
                }
                Some(_) => {}
                None => s.lost = true,
            },
            Poll::Ready(None) => s.source = None,
            Poll::Ready(Some(Err(_))) => s.lost = true,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.next >= s.kept.len() && s.source.as_ref().is_none_or(|b| b.is_end_stream())
    }
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
            RequestBody::Streaming(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(DownstreamBodyError::Client),
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
                r.map_err(DownstreamBodyError::Client)
            }
            RequestBody::Copy(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            RequestBody::Replaying(r) => r.poll_frame(cx),
            RequestBody::Counted(b, n) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(f))) = &r
                    && let Some(data) = f.data_ref()
                {
                    n.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                r.map_err(DownstreamBodyError::Client)
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
            RequestBody::Replaying(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(b) | RequestBody::Tee(b, _, _) | RequestBody::Counted(b, _) => {
                b.size_hint()
            }
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Copy(_) | RequestBody::Replaying(_) => SizeHint::default(),
        }
    }
}
