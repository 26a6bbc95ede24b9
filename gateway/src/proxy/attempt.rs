//! The one loop that runs upstream attempts: pick an endpoint, ask the hooks, connect
//! (TLS for mesh endpoints), send, classify the outcome, tell the hooks, and retry when
//! the policy says so and the request can be replayed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};

use super::ProxyContext;
use super::body::Completion;
use super::connection::InFlight;
use super::flags;
use super::reject::{Reject, reject};
use crate::dataplane::routes::{Backend, Target};
use crate::ir::Transport;
use crate::observe::traces;
use crate::upstream::attempt::{AttemptInfo, Outcome, RetryPolicy};
use crate::upstream::lb::{self, HashInput};
use crate::upstream::outlier::{self, EndpointHealth};
use crate::upstream::pool_limits;
use crate::upstream::{DownstreamBodyError, MeshConnectError, Replayable, RequestBody};

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
    /// The endpoint's index in the backend's endpoints (`None`: a DNS target).
    index: Option<usize>,
    pub(super) authority: &'a Authority,
    pub(super) transport: &'a Transport,
    /// The endpoint's Pod says it is in the mesh (`security.istio.io/tlsMode=istio`).
    mesh_labelled: bool,
    /// Its outlier and load state (endpoints from EndpointSlices only).
    health: Option<&'a EndpointHealth>,
}

/// Istio's peer-metadata headers, on requests to mesh endpoints only: a plaintext or
/// non-mesh TLS upstream is outside the mesh and learns nothing about it.
pub(super) fn add_peer_metadata(ctx: &ProxyContext, transport: &Transport, h: &mut HeaderMap) {
    if let (Transport::Mesh(_), Some(pm)) = (transport, &ctx.peer_metadata) {
        pm.insert(h);
    }
}

pub(super) fn pick(backend: &Backend) -> Result<Pick<'_>, Reject> {
    pick_avoiding(backend, None, None)
}

/// Picks an endpoint with the backend's load balancer, skipping ejected endpoints; a
/// retry avoids the endpoint that just failed when there is another (Envoy's
/// previous-hosts retry predicate).
fn pick_avoiding<'a>(
    backend: &'a Backend,
    hash: Option<u64>,
    avoid: Option<&str>,
) -> Result<Pick<'a>, Reject> {
    match &backend.target {
        Target::Unresolvable(why) => Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backend_unresolvable",
            format!("backendRef {} unresolvable: {why}", backend.name),
        )),
        Target::NoCluster(why) => Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "NC",
            format!("no cluster for destination {}: {why}", backend.name),
        )),
        Target::Endpoints(eps) if eps.is_empty() => Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            format!("no ready endpoints for {}", backend.name),
        )),
        Target::Endpoints(eps) => {
            let i = lb::pick(backend.policy.as_deref(), &backend.state, eps, hash, avoid)
                .ok_or_else(|| {
                    reject(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UH",
                        format!(
                            "no healthy upstream: every endpoint of {} is ejected by outlier \
                             detection (minHealthPercent 0: no panic mode)",
                            backend.name
                        ),
                    )
                })?;
            let ep = &eps[i];
            Ok(Pick {
                index: Some(i),
                authority: &ep.authority,
                transport: &ep.transport,
                mesh_labelled: ep.mesh_labelled,
                health: Some(&ep.health),
            })
        }
        Target::Dns {
            authority,
            transport,
        } => Ok(Pick {
            index: None,
            authority,
            transport,
            mesh_labelled: false,
            health: None,
        }),
    }
}

/// A route's timeouts for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// `timeouts.request`: the whole request (queueing, every attempt, backoffs), from
    /// its start.
    pub request: Option<Duration>,
    /// `timeouts.backendRequest` (Istio's `perTryTimeout`): each attempt, from its start.
    pub per_attempt: Option<Duration>,
}

/// The time one wait may take, and the field that bounds it.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Time left.
    left: Duration,
    /// The configured timeout (for the error).
    configured: Duration,
    /// `timeouts.request` or `timeouts.backendRequest`.
    field: &'static str,
}

