//! The per-attempt hook: every upstream feature (retries, outlier detection, circuit
//! breaking, metrics, tracing spans) observes or gates one attempt — endpoint pick,
//! connect, TLS, send, response — through [`AttemptHook`]; the one loop that runs
//! attempts lives in the proxy (`proxy::attempt`) and no feature re-implements it.

use std::sync::Arc;
use std::time::Duration;

use crate::observe::metrics::Metrics;

/// What one upstream attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status arrived (its body may still be streaming).
    Response(u16),
    /// TCP connect failed or was refused (`UF`).
    ConnectFailure,
    /// No response within the deadline (`UT`).
    Timeout,
    /// The connection was closed or reset before a response (`UC`).
    Reset,
    /// The mesh mTLS handshake failed (reason code, e.g. `mesh_identity_mismatch`).
    MeshRefused(&'static str),
    /// The upstream spoke something that was not HTTP.
    ProtocolError,
    /// The downstream client's request body failed while it was being sent (`DPE`,
    /// Envoy's downstream protocol error): not the upstream's fault.
    DownstreamError,
    /// The request was cut short while the attempt waited for its upstream, with
    /// Envoy's flag for why (`DC` the client closed its connection, `DR` it reset its
    /// HTTP/2 stream, `SI` the stream idle timeout): the attempt was abandoned, neither
    /// the upstream's fault nor retried.
    Cancelled(&'static str),
}

impl Outcome {
    /// Envoy's response flag or our reason code, for logs, metrics and error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Response(_) => "-",
            Outcome::ConnectFailure => "UF",
            Outcome::Timeout => "UT",
            Outcome::Reset => "UC",
            Outcome::MeshRefused(code) => code,
            Outcome::ProtocolError => "UPE",
            Outcome::DownstreamError => "DPE",
            Outcome::Cancelled(code) => code,
        }
    }

    /// Whether it was a gateway error (502/503/504 or no response), as retry and outlier
    /// policies classify it.
    pub fn is_gateway_error(self) -> bool {
        match self {
            Outcome::Response(s) => matches!(s, 502..=504),
            Outcome::DownstreamError | Outcome::Cancelled(_) => false,
            _ => true,
        }
    }
}

/// Which attempt of which request, to which endpoint.
#[derive(Debug, Clone, Copy)]
pub struct AttemptInfo<'a> {
    /// The backend (`Service ns/name:port`).
    pub backend: &'a Arc<str>,
    /// The endpoint address or DNS authority.
    pub endpoint: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Observes (and may refuse) upstream attempts.
