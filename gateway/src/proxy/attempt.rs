//! The one loop that runs upstream attempts: pick an endpoint, ask the hooks, connect
//! (TLS for mesh endpoints), send, classify the outcome, tell the hooks, and retry when
//! the policy says so and the request can be replayed.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Incoming};

use super::ProxyContext;
use super::body::Completion;
use super::reject::{Reject, reject};
use crate::dataplane::routes::{Backend, Target};
use crate::ir::Transport;
use crate::observe::istio_metrics::Destination;
use crate::observe::traces;
use crate::upstream::attempt::{AttemptInfo, Outcome, RetryPolicy};
use crate::upstream::{DownstreamBodyError, MeshConnectError, RequestBody};

/// A request ready to send: headers decided, body, and the path for the upstream URI.
pub struct Outgoing {
    /// Method, version, headers (the URI is set per attempt).
    pub parts: Parts,
    /// The body.
    pub body: RequestBody,
    /// Path and query sent upstream.
    pub path_and_query: PathAndQuery,
}

/// One endpoint choice.
pub(super) struct Pick<'a> {
    pub(super) authority: &'a Authority,
    pub(super) transport: &'a Transport,
    /// The endpoint's Pod says it is in the mesh (`security.istio.io/tlsMode=istio`).
    mesh_labelled: bool,
    /// Istio's destination labels.
    pub(super) destination: &'a Arc<Destination>,
}

pub(super) fn pick(backend: &Backend) -> Result<Pick<'_>, Reject> {
    match &backend.target {
        Target::Unresolvable(why) => Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backend_unresolvable",
            format!("backendRef {} unresolvable: {why}", backend.name),
        )),
        Target::Endpoints(eps) if eps.is_empty() => Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            format!("no ready endpoints for {}", backend.name),
        )),
        Target::Endpoints(eps) => {
            let ep = &eps[fastrand::usize(..eps.len())];
            Ok(Pick {
                authority: &ep.authority,
                transport: &ep.transport,
                mesh_labelled: ep.mesh_labelled,
                destination: &ep.destination,
            })
        }
        Target::Dns {
            authority,
            transport,
        } => Ok(Pick {
            authority,
            transport,
            mesh_labelled: false,
            destination: &backend.destination,
        }),
    }
}

/// Runs attempts until one succeeds or the policy gives up; records the endpoint and
/// attempt count on `rec`.
pub async fn run(
    ctx: &ProxyContext,
    backend: &Backend,
    out: Outgoing,
    deadline: Option<(std::time::Duration, &'static str)>,
    rec: &mut Completion,
) -> Result<Response<Incoming>, Reject> {
    let policy = &RetryPolicy::NONE;
    let Outgoing {
        parts,
        body,
        path_and_query,
    } = out;
    // Only a request whose body the gateway holds can be sent twice.
    let replay = (policy.attempts > 1 && body.is_end_stream())
        .then(|| (parts.method.clone(), parts.version, parts.headers.clone()));
    let mut next = Some(Request::from_parts(parts, body));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(mut req) = next.take() else {
            unreachable!("a retry always prepares its request")
        };
        let ep = pick(backend)?;
        let endpoint = ep.authority.as_str();
        let info = AttemptInfo {
            backend: &backend.name,
            endpoint,
            attempt,
        };
        rec.attempts = attempt;
        rec.upstream_address = Some(endpoint.to_owned());
        rec.destination = ep.destination.clone();
        rec.mutual_tls = !ep.transport.is_plaintext();
        if let Err(code) = ctx.hooks.admit(&info) {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                format!("attempt to {} refused ({code})", backend.name),
            ));
        }
        *req.uri_mut() = upstream_uri(ep.authority, &path_and_query);
        let span = rec
            .trace
            .as_ref()
            .zip(ctx.tracing.as_ref())
            .map(|(s, t)| s.attempt(t, &backend.name, endpoint, attempt, req.headers_mut()));
        let started = Instant::now();
        let result = send(ctx, ep.transport, backend.http2, req, deadline, rec.start).await;
        let outcome = match &result {
            Ok(resp) => {
                rec.upstream_service_time = Some(started.elapsed());
                Outcome::Response(resp.status().as_u16())
            }
            Err(f) => f.outcome(),
        };
        ctx.hooks.finished(&info, outcome, started.elapsed());
        if let Some(span) = span {
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            traces::end_attempt(span, status, outcome.code());
        }
        if let Some((method, version, headers)) = &replay
            && policy.should_retry(attempt, outcome)
        {
            let mut r = Request::new(RequestBody::empty());
            *r.method_mut() = method.clone();
            *r.version_mut() = *version;
            *r.headers_mut() = headers.clone();
            next = Some(r);
            continue;
        }
        return result.map_err(|f| {
            let r = f.into_reject(endpoint, &ep, deadline);
            if r.code == "mesh_mtls_required" {
                ctx.metrics.tls_error("upstream_requires_mtls");
            }
            r
        });
    }
}