impl Timeouts {
    /// The budget of something that starts now: what is left of the request's timeout,
    /// or the attempt's own if that is tighter (`per_attempt` false: the request's only).
    fn budget(&self, request_start: Instant, per_attempt: bool) -> Option<Budget> {
        let request = self.request.map(|t| Budget {
            left: t.saturating_sub(request_start.elapsed()),
            configured: t,
            field: "timeouts.request",
        });
        let attempt = self.per_attempt.filter(|_| per_attempt).map(|t| Budget {
            left: t,
            configured: t,
            field: "timeouts.backendRequest",
        });
        match (request, attempt) {
            (Some(r), Some(a)) => Some(if a.left < r.left { a } else { r }),
            (r, a) => r.or(a),
        }
    }

    /// Whether the request's own timeout has run out (no retry can start).
    fn request_expired(&self, request_start: Instant) -> bool {
        self.request.is_some_and(|t| request_start.elapsed() >= t)
    }

    /// Waits `backoff` before a retry, within what is left of the request's timeout;
    /// false when the timeout runs out first (the retry cannot start).
    async fn backoff(&self, request_start: Instant, backoff: Duration) -> bool {
        within(
            self.budget(request_start, false),
            tokio::time::sleep(backoff),
        )
        .await
        .is_some()
    }
}

/// Runs `fut` within `budget` (unbounded without one); `None` when it ran out. A plain
/// function: an async one would hold `fut` twice (its argument, and inside the timeout).
fn within<F: Future>(budget: Option<Budget>, fut: F) -> impl Future<Output = Option<F::Output>> {
    match budget {
        Some(b) => Either::Left(tokio::time::timeout(b.left, fut).map(Result::ok)),
        None => Either::Right(fut.map(Some)),
    }
}

/// What a retry needs to send the request again.
struct Replay {
    method: http::Method,
    version: http::Version,
    headers: http::HeaderMap,
    body: ReplayBody,
}

/// The body a retry sends.
enum ReplayBody {
    /// Held whole by the gateway.
    Held(Option<Bytes>),
    /// A client stream kept as it is sent (up to the replay limit).
    Streamed(Replayable),
}