pub trait AttemptHook: Send + Sync {
    /// Before connecting: `Err(code)` refuses the attempt (e.g. `UO` on overflow).
    fn admit(&self, _info: &AttemptInfo<'_>) -> Result<(), &'static str> {
        Ok(())
    }

    /// After the attempt ended (response headers, or failure).
    fn finished(&self, info: &AttemptInfo<'_>, outcome: Outcome, elapsed: Duration);
}

/// The hooks of this process, run in order; cheap to clone.
#[derive(Clone, Default)]
pub struct AttemptHooks(Arc<[Arc<dyn AttemptHook>]>);

impl AttemptHooks {
    /// Installs hooks, run in this order.
    pub fn new(hooks: Vec<Arc<dyn AttemptHook>>) -> AttemptHooks {
        AttemptHooks(hooks.into())
    }

    /// The first refusal, if any hook refuses.
    pub fn admit(&self, info: &AttemptInfo<'_>) -> Result<(), &'static str> {
        self.0.iter().try_for_each(|h| h.admit(info))
    }

    /// Tells every hook how the attempt ended.
    pub fn finished(&self, info: &AttemptInfo<'_>, outcome: Outcome, elapsed: Duration) {
        for h in self.0.iter() {
            h.finished(info, outcome, elapsed);
        }
    }
}

/// Counts attempts by backend and outcome.
pub struct AttemptMetrics(pub Arc<Metrics>);

impl AttemptHook for AttemptMetrics {
    fn finished(&self, info: &AttemptInfo<'_>, outcome: Outcome, _elapsed: Duration) {
        self.0.attempt(info.backend, outcome);
    }
}

/// When a failed attempt is tried again (on another endpoint when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub attempts: u32,
    /// Retry connect failures.
    pub on_connect_failure: bool,
    /// Retry resets before a response.
    pub on_reset: bool,
    /// Retry 502, 503, 504 and failures without a response.
    pub on_gateway_error: bool,
    /// Retry these response codes.
    pub on_status: Vec<u16>,
    /// Retry an answer whose headers carry one of these gRPC statuses.
    pub on_grpc_status: Vec<u8>,
    /// Retry an attempt that reached its per-try timeout.
    pub on_timeout: bool,
    /// Wait before the first retry, doubled for each further one (capped at 10x).
    pub backoff: Duration,
    /// Retry budget: share (percent) of the backend's active requests that may be retries.
    pub budget_percent: u32,
    /// Retry budget: concurrent retries always allowed.
    pub min_retry_concurrency: u32,
    /// Largest body buffered for replay.
    pub max_replay_body_bytes: u64,
}

impl RetryPolicy {
    /// One attempt, no retry (the default for a route without a retry policy).
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        on_connect_failure: false,
        on_reset: false,
        on_gateway_error: false,
        on_status: Vec::new(),
        on_grpc_status: Vec::new(),
        on_timeout: false,
        backoff: Duration::ZERO,
        budget_percent: 0,
        min_retry_concurrency: 0,
        max_replay_body_bytes: 0,
    };

    /// The runtime policy of a route's `retry`.
    pub fn from_ir(r: &crate::ir::Retry) -> RetryPolicy {
        RetryPolicy {
            attempts: r.retries.saturating_add(1),
            on_connect_failure: r.on_connect_failure,
            on_reset: r.on_reset,
            on_gateway_error: false,
            on_status: r.codes.clone(),
            on_grpc_status: r.grpc_statuses.clone(),
            on_timeout: r.retry_timeouts,
            backoff: r.backoff,
            budget_percent: r.budget_percent,
            min_retry_concurrency: r.min_retry_concurrency,
            max_replay_body_bytes: r.max_replay_body_bytes,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(4);
        (self.backoff * factor).min(self.backoff * 10)
    }

    /// Whether attempt number `attempt` (1-based), answered with `headers`, is retried for
    /// the gRPC status they carry (a Trailers-Only answer; Envoy reads no trailers for it).
    pub fn should_retry_grpc(&self, attempt: u32, headers: &http::HeaderMap) -> bool {
        attempt < self.attempts
            && !self.on_grpc_status.is_empty()
            && headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<u8>().ok())
                .is_some_and(|s| self.on_grpc_status.contains(&s))
    }

    /// Whether attempt number `attempt` (1-based) that ended in `outcome` is retried.
    pub fn should_retry(&self, attempt: u32, outcome: Outcome) -> bool {
        if attempt >= self.attempts {
            return false;
        }
        match outcome {
            Outcome::Response(s) => {
                self.on_status.contains(&s) || (self.on_gateway_error && outcome.is_gateway_error())
            }
            Outcome::ConnectFailure => self.on_connect_failure || self.on_gateway_error,
            Outcome::Reset => self.on_reset || self.on_gateway_error,
            // A per-attempt timeout is answered 504 by the gateway: retried as a 504, or
            // always where the route's API says so.
            Outcome::Timeout => {
                self.on_timeout || self.on_gateway_error || self.on_status.contains(&504)
            }
            Outcome::ProtocolError => self.on_gateway_error,
            Outcome::MeshRefused(_) | Outcome::DownstreamError | Outcome::Cancelled(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_policy_never_retries() {
        assert!(!RetryPolicy::NONE.should_retry(1, Outcome::ConnectFailure));
        assert!(!RetryPolicy::NONE.should_retry(1, Outcome::Response(503)));
    }

    #[test]
    fn gateway_error_retries_5xx_gateway_codes_and_failures_until_attempts_run_out() {
        let p = RetryPolicy {
            attempts: 3,
            on_gateway_error: true,
            ..RetryPolicy::NONE
        };
        assert!(p.should_retry(1, Outcome::Response(503)));
        assert!(p.should_retry(2, Outcome::Reset));
        assert!(!p.should_retry(3, Outcome::Response(503)));
        assert!(!p.should_retry(1, Outcome::Response(500)));
        assert!(!p.should_retry(1, Outcome::MeshRefused("mesh_identity_mismatch")));
    }

    #[test]
    fn a_grpc_status_in_the_answers_headers_is_retried_when_listed() {
        let p = RetryPolicy {
            attempts: 2,
            on_grpc_status: vec![14],
            ..RetryPolicy::NONE
        };
        let headers = |s: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", s.parse().unwrap());
            h
        };
        assert!(p.should_retry_grpc(1, &headers("14")));
        assert!(!p.should_retry_grpc(2, &headers("14")), "attempts ran out");
        assert!(!p.should_retry_grpc(1, &headers("13")));
        assert!(!p.should_retry_grpc(1, &http::HeaderMap::new()));
    }

    #[test]
    fn a_per_attempt_timeout_is_retried_when_504_is_a_retry_code() {
        let p = RetryPolicy {
            attempts: 2,
            on_status: vec![504],
            ..RetryPolicy::NONE
        };
        assert!(p.should_retry(1, Outcome::Timeout));
        let only_503 = RetryPolicy {
            on_status: vec![503],
            ..p
        };
        assert!(!only_503.should_retry(1, Outcome::Timeout));
    }

    #[test]
    fn a_refusing_hook_stops_the_attempt_with_its_code() {
        struct Overflow;
        impl AttemptHook for Overflow {
            fn admit(&self, _: &AttemptInfo<'_>) -> Result<(), &'static str> {
                Err("UO")
            }
            fn finished(&self, _: &AttemptInfo<'_>, _: Outcome, _: Duration) {}
        }
        let hooks = AttemptHooks::new(vec![Arc::new(Overflow)]);
        let backend = Arc::from("b");
        let info = AttemptInfo {
            backend: &backend,
            endpoint: "e",
            attempt: 1,
        };
        assert_eq!(hooks.admit(&info), Err("UO"));
    }
}
