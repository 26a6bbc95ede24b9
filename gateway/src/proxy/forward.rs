//! Forwarding a matched request: pick the backend, rewrite path and host, set the
//! forwarding headers, run the attempts, then hand the response (or an upgraded tunnel)
//! back.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::body::{self, BodyKind, Completion};
use super::connection::ConnInfo;
use super::headers::{self, Forwarded, UpgradeRequest};
use super::reject::{Reject, reject};
use super::request::ForwardPlan;
use super::{ProxyContext, attempt, cors, mirror, policy, tunnel};
use crate::dataplane::routes::{Backend, Rewrite, Rule, modify_path};
use crate::upstream::RequestBody;

/// Sends the request to one of the rule's backends and returns its response.
///
/// The work before and after the attempts is done in plain functions: this future is
/// boxed for as long as the request waits for its upstream, and an async function keeps
/// every local it borrowed before an await (the request's parts, its path) in its state
/// until it returns. Here only what the response needs crosses the await.
pub async fn forward(
    ctx: &Arc<ProxyContext>,
    conn: &ConnInfo,
    plan: &ForwardPlan,
    req: Request<Incoming>,
    rec: &mut Completion,
) -> Result<Response<BodyKind>, Reject> {
    let (request, after) = match prepare(ctx, conn, plan, req, rec)? {
        Prepared::Answered(resp) => return Ok(resp),
        Prepared::Send(request, after) => (request, after),
    };
    let rule = &*plan.rule;
    let resp = attempt::run(
        ctx,
        after.backend,
        rule.retry.as_ref(),
        request,
        attempt::Timeouts {
            request: rule.request_timeout,
            per_attempt: rule.backend_request_timeout,
        },
        rec,
    )
    .await?;
    Ok(after.respond(ctx, rule, resp, rec))
}

/// The outcome of the checks and rewrites before any attempt.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once and taken apart at once; boxing would allocate per request"
)]
enum Prepared<'a> {
    /// A policy answered (authorization denied, rate limited).
    Answered(Response<BodyKind>),
    /// The request to send, and what the response will need.
    Send(attempt::Outgoing, AfterResponse<'a>),
}

/// What the response needs from the request's preparation.
struct AfterResponse<'a> {
    backend: &'a Backend,
    /// A WebSocket upgrade's tunnel slot and the client side of the upgrade.
    downstream_upgrade: Option<(tunnel::Slot, OnUpgrade)>,
    /// The client's `Origin`, for CORS.
    origin: Option<HeaderValue>,
    /// The rate limit's quota headers.
    quota: Option<policy::Quota>,
}

/// Policies, backend choice, upgrade admission, path and header rewrites and the body.
fn prepare<'a>(
    ctx: &Arc<ProxyContext>,
    conn: &ConnInfo,
    plan: &'a ForwardPlan,
    mut req: Request<Incoming>,
    rec: &mut Completion,
) -> Result<Prepared<'a>, Reject> {
    let rule = &*plan.rule;
    if let Some(authz) = &rule.authorization
        && let Some(denied) = policy::authorize(authz, conn, &plan.path, &req, rec)
    {
        return Ok(Prepared::Answered(denied));
    }
    let quota = match &rule.rate_limit {
        Some(limiter) => match policy::rate_limit(limiter, req.headers(), conn.peer.ip(), rec) {
            Ok(quota) => quota,
            Err(refused) => return Ok(Prepared::Answered(*refused)),
        },
        None => None,
    };
    let (index, backend) = pick_backend(rule)?;
    rec.backend = Some(index);
    // An upgrade needs a connection slot of its own; without one it is refused here,
    // before anything reaches the upstream.
    let downstream_upgrade = match headers::upgrade_request(req.headers()) {
        UpgradeRequest::WebSocket => Some((ctx.tunnels.reserve()?, hyper::upgrade::on(&mut req))),
        UpgradeRequest::Other(to) => return Err(upgrade_refused(to)),
        UpgradeRequest::None | UpgradeRequest::H2c => None,
    };
    let path_and_query = upstream_path(plan, backend, req.uri().query())?;
    rewrite_request(
        conn,
        rule,
        backend,
        &mut req,
        rec,
        downstream_upgrade.is_some(),
    )?;
    let origin = req.headers().get(header::ORIGIN).cloned();
    let (parts, body) = req.into_parts();
    // A body of unknown length is counted as it streams (Istio's request bytes), mirrored
    // or not.
    let unknown_length = |b: &hyper::body::Incoming| {
        hyper::body::Body::size_hint(b).exact().is_none() && !hyper::body::Body::is_end_stream(b)
    };
    let mut counter = || {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        rec.request_body_counted = Some(n.clone());
        n
    };
    let body = match request_body(ctx, rule, backend, &parts, &path_and_query, body) {
        RequestBody::Streaming(b) if unknown_length(&b) => RequestBody::Counted(b, counter()),
        RequestBody::Tee(b, copies, None) if unknown_length(&b) => {
            RequestBody::Tee(b, copies, Some(counter()))
        }
        other => other,
    };
    let request = attempt::Outgoing {
        parts,
        body,
        path_and_query,
    };
    let after = AfterResponse {
        backend,
        downstream_upgrade,
        origin,
        quota,
    };
    Ok(Prepared::Send(request, after))
}