impl Replay {
    /// The next attempt's request, or `None` when its body cannot be sent again.
    fn request(&self) -> Option<Request<RequestBody>> {
        let body = match &self.body {
            ReplayBody::Held(b) => RequestBody::Full(b.clone()),
            ReplayBody::Streamed(r) => r.attempt()?,
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        Some(r)
    }
}

/// A retrying route's body, made replayable: held bodies as they are, a client stream
/// of up to the replay limit (known, or unknown until it ends) shared between attempts
/// and sent as it arrives; a larger one streams once and is not retried.
fn replayable(policy: &RetryPolicy, body: RequestBody) -> (RequestBody, Option<ReplayBody>) {
    if policy.attempts <= 1 {
        return (body, None);
    }
    match body {
        RequestBody::Full(b) => (RequestBody::Full(b.clone()), Some(ReplayBody::Held(b))),
        RequestBody::Streaming(b) if b.is_end_stream() => {
            (RequestBody::empty(), Some(ReplayBody::Held(None)))
        }
        RequestBody::Streaming(b) if b.size_hint().lower() > policy.max_replay_body_bytes => {
            (RequestBody::Streaming(b), None)
        }
        body @ (RequestBody::Streaming(_) | RequestBody::Counted(..)) => {
            let shared = Replayable::new(body, policy.max_replay_body_bytes);
            match shared.attempt() {
                Some(first) => (first, Some(ReplayBody::Streamed(shared))),
                None => unreachable!("a new replayable body has lost nothing"),
            }
        }
        other => (other, None),
    }
}

/// Runs attempts until one succeeds or the route's retry policy gives up; records the
/// endpoint and attempt count on `rec`.
///
/// The request is taken apart here, before the future: the future lives (boxed in the
/// forwarding state) for as long as the request waits for its upstream, and an async
/// function would keep its arguments and every local it borrowed before an await (the
/// request's parts, a second copy of the request) until it returns. The loop's async
/// block keeps what it captures once.
pub fn run<'a>(
    ctx: &'a ProxyContext,
    backend: &'a Backend,
    retry: Option<&'a RetryPolicy>,
    out: Outgoing,
    timeouts: Timeouts,
    rec: &'a mut Completion,
) -> impl Future<Output = Result<Response<Incoming>, Reject>> + 'a {
    static NO_RETRY: RetryPolicy = RetryPolicy::NONE;
    let policy = retry.unwrap_or(&NO_RETRY);
    let Outgoing {
        parts,
        body,
        path_and_query,
    } = out;
    let hash = lb::request_hash(
        backend.policy.as_deref(),
        &HashInput {
            headers: &parts.headers,
            query: path_and_query.query(),
            client_ip: rec.peer.ip(),
            trusted_proxies: ctx.limits.num_trusted_proxies,
        },
    );
    let (body, replay_body) = replayable(policy, body);
    // Boxed: only retrying routes have one.
    let replay = replay_body.map(|body| {
        Box::new(Replay {
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        })
    });
    let mut req = Request::from_parts(parts, body);
    async move {
        let _active = backend.state.start();
        let mut attempt = 0;
        let mut previous: Option<String> = None;
        let mut _retry_slot = None;
        // The upstream service time runs from here, across every attempt, its admission
        // and backoffs, as Envoy's does; Envoy starts it at the end of the request body,
        // which for a request without one is here.
        let handed_over = Instant::now();
        loop {
            attempt += 1;
            let ep = pick_avoiding(backend, hash, previous.as_deref())?;
            let endpoint = ep.authority.as_str();
            let info = AttemptInfo {
                backend: &backend.name,
                endpoint,
                attempt,
            };
            rec.attempts = attempt;
            let authority = ctx.upstreams().local_authority(ep.authority);
            rec.upstream_address = Some(authority.clone());
            // What the last attempt's answer set: this attempt may end with none.
            rec.upstream_local = None;
            rec.upstream_service_time = None;
            rec.endpoint = ep.index;
            rec.mutual_tls = ep.transport.is_mesh();
            let permit = admit(ctx, backend, &info, timeouts.budget(rec.start, false)).await?;
            *req.uri_mut() = upstream_uri(authority, &path_and_query);
            // Per attempt: a retry may pick an endpoint outside the mesh (the replayed headers
            // are the ones from before this).
            add_peer_metadata(ctx, ep.transport, req.headers_mut());
            // Boxed: only traced requests have one, and it would sit in every request's
            // state while it waits for the upstream.
            let span = rec.trace.as_ref().zip(ctx.tracing.as_ref()).map(|(s, t)| {
                Box::new(s.attempt(t, &backend.name, endpoint, attempt, req.headers_mut()))
            });
            let waiting = Waiting {
                ctx,
                info,
                request: &rec.in_flight,
                version: rec.version,
                started: Instant::now(),
                span,
                answered: false,
            };
            let in_flight = ep.health.map(EndpointHealth::start);
            let budget = timeouts.budget(rec.start, true);
            let result = send(ctx, backend, ep.transport, req, budget).await;
            drop(in_flight);
            let (started, span) = waiting.answered();
            let outcome = match &result {
                Ok(resp) => {
                    rec.upstream_service_time = Some(handed_over.elapsed());
                    rec.upstream_local = resp
                        .extensions()
                        .get::<hyper_util::client::legacy::connect::HttpInfo>()
                        .map(|i| i.local_addr());
                    Outcome::Response(resp.status().as_u16())
                }
                Err(f) => f.outcome(&rec.in_flight, rec.version),
            };
            ctx.hooks.finished(&info, outcome, started.elapsed());
            if let Some(span) = span {
                let status = result.as_ref().ok().map(|r| r.status().as_u16());
                traces::end_attempt(*span, status, outcome.code());
            }
            if detect_outlier(backend, &ep, outcome) {
                ctx.metrics.policy_event(&backend.name, "outlier_ejection");
            }
            let grpc_retry = result
                .as_ref()
                .is_ok_and(|r| policy.should_retry_grpc(attempt, r.headers()));
            let retryable = (policy.should_retry(attempt, outcome) || grpc_retry)
                && !timeouts.request_expired(rec.start);
            let mut gave_up = None;
            if let Some(replay) = &replay
                && retryable
            {
                let max_retries = backend
                    .policy
                    .as_ref()
                    .and_then(|p| p.limits.as_ref())
                    .map_or(u32::MAX, |l| l.max_retries);
                match backend.state.try_retry(
                    policy.budget_percent,
                    policy.min_retry_concurrency,
                    max_retries,
                ) {
                    // Boxed: only a retry waits here.
                    Some(slot)
                        if Box::pin(
                            timeouts.backoff(rec.start, policy.backoff_before(attempt)),
                        )
                        .await =>
                    {
                        // A streamed body past the replay limit cannot be sent again.
                        if let Some(again) = replay.request() {
                            // This answer is dropped for the retry: its slots go with it.
                            drop(permit);
                            ctx.metrics.policy_event(&backend.name, "retry");
                            _retry_slot = Some(slot);
                            previous = Some(endpoint.to_owned());
                            req = again;
                            continue;
                        }
                    }
                    Some(_) => {
                        gave_up = Some(("URX", "the request's timeout ran out before the retry"));
                    }
                    // Envoy's `UO`: its retry circuit breaker overflowed.
                    None => {
                        ctx.metrics
                            .policy_event(&backend.name, "retry_budget_exhausted");
                        gave_up = Some((
                            "UO",
                            "the backend's retry budget (or DestinationRule http.maxRetries) \
                             is spent",
                        ));
                    }
                }
            }
            if replay.is_some() && attempt > 1 && policy.attempts == attempt {
                gave_up = Some(("URX", "retries exhausted"));
            }
            // Envoy's `URX` (`UO` for the budget): the attempt would have been retried, but
            // the policy ran out. Envoy sets it before the attempt's own failure flag.
            let gave_up = gave_up.filter(|_| attempt_failed(policy, outcome));
            let exhausted_on = |what: &str, gave_up: &str| {
                format!(
                    "{gave_up} after {attempt} attempt(s) to {}; the last {what}",
                    backend.name
                )
            };
            return match result {
                Ok(resp) => {
                    // DestinationRule limits count a request until its response ends
                    // (Envoy's circuit breakers), not only until its headers: the
                    // record, dropped with the response body, holds the slots.
                    rec.pool_permit = permit;
                    if let Some((flag, g)) = gave_up {
                        rec.code = Some(flag);
                        rec.reason = Some(exhausted_on(
                            &format!("answered {}", resp.status().as_u16()),
                            g,
                        ));
                    }
                    Ok(resp)
                }
                Err(f) => {
                    let mut r = f.into_reject(outcome, endpoint, &ep, budget);
                    if r.code == "mesh_mtls_required" {
                        ctx.metrics.tls_error("upstream_requires_mtls");
                    }
                    if let Some((flag, g)) = gave_up {
                        r.detail = exhausted_on(&format!("failed ({}): {}", r.code, r.detail), g);
                        r.code = flags::then(Some(flag), r.code);
                    }
                    Err(r)
                }
            };
        }
    }
}

