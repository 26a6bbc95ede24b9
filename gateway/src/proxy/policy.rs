//! Policy checks made before a request is forwarded: Istio AuthorizationPolicies, then
//! local rate limits (Envoy Gateway BackendTrafficPolicy). A refused request never
//! reaches the upstream.
//!
//! Buckets hold `requests` tokens and refill continuously at `requests` per unit, so a
//! burst of the full limit is admitted at once and the next request waits for a token;
//! they are per process (shared by every worker) and per route.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::{BodyKind, Completion};
use super::headers::X_REQUEST_ID;
use super::reject;
#[cfg(test)]
use crate::dataplane::limits::TokenBucket;
use http::Request;
use hyper::body::Incoming;

use super::connection::ConnInfo;
use crate::dataplane::authz::{Authorizer, AuthzRequest};
use crate::dataplane::routes::{RateLimiter, SelectorView};
#[cfg(test)]
use std::time::Duration;

/// What the tightest limit that admitted a request has left: the `x-ratelimit-*` headers
/// of its response (Envoy's local rate limit with draft-03 headers, as Envoy Gateway
/// configures it).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    limit: u64,
    remaining: u64,
    reset_secs: u64,
}

impl Quota {
    /// Writes `x-ratelimit-limit`, `-remaining` and `-reset`.
    pub fn write(&self, h: &mut HeaderMap) {
        h.insert("x-ratelimit-limit", self.limit.into());
        h.insert("x-ratelimit-remaining", self.remaining.into());
        h.insert("x-ratelimit-reset", self.reset_secs.into());
    }
}

/// Applies the route's rate limits: `Err(429 response)` when one refuses, else the
/// tightest admitting limit's quota (none when no limit selected the request).
pub fn rate_limit(
    limiter: &RateLimiter,
    headers: &HeaderMap,
    client_ip: IpAddr,
    rec: &mut Completion,
) -> Result<Option<Quota>, Box<Response<BodyKind>>> {
    let mut tightest: Option<Quota> = None;
    // sourceCIDR matches the client as AuthorizationPolicy sees it (trusted XFF hops).
    let client_ip =
        crate::dataplane::authz::client_ip(limiter.num_trusted_proxies, client_ip, headers);
    let view = SelectorView { headers, client_ip };
    for limit in limiter.selecting(&view) {
        let left = limit.bucket.take();
        if let Ok(remaining) = left {
            let quota = Quota {
                limit: limit.requests,
                remaining,
                reset_secs: limit.per.as_secs().max(1),
            };
            if tightest.is_none_or(|t| remaining < t.remaining) {
                tightest = Some(quota);
            }
        }
        if let Err(empty) = left {
            let status = StatusCode::TOO_MANY_REQUESTS;
            rec.code = Some("RL");
            rec.reason = Some(format!(
                "local rate limit of {} requests per {} from {} reached",
                limit.requests,
                humantime::format_duration(limit.per),
                limiter.source
            ));
            let body = reject::body(status, "RL", rec.request_id());
            let mut r = Response::new(BodyKind::Full(Some(Bytes::from(body))));
            *r.status_mut() = status;
            let retry_after = empty.wait.as_secs_f64().ceil().max(1.0) as u64;
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(header::RETRY_AFTER, retry_after.into());
            h.insert("x-ratelimit-limit", limit.requests.into());
            h.insert("x-ratelimit-remaining", 0u64.into());
            h.insert("x-ratelimit-reset", retry_after.into());
            h.insert(X_REQUEST_ID, rec.request_id.clone());
            return Err(Box::new(r));
        }
    }
    Ok(tightest)
}

/// Istio's body for a request an AuthorizationPolicy denied.
pub const RBAC_DENIED_BODY: &str = "RBAC: access denied";

/// Applies the gateway's AuthorizationPolicies; `Some(403 response)` when denied.
pub fn authorize(
    authz: &Authorizer,
    conn: &ConnInfo,
    path: &str,
    req: &Request<Incoming>,
    rec: &mut Completion,
) -> Option<Response<BodyKind>> {
    // The host as routing sees it (`checks` refused a port that is not digits).
    let host = super::headers::host_without_port(&rec.authority);
    let view = AuthzRequest {
        peer: conn.peer.ip(),
        headers: req.headers(),
        host: &host,
        port: conn.port,
        method: req.method().as_str(),
        path,
    };
    let why = authz.check(&view).err()?;
    rec.code = Some("rbac_access_denied");
    rec.reason = Some(why);
    let mut r = Response::new(BodyKind::Full(Some(Bytes::from_static(
        RBAC_DENIED_BODY.as_bytes(),
    ))));
    *r.status_mut() = StatusCode::FORBIDDEN;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(X_REQUEST_ID, rec.request_id.clone());
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses() {
        let b = TokenBucket::new(10, Duration::from_secs(3600));
        for left in (0..10).rev() {
            assert_eq!(b.take().unwrap(), left);
        }
        let empty = b.take().unwrap_err();
        assert!(empty.wait > Duration::from_secs(300));
    }
}