impl AfterResponse<'_> {
    /// The upstream's response as the client gets it: a WebSocket tunnel spliced, hop-by-hop
    /// headers removed, the filters' and CORS edits, quota headers, the body's deadline.
    fn respond(
        self,
        ctx: &ProxyContext,
        rule: &Rule,
        mut resp: Response<Incoming>,
        rec: &Completion,
    ) -> Response<BodyKind> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some((slot, down)) = self.downstream_upgrade {
                ctx.tunnels
                    .splice(slot, down, hyper::upgrade::on(&mut resp));
            }
        } else {
            headers::remove_hop_by_hop(resp.headers_mut());
        }
        rewrite_response(rule, self.backend, self.origin.as_ref(), resp.headers_mut());
        if let Some(q) = self.quota {
            q.write(resp.headers_mut());
        }
        let deadline = (resp.status() != StatusCode::SWITCHING_PROTOCOLS)
            .then(|| response_deadline(rule, rec))
            .flatten();
        resp.map(|b| match deadline {
            Some(d) => BodyKind::UpstreamUntil(b, Box::new(d)),
            None => BodyKind::Upstream(b),
        })
    }
}

/// When the response body must have ended: `timeouts.request` from the request's start.
/// (`backendRequest`, like Envoy's per-try timeout that Istio's `perTryTimeout` sets, no
/// longer applies once the response has started.) A timeout too large to add is none.
fn response_deadline(rule: &Rule, rec: &Completion) -> Option<body::ResponseDeadline> {
    let configured = rule.request_timeout?;
    let at = rec.start.checked_add(configured)?;
    Some(body::ResponseDeadline {
        sleep: Box::pin(tokio::time::sleep_until(at.into())),
        field: "timeouts.request",
        configured,
    })
}

/// Host, forwarding headers, the filters' header edits and the upstream's HTTP version.
fn rewrite_request(
    conn: &ConnInfo,
    rule: &Rule,
    backend: &Backend,
    req: &mut Request<Incoming>,
    rec: &Completion,
    upgrade: bool,
) -> Result<(), Reject> {
    let original = original_host(req.headers().get(header::HOST), &rec.authority)?;
    let host = upstream_host(rule, backend, &original);
    let fwd = Forwarded {
        peer_ip: &conn.peer_ip,
        proto: conn.scheme.scheme(),
        authority: &original,
        request_id: &rec.request_id,
    };
    let h = req.headers_mut();
    headers::prepare_upstream(h, upgrade, &fwd);
    h.insert(header::HOST, host);
    for edits in [
        &rule.filters.request_headers,
        &backend.filters.request_headers,
    ]
    .into_iter()
    .flatten()
    {
        edits.apply(h);
    }
    *req.version_mut() = if backend.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    Ok(())
}

