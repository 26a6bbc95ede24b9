//! One request: limits, listener and route selection (with 421 for a host that belongs
//! to another listener than the one the TLS handshake chose), redirects, then
//! [`super::forward`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, BodyKind, Completion, ProxyBody};
use super::connection::ConnInfo;
use super::headers::{self, X_REQUEST_ID};
use super::reject::{self, Reject, reject};
use super::{ProxyContext, checks, forward, normalize};
use crate::dataplane::routes::{Rule, modify_path};
use crate::dataplane::{ListenerTable, RequestView, Tables};
use crate::ir::Redirect;

/// Handles one request and always answers.
///
/// An async block rather than an async function: hyper's HTTP/1 server keeps one
/// in-flight slot per connection, as large as this future, for the connection's life,
/// and an async function would keep the request twice in it (its argument and its own
/// copy of it). Nothing runs until the future is first polled.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of the request in the future"
)]
pub fn handle(
    ctx: Arc<ProxyContext>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'static {
    async move {
        // What only the access log reads is not copied when it is off.
        let logged = ctx.access_log.enabled();
        let mut rec = Box::new(Completion {
            ctx: ctx.clone(),
            start: Instant::now(),
            method: req.method().clone(),
            path: req.uri().path_and_query().filter(|_| logged).cloned(),
            authority: headers::request_authority(&req).unwrap_or_default(),
            version: req.version(),
            status: 0,
            rule: None,
            backend: None,
            endpoint: None,
            upstream_address: None,
            request_id: headers::request_id(&req, ctx.limits.keep_request_id),
            peer: conn.peer,
            local: conn.local,
            upstream_local: None,
            sni: conn.sni.clone(),
            code: None,
            reason: None,
            attempts: 0,
            grpc: req
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
            mutual_tls: false,
            request_header_bytes: request_line_bytes(&req) + body::header_bytes(req.headers()),
            request_body_bytes: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            request_body_counted: None,
            response_header_bytes: 0,
            upstream_service_time: None,
            x_forwarded_for: logged.then(|| forwarded_for(&req)).flatten(),
            user_agent: logged
                .then(|| header_string(&req, header::USER_AGENT.as_str()))
                .flatten(),
            trace: ctx
                .tracing
                .as_ref()
                .map(|t| t.server_span(req.method().as_str(), req.headers())),
            bytes_sent: 0,
            grpc_status: None,
            in_flight: conn.activity.request_started(),
            pool_permit: None,
            via_upstream: false,
        });
        // The plan is taken out in a statement of its own: a match around the await
        // would keep the whole `Result<Plan, _>` in the future while it waits.
        let p = match plan(&ctx, &conn, &req, &mut rec) {
            Ok(Plan::Forward(p)) => p,
            Ok(Plan::Respond(resp)) => return respond(Ok(resp), rec),
            Err(r) => return respond(Err(r), rec),
        };
        let mut f = Forwarding {
            plan: Some(p),
            rec: Some(rec),
        };
        let (Some(plan), Some(rec)) = (&f.plan, &mut f.rec) else {
            unreachable!("both are set above")
        };
        // Boxed: the forwarding state is held only while a request is forwarded, not in
        // every connection's slot (README, "Memory per connection").
        let result = Box::pin(forward::forward(&ctx, &conn, plan, req, rec)).await;
        respond(result, f.finish())
    }
}

/// A request being forwarded: its plan and its record. The record reads the route's and
/// backend's labels from the plan's rule when it records the request, so the rule goes
/// to it when forwarding ends, and also when the request's future is dropped mid-way
/// (the client went away: code 0, `DC`, with its route and destination).
struct Forwarding {
    plan: Option<ForwardPlan>,
    rec: Option<Box<Completion>>,
}

impl Forwarding {
    /// The record, holding the rule (moved, not cloned: every worker writes its count).
    fn finish(mut self) -> Box<Completion> {
        let mut rec = self.rec.take().expect("the record is only taken here");
        rec.rule = self.plan.take().map(|p| p.rule);
        rec
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let (Some(plan), Some(rec)) = (self.plan.take(), &mut self.rec) {
            rec.rule = Some(plan.rule);
        }
    }
}