/// An attempt waiting for its upstream. Dropped there (the request was cut short, and
/// hyper dropped its future), it still tells the hooks and ends its span, with the
/// request's flag (`DC`, `DR` or `SI`).
struct Waiting<'a> {
    ctx: &'a ProxyContext,
    info: AttemptInfo<'a>,
    /// The request's hold on its connection, which says why it was cut short.
    request: &'a InFlight,
    version: Version,
    started: Instant,
    span: Option<Box<opentelemetry_sdk::trace::Span>>,
    answered: bool,
}

impl Waiting<'_> {
    /// The attempt came to an outcome, which the caller reports: its start and span.
    fn answered(mut self) -> (Instant, Option<Box<opentelemetry_sdk::trace::Span>>) {
        self.answered = true;
        (self.started, self.span.take())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let outcome = Outcome::Cancelled(self.request.cut_short_flag(self.version));
        self.ctx
            .hooks
            .finished(&self.info, outcome, self.started.elapsed());
        if let Some(span) = self.span.take() {
            traces::end_attempt(*span, None, outcome.code());
        }
    }
}

/// Asks the backend's connection-pool limits, then the process's hooks, to admit an
/// attempt; a refusal is an immediate 503 with the refusing code (`UO` on overflow).
/// A request queued for a connection waits no longer than the route's timeout allows
/// (504 `UT`, as Envoy's route timeout covers the pending queue).
async fn admit(
    ctx: &ProxyContext,
    backend: &Backend,
    info: &AttemptInfo<'_>,
    budget: Option<Budget>,
) -> Result<Option<pool_limits::PoolPermit>, Reject> {
    let refused =
        |code: &'static str, why: String| reject(StatusCode::SERVICE_UNAVAILABLE, code, why);
    let limits = backend.policy.as_ref().and_then(|p| p.limits.as_ref());
    let permit = match limits {
        // Boxed: only backends with connection-pool limits wait here, and the waiting
        // future inline would size every request's state.
        Some(l) => Some(
            Box::pin(within(
                budget,
                pool_limits::admit(&backend.state, l, backend.http2),
            ))
            .await
                .ok_or_else(|| queue_timeout(backend, budget))?
                .map_err(|code| {
                    ctx.metrics.policy_event(&backend.name, "overflow");
                    let (requests, connections, pending) = backend.state.pool.snapshot();
                    refused(
                        code,
                        format!(
                            "connection pool of {} overflowed ({requests} requests, \
                             {connections} connections, {pending} pending; limits {}, {}, {} from {})",
                            backend.name,
                            l.max_requests,
                            l.max_connections,
                            l.max_pending_requests,
                            backend.policy.as_ref().map_or("", |p| p.source.as_str()),
                        ),
                    )
                })?,
        ),
        None => None,
    };
    ctx.hooks.admit(info).map_err(|code| {
        refused(
            code,
            format!("attempt to {} refused ({code})", backend.name),
        )
    })?;
    Ok(permit)
}