/// The client's body, teed to the rule's and backend's mirrors when they take a copy.
fn request_body(
    ctx: &ProxyContext,
    rule: &Rule,
    backend: &Backend,
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
    body: Incoming,
) -> RequestBody {
    let mirrors: Vec<_> = rule
        .filters
        .mirrors
        .iter()
        .chain(&backend.filters.mirrors)
        .collect();
    if mirrors.is_empty() {
        RequestBody::Streaming(body)
    } else {
        mirror::send(ctx, &mirrors, parts, path_and_query, body)
    }
}

/// The filters' response header edits and the route's CORS headers.
fn rewrite_response(
    rule: &Rule,
    backend: &Backend,
    origin: Option<&HeaderValue>,
    h: &mut http::HeaderMap,
) {
    // A sidecar answers mesh requests with its own peer metadata (pod, namespace, labels):
    // the mesh's business, never the edge client's.
    crate::observe::peer_metadata::remove(h);
    for edits in [
        &rule.filters.response_headers,
        &backend.filters.response_headers,
    ]
    .into_iter()
    .flatten()
    {
        edits.apply(h);
    }
    if let Some(c) = &rule.filters.cors {
        cors::decorate(c, origin, h);
    }
}

/// 403 `upgrade_failed`, as Envoy answers an upgrade type its `upgrade_configs` do not
/// list: only WebSocket is tunnelled.
fn upgrade_refused(to: &str) -> Reject {
    reject(
        StatusCode::FORBIDDEN,
        "upgrade_failed",
        format!("upgrade to {to:?} refused: only websocket upgrades are proxied"),
    )
}

fn pick_backend(rule: &Rule) -> Result<(usize, &Backend), Reject> {
    if rule.backends.is_empty() {
        return Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_backend",
            format!("route {} has no backendRefs", rule.id),
        ));
    }
    let i = rule.pick_backend_index().ok_or_else(|| {
        reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_backend",
            format!("every backendRef of route {} has weight 0", rule.id),
        )
    })?;
    Ok((i, &rule.backends[i]))
}

/// The path (and query) sent upstream, after a rule or backend URLRewrite.
fn upstream_path(
    plan: &ForwardPlan,
    backend: &Backend,
    query: Option<&str>,
) -> Result<PathAndQuery, Reject> {
    let rewritten = rewrite_field(&plan.rule, backend, |r| r.path.as_ref())
        .map(|m| modify_path(m, &plan.path, plan.prefix_len));
    let path = rewritten.as_deref().unwrap_or(&plan.path);
    let pq = match query {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    };
    pq.map_err(|_| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "request path cannot be forwarded",
        )
    })
}

/// The request's authority as a header value: the client's own Host value when the
/// authority came from it (shared, not copied), else written from `authority`.
fn original_host(host: Option<&HeaderValue>, authority: &str) -> Result<HeaderValue, Reject> {
    match host {
        Some(v) if v.as_bytes() == authority.as_bytes() => Ok(v.clone()),
        _ => HeaderValue::from_str(authority)
            .map_err(|_| reject(StatusCode::BAD_REQUEST, "invalid_host", "invalid Host")),
    }
}

/// The Host sent upstream: a URLRewrite's hostname, else the request's own.
fn upstream_host(rule: &Rule, backend: &Backend, original: &HeaderValue) -> HeaderValue {
    match rewrite_field(rule, backend, |r| r.hostname.as_ref()) {
        Some(h) => h.clone(),
        None => original.clone(),
    }
}

/// One URLRewrite field: the chosen backendRef's (the more specific filter) if it sets
/// it, else the rule's; the two filters' other fields are resolved on their own, so a
/// rule's hostname and a backend's path both apply.
fn rewrite_field<'a, T>(
    rule: &'a Rule,
    backend: &'a Backend,
    field: impl Fn(&'a Rewrite) -> Option<&'a T>,
) -> Option<&'a T> {
    let of = |f: &'a Option<Box<Rewrite>>| f.as_deref().and_then(&field);
    of(&backend.filters.rewrite).or_else(|| of(&rule.filters.rewrite))
}