fn respond(
    result: Result<Response<BodyKind>, Reject>,
    mut rec: Box<Completion>,
) -> Response<ProxyBody> {
    match result {
        Ok(resp) => {
            let (parts, kind) = resp.into_parts();
            rec.status = parts.status.as_u16();
            rec.via_upstream = !matches!(kind, BodyKind::Full(_));
            rec.response_header_bytes = STATUS_LINE_BYTES + body::header_bytes(&parts.headers);
            let grpc_status = body::grpc_status(&parts.headers);
            Response::from_parts(
                parts,
                ProxyBody {
                    kind,
                    bytes: 0,
                    grpc_status,
                    ended: false,
                    completion: Some(rec),
                },
            )
        }
        // Nobody reads the answer; the record, dropped here with no status, says why
        // (code 0, `DC` or `DR`), and no client error is counted.
        Err(Reject {
            status,
            client_gone: true,
            ..
        }) => {
            let http1 = rec.version != http::Version::HTTP_2;
            drop(rec);
            let mut resp = Response::new(ProxyBody {
                kind: BodyKind::Full(None),
                bytes: 0,
                grpc_status: None,
                ended: false,
                completion: None,
            });
            *resp.status_mut() = status;
            // A client that only shut its sending side down may still read: this
            // connection serves no more.
            if http1 {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
        Err(Reject {
            status,
            code,
            detail,
            client_gone: false,
        }) => {
            // A gRPC client gets its answer as a Trailers-Only 200 (the HTTP status
            // mapped to grpc-status): 200 is what was sent, and what Envoy records.
            rec.status = if rec.grpc { 200 } else { status.as_u16() };
            if is_client_fault(status) {
                rec.ctx.metrics.downstream_error(code);
            }
            let body = reject::body(status, code, rec.request_id());
            rec.code = Some(code);
            rec.reason = Some(detail);
            let mut resp = if rec.grpc {
                reject::grpc_trailers_only(status, body.trim_end())
            } else {
                let mut r = Response::new(BodyKind::Full(Some(Bytes::from(body))));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            .map(|kind| ProxyBody {
                kind,
                bytes: 0,
                grpc_status: None,
                ended: false,
                completion: None,
            });
            let h = resp.headers_mut();
            h.insert(X_REQUEST_ID, rec.request_id.clone());
            if code == "low_version" {
                // Envoy's codec closes the connection it refused, keep-alive or not.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if code == "UO" {
                // Envoy's mark of a circuit-breaker overflow: a downstream Envoy never
                // retries an answer that carries it.
                h.insert("x-envoy-overloaded", HeaderValue::from_static("true"));
            }
            rec.response_header_bytes = STATUS_LINE_BYTES + body::header_bytes(h);
            resp.body_mut().grpc_status = body::grpc_status(resp.headers());
            resp.body_mut().completion = Some(rec);
            resp
        }
    }
}

/// `HTTP/1.1 200 OK\r\n`, counted in Istio's response size.
const STATUS_LINE_BYTES: u64 = 17;

/// Bytes of the request line (`GET /path HTTP/1.1\r\n`), counted in Istio's request size.
fn request_line_bytes(req: &Request<Incoming>) -> u64 {
    let pq = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    (req.method().as_str().len() + pq + 12) as u64
}

/// Every `x-forwarded-for` line, joined as the gateway joins them upstream.
fn forwarded_for(req: &Request<Incoming>) -> Option<String> {
    let lines: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

fn header_string(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A refusal caused by what the client sent (malformed or over a limit), as opposed to
/// a missing route or an upstream failure.
fn is_client_fault(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    )
}

/// What to do with a request once its route is known.
pub enum Plan {
    /// Send it upstream.
    Forward(ForwardPlan),
    /// Answer here (a redirect, a CORS preflight).
    Respond(Response<BodyKind>),
}

/// A matched request, ready to forward (the tables may be swapped meanwhile; the rule
/// is kept alive by its `Arc`, which then goes to the request's record).
pub struct ForwardPlan {
    /// The matched rule.
    pub rule: Arc<Rule>,
    /// The request's path as matched (no query).
    pub path: String,
    /// Length of the PathPrefix the request matched (ReplacePrefixMatch replaces it).
    pub prefix_len: usize,
}

/// Most header fields a request may carry (Envoy's `max_headers_count` default).
pub const MAX_HEADER_FIELDS: usize = 100;

fn check_limits(ctx: &ProxyContext, req: &Request<Incoming>) -> Result<(), Reject> {
    let limits = &ctx.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(reject(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "request URI is {uri_len} bytes, limit is {}",
                limits.max_uri_bytes
            ),
        ));
    }
    // Envoy's `max_headers_count` default; hyper's HTTP/1 server stops at the same 100 and
    // answers 431 itself, its HTTP/2 server only bounds the bytes.
    let fields = req.headers().len();
    if fields > MAX_HEADER_FIELDS {
        return Err(reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request has {fields} header fields, limit is {MAX_HEADER_FIELDS}"),
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "request headers are {header_bytes} bytes, limit is {}",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// The listener serving a request host. On HTTPS the listener was fixed by SNI; a host
/// that another listener on the port claims is misdirected (421), so a route of one
/// listener can never be reached through another listener's handshake.
fn listener<'t>(
    tables: &'t Tables,
    conn: &ConnInfo,
    host: &str,
) -> Result<&'t ListenerTable, Reject> {
    let no_route = || {
        reject(
            StatusCode::NOT_FOUND,
            "NR",
            format!("no route for host {host:?}"),
        )
    };
    let Some(pt) = tables.ports.get(&conn.port) else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "NR",
            "no listener on this port",
        ));
    };
    let owner = pt.listener_for_host(host).map(|i| &pt.listeners[i]);
    let Some(chosen) = &conn.listener else {
        return owner.ok_or_else(no_route);
    };
    let Some(l) = pt.listeners.iter().find(|l| *l.name == **chosen) else {
        return Err(no_route());
    };
    match owner {
        Some(o) if o.name != l.name => Err(reject(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "host {host:?} belongs to listener {} but the TLS handshake chose listener {}",
                o.name, l.name
            ),
        )),
        _ => Ok(l),
    }
}