fn queue_timeout(backend: &Backend, budget: Option<Budget>) -> Reject {
    let (within, field) = budget.map_or((String::new(), ""), |b| {
        (
            humantime::format_duration(b.configured).to_string(),
            b.field,
        )
    });
    reject(
        StatusCode::GATEWAY_TIMEOUT,
        "UT",
        format!(
            "waited for a connection of {} (connection pool full) until {field} ({within}) ran out",
            backend.name
        ),
    )
}

/// Counts the attempt's outcome against its endpoint and ejects it at the threshold
/// when the backend can spare it; true when it did.
fn detect_outlier(backend: &Backend, ep: &Pick<'_>, outcome: Outcome) -> bool {
    let (Some(od), Some(health), Target::Endpoints(eps)) = (
        backend.policy.as_ref().and_then(|p| p.outlier.as_ref()),
        ep.health,
        &backend.target,
    ) else {
        return false;
    };
    if !health.record(od, outcome) || health.is_ejected() {
        return false;
    }
    let ejected = eps.iter().filter(|e| e.health.is_ejected()).count();
    if outlier::can_eject(od, ejected, eps.len()) {
        let time = health.eject(od);
        tracing::warn!(
            backend = %backend.name,
            endpoint = %ep.authority,
            "outlier ejected for {}",
            humantime::format_duration(time)
        );
        return true;
    }
    false
}

/// Whether an attempt that ended so would have been retried had attempts remained.
fn attempt_failed(policy: &RetryPolicy, outcome: Outcome) -> bool {
    let unlimited = RetryPolicy {
        attempts: u32::MAX,
        ..policy.clone()
    };
    unlimited.should_retry(1, outcome)
}

pub(super) fn upstream_uri(authority: Authority, pq: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).expect("scheme, authority and path are set")
}

/// Why an attempt got no response.
enum Failure {
    Timeout,
    Client(hyper_util::client::legacy::Error),
}

