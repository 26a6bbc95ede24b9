//! Gateway API v1.6 `rules[].retry` (GEP-1731, experimental channel) -> [`ir::Retry`].
//!
//! Connect failures and connections closed before a response are always retried (no
//! request reached the application); response codes only when listed in `codes`.
//! `attempts` counts retries, as the spec words it ("the maximum number of times an
//! individual request ... should be retried"); unset, Istio's default of 2 applies.

use std::time::Duration;

use super::super::Findings;
use crate::api::gateway_api::HttpRouteRetry;
use crate::ir;

/// Retries when `attempts` is not set (Istio's default).
pub const DEFAULT_RETRIES: u32 = 2;
/// Backoff when `backoff` is not set (Envoy's default base interval).
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// Share of a backend's active requests that may be retries (Envoy's retry budget default).
pub const BUDGET_PERCENT: u32 = 20;
/// Concurrent retries always allowed whatever the budget (Envoy's default).
pub const MIN_RETRY_CONCURRENCY: u32 = 3;
/// Largest request body held for replay.
pub const MAX_REPLAY_BODY_BYTES: u64 = 64 * 1024;
/// More retries than this would multiply an outage; refused as a mistake.
const MAX_RETRIES: u32 = 10;

/// Compiles a rule's `retry`; errors name `ctx` (the route and rule) and the field.
/// `kind` is the route's: Envoy's default retry budget bounds Gateway API and Gloo
/// retries, while Istio installs one only for a DestinationRule `retryBudget`, so its
/// VirtualService retries are bounded by `maxRetries` alone; and a Gateway API route
/// retries an attempt that reached `timeouts.backendRequest` (HTTPRouteRetry: the
/// gateway "SHOULD schedule the next retry attempt"), where the others retry it as the
/// 504 it is answered with.
pub fn compile(
    retry: &HttpRouteRetry,
    ctx: &str,
    kind: &str,
    f: &mut Findings,
) -> Option<ir::Retry> {
    let budget = kind != crate::translate::istio::gateway::KIND;
    let gateway_api = matches!(kind, "HTTPRoute" | "GRPCRoute");
    let before = f.errors.len();
    f.unsupported(&format!("{ctx} retry"), &retry.unsupported);
    for c in &retry.codes {
        if !(400..=599).contains(c) {
            f.errors.push(format!(
                "{ctx}: retry.codes {c} is not a status code between 400 and 599"
            ));
        }
    }
    let retries = retry.attempts.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        f.errors.push(format!(
            "{ctx}: retry.attempts {retries} is more than {MAX_RETRIES}"
        ));
    }
    let backoff = match retry.backoff.as_deref() {
        None => DEFAULT_BACKOFF,
        Some(v) => match parse_gateway_duration(v) {
            Some(d) => d,
            None => {
                f.errors.push(format!(
                    "{ctx}: retry.backoff {v:?} is not a Gateway API duration (e.g. 100ms, 1s, 1m30s)"
                ));
                DEFAULT_BACKOFF
            }
        },
    };
    if f.errors.len() > before {
        return None;
    }
    let mut codes = retry.codes.clone();
    codes.sort_unstable();
    codes.dedup();
    Some(ir::Retry {
        retries,
        codes,
        on_connect_failure: true,
        on_reset: true,
        grpc_statuses: Vec::new(),
        backoff,
        budget_percent: BUDGET_PERCENT,
        // No budget: every retry is allowed up to `maxRetries`.
        min_retry_concurrency: if budget {
            MIN_RETRY_CONCURRENCY
        } else {
            u32::MAX
        },
        max_replay_body_bytes: MAX_REPLAY_BODY_BYTES,
        retry_timeouts: gateway_api,
    })
}

/// GEP-2257 durations: one to four `<1-5 digits><h|m|s|ms>` parts, e.g. `1h30m`, `500ms`.
pub fn parse_gateway_duration(v: &str) -> Option<Duration> {
    let mut rest = v;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            match rest.as_bytes().first()? {
                b'h' => (Duration::from_secs(3600), 1),
                b'm' => (Duration::from_secs(60), 1),
                b's' => (Duration::from_secs(1), 1),
                _ => return None,
            }
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_durations_parse_and_go_durations_with_fractions_do_not() {
        assert_eq!(
            parse_gateway_duration("1m30s"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_gateway_duration("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_gateway_duration("1.5s"), None);
        assert_eq!(parse_gateway_duration("10"), None);
        assert_eq!(parse_gateway_duration(""), None);
        assert_eq!(parse_gateway_duration("1h1m1s1ms1s"), None);
    }
}