/// Finds the route; answers redirects; otherwise returns what to forward.
fn plan(
    ctx: &ProxyContext,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    rec: &mut Completion,
) -> Result<Plan, Reject> {
    if req.version() == http::Version::HTTP_10 && !conn.http10 {
        // Envoy's HTTP/1 codec without `accept_http_10` (Istio, Gloo and Envoy Gateway
        // leave it off).
        return Err(reject(
            StatusCode::UPGRADE_REQUIRED,
            "low_version",
            "HTTP/1.0 is not served on this port (ClientTrafficPolicy http1.http10 or \
             --accept-http10 turn it on)",
        ));
    }
    check_limits(ctx, req)?;
    checks::check_request(req)?;
    let host = headers::host_without_port(&rec.authority);
    let tables = ctx.tables.load();
    let listener = listener(&tables, conn, &host)?;
    let path = &*normalize::path(req.uri().path(), ctx.limits.merge_slashes);
    let view = RequestView {
        method: req.method(),
        path,
        query: req.uri().query(),
        headers: req.headers(),
    };
    let entry = listener.find(&host, &view).ok_or_else(|| {
        reject(
            StatusCode::NOT_FOUND,
            "NR",
            format!("no route for host {host:?} path {path:?}"),
        )
    })?;
    let rule = entry.rule.clone();
    let prefix_len = entry.matcher.path.prefix_len();
    if let Some(r) = &rule.filters.redirect {
        let location = redirect_location(r, conn, &host, path, req.uri().query(), prefix_len);
        let answer = redirect_response(r.status, &location).map(Plan::Respond);
        rec.rule = Some(rule);
        return answer;
    }
    if let Some(c) = &rule.filters.cors
        && super::cors::is_preflight(req)
    {
        let answer = super::cors::preflight(c, req);
        rec.rule = Some(rule);
        return Ok(Plan::Respond(answer));
    }
    Ok(Plan::Forward(ForwardPlan {
        rule,
        path: path.to_owned(),
        prefix_len,
    }))
}

fn redirect_location(
    r: &Redirect,
    conn: &ConnInfo,
    host: &str,
    path: &str,
    query: Option<&str>,
    prefix_len: usize,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(conn.scheme.scheme());
    let rhost = r.hostname.as_deref().unwrap_or(host);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => Some(conn.port),
    };
    let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
    let new_path = r
        .path
        .as_ref()
        .map_or_else(|| path.to_owned(), |m| modify_path(m, path, prefix_len));
    let mut location = format!("{scheme}://{rhost}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&new_path);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    location
}

fn redirect_response(status: u16, location: &str) -> Result<Response<BodyKind>, Reject> {
    let mut resp = Response::new(BodyKind::Full(None));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let loc = HeaderValue::from_str(location).map_err(|_| {
        reject(
            StatusCode::BAD_REQUEST,
            "invalid_redirect",
            "redirect location is not a valid header value",
        )
    })?;
    resp.headers_mut().insert(header::LOCATION, loc);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}
