//! Policy state the request path shares across workers: token buckets for local rate
//! limits, and address ranges.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

/// Why a bucket refused: when the next token comes.
#[derive(Debug, Clone, Copy)]
pub struct Empty {
    /// Until a token is available.
    pub wait: Duration,
}

impl TokenBucket {
    /// A full bucket of `requests` refilled at `requests` per `per`.
    pub fn new(requests: u64, per: Duration) -> TokenBucket {
        let capacity = requests as f64;
        TokenBucket {
            capacity,
            per_second: capacity / per.as_secs_f64().max(1e-9),
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token: `Ok(tokens left)`, or when the next one comes.
    pub fn take(&self) -> Result<u64, Empty> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *s;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.capacity);
        if tokens >= 1.0 {
            *s = (tokens - 1.0, now);
            Ok(tokens as u64 - 1)
        } else {
            *s = (tokens, now);
            let wait = (1.0 - tokens) / self.per_second;
            Err(Empty {
                wait: Duration::from_secs_f64(wait),
            })
        }
    }
}

/// Parses `ip/prefix` (a bare address is a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse().ok()?, len.parse().ok()?),
        None => {
            let ip: std::net::IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Whether `ip` lies in the range `net/len`.
pub fn cidr_contains(net: std::net::IpAddr, len: u8, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match (net, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}