/// Sends one attempt within `budget`; with `maxRequestsPerConnection` the connection
/// it went out on is counted, and retired at the limit. The request is handed to the
/// client here; the future only waits (it keeps no copy of the request).
fn send(
    ctx: &ProxyContext,
    backend: &Backend,
    transport: &Transport,
    mut req: Request<RequestBody>,
    budget: Option<Budget>,
) -> impl Future<Output = Result<Response<Incoming>, Failure>> + use<> {
    let pool = backend.pool();
    // One request per connection is HTTP/1.1 without keep-alive (as Envoy does it): the
    // connection closes with the response instead of lingering unused.
    if pool.max_requests_per_connection == Some(1) && !backend.http2 {
        req.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let capture = pool
        .max_requests_per_connection
        .map(|max| (crate::upstream::capture_connection(&mut req), max));
    let fut = ctx
        .upstreams()
        .client(transport, backend.http2, pool)
        .request(req.map(Box::new));
    within(budget, fut).map(move |result| {
        let result = result.ok_or(Failure::Timeout)?;
        if let Some((c, max)) = &capture {
            crate::upstream::count_request_on(c, *max);
        }
        result.map_err(Failure::Client)
    })
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

    /// What the attempt came to; `request` says why, if the client went away.
    fn outcome(&self, request: &InFlight, version: Version) -> Outcome {
        match self {
            Failure::Timeout => Outcome::Timeout,
            // hyper-util reports the request body's failure as its own; when that body
            // is the client's stream, the client is at fault. A client that went away
            // mid-body cut its request short (Envoy's `DC`, `DR`): hyper's HTTP/1 server
            // keeps a request in flight after the connection's end, so the attempt sees
            // the body fail before hyper drops the request.
            Failure::Client(_) => match self.find::<DownstreamBodyError>() {
                Some(DownstreamBodyError::Client(e)) if client_gone(e) => {
                    Outcome::Cancelled(request.cut_short_flag(version))
                }
                Some(_) => Outcome::DownstreamError,
                None => self.upstream_outcome(),
            },
        }
    }

    /// What a failure of the upstream's came to.
    fn upstream_outcome(&self) -> Outcome {
        match self {
            Failure::Timeout => Outcome::Timeout,
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
        outcome: Outcome,
        endpoint: &str,
        ep: &Pick<'_>,
        budget: Option<Budget>,
    ) -> Reject {
        let why = match &self {
            Failure::Client(e) => error_chain(e),
            Failure::Timeout => String::new(),
        };
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        match outcome {
            Outcome::Timeout => {
                let (t, which) = budget.map_or((Duration::ZERO, ""), |b| (b.configured, b.field));
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
            Outcome::Cancelled(code) => Reject::client_gone(code),
            // (A failure's outcome is never a response.)
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

/// The client's stream failed because the client went away: its connection ended or
/// failed mid-body, or it reset its HTTP/2 stream (or closed the connection with GOAWAY).
/// Not a malformed body, nor a protocol error the gateway's own HTTP/2 stack found.
fn client_gone(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(gone) = went_away(err) {
            return gone;
        }
        source = err.source();
    }
    false
}

/// Whether `err` says the client went away; `None` when it says nothing either way.
fn went_away(err: &(dyn std::error::Error + 'static)) -> Option<bool> {
    use std::io::ErrorKind::*;
    let gone = |io: &std::io::Error| {
        matches!(
            io.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        )
    };
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        return Some(gone(io));
    }
    // h2's error has no source: a connection lost shows as its io error.
    let h2 = err.downcast_ref::<h2::Error>()?;
    Some(((h2.is_reset() || h2.is_go_away()) && h2.is_remote()) || h2.get_io().is_some_and(gone))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gone_is_told_from_a_malformed_body_and_from_an_h2_protocol_error() {
        use std::io::{Error, ErrorKind};
        let io = |kind| Error::new(kind, "x");
        for kind in [ErrorKind::UnexpectedEof, ErrorKind::ConnectionReset] {
            assert_eq!(went_away(&io(kind)), Some(true), "{kind:?}");
        }
        // hyper's chunked decoder reports a malformed size line as invalid input.
        assert_eq!(went_away(&io(ErrorKind::InvalidInput)), Some(false));
        let protocol = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
        assert_eq!(went_away(&protocol), Some(false));
        assert_eq!(went_away(&std::fmt::Error), None);
    }

    fn started_ago(ms: u64) -> Instant {
        Instant::now() - Duration::from_millis(ms)
    }

    #[test]
    fn an_attempt_gets_its_own_timeout_while_the_request_has_more_left() {
        let t = Timeouts {
            request: Some(Duration::from_secs(10)),
            per_attempt: Some(Duration::from_millis(500)),
        };
        let b = t.budget(started_ago(3_000), true).unwrap();
        assert_eq!(
            (b.left, b.field),
            (Duration::from_millis(500), "timeouts.backendRequest")
        );
        // The queue (per_attempt false) is bounded by the request's timeout only.
        let q = t.budget(started_ago(3_000), false).unwrap();
        assert_eq!(q.field, "timeouts.request");
        assert!(q.left <= Duration::from_secs(7) && q.left > Duration::from_secs(6));
    }

    #[test]
    fn a_late_attempt_gets_only_what_is_left_of_the_request() {
        let t = Timeouts {
            request: Some(Duration::from_secs(1)),
            per_attempt: Some(Duration::from_millis(500)),
        };
        let b = t.budget(started_ago(800), true).unwrap();
        assert_eq!(b.field, "timeouts.request");
        assert!(b.left <= Duration::from_millis(200), "{b:?}");
        assert_eq!(b.configured, Duration::from_secs(1));
        assert!(t.request_expired(started_ago(1_000)));
        assert!(!t.request_expired(started_ago(10)));
    }
}