pub(super) fn upstream_uri(authority: &Authority, pq: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).expect("scheme, authority and path are set")
}

/// Why an attempt got no response.
enum Failure {
    Timeout,
    Client(hyper_util::client::legacy::Error),
}

async fn send(
    ctx: &ProxyContext,
    transport: &Transport,
    http2: bool,
    req: Request<RequestBody>,
    deadline: Option<(std::time::Duration, &'static str)>,
    start: Instant,
) -> Result<Response<Incoming>, Failure> {
    let fut = ctx.upstreams.client(transport, http2).request(req);
    let result = match deadline {
        Some((t, _)) => tokio::time::timeout(t.saturating_sub(start.elapsed()), fut)
            .await
            .map_err(|_| Failure::Timeout)?,
        None => fut.await,
    };
    result.map_err(Failure::Client)
}

impl Failure {
    /// The first error of type `T` in the client error's source chain.
    fn find<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let Failure::Client(e) = self else {
            return None;
        };
        let mut source = std::error::Error::source(e);
        while let Some(err) = source {
            if let Some(m) = err.downcast_ref::<T>() {
                return Some(m);
            }
            source = err.source();
        }
        None
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Timeout => Outcome::Timeout,
            // hyper-util reports the request body's failure as its own; when that body
            // is the client's stream, the client is at fault.
            Failure::Client(_) if self.find::<DownstreamBodyError>().is_some() => {
                Outcome::DownstreamError
            }
            Failure::Client(e) => match self.find::<MeshConnectError>() {
                Some(m) => Outcome::MeshRefused(m.code()),
                None if e.is_connect() => Outcome::ConnectFailure,
                None if closed_without_answer(e) => Outcome::Reset,
                None => Outcome::ProtocolError,
            },
        }
    }

    fn into_reject(
        self,
        endpoint: &str,
        ep: &Pick<'_>,
        deadline: Option<(std::time::Duration, &'static str)>,
    ) -> Reject {
        let outcome = self.outcome();
        let why = match &self {
            Failure::Client(e) => error_chain(e),
            Failure::Timeout => String::new(),
        };
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        match outcome {
            Outcome::Timeout => {
                let (t, which) = deadline.unwrap_or_default();
                let within = humantime::format_duration(t);
                reject(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UT",
                    format!("upstream {endpoint} did not answer within {within} ({which})"),
                )
            }
            Outcome::MeshRefused(code) => reject(unavailable, code, why),
            Outcome::ConnectFailure => reject(
                unavailable,
                "UF",
                format!("upstream connect failure to {endpoint}: {why}"),
            ),
            Outcome::Reset if ep.transport.is_plaintext() && ep.mesh_labelled => reject(
                unavailable,
                "mesh_mtls_required",
                format!(
                    "upstream requires mTLS: {endpoint} is a mesh endpoint (its Pod is labelled \
                     security.istio.io/tlsMode=istio) and closed the plaintext connection \
                     without answering, as an Istio STRICT sidecar does; set Service \
                     annotation meshgate.io/upstream-tls to auto or istio-mutual ({why})"
                ),
            ),
            Outcome::Reset => reject(
                unavailable,
                "UC",
                format!("upstream {endpoint} closed the connection before answering ({why})"),
            ),
            Outcome::DownstreamError => reject(
                StatusCode::BAD_REQUEST,
                "DPE",
                format!("the client's request body failed while it was sent to {endpoint}: {why}"),
            ),
            Outcome::ProtocolError | Outcome::Response(_) => reject(
                StatusCode::BAD_GATEWAY,
                "UPE",
                format!("upstream {endpoint} failed: {why}"),
            ),
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The upstream accepted the connection and closed (or reset) it before any response.
fn closed_without_answer(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}
