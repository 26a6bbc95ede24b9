//! curl, the real HTTP client, run by tests: `curl -sS -i` and its answer parsed.

use std::process::{Command, Output};

/// What a curl run gave: the status (if a response arrived), headers and body, or why not.
#[derive(Debug, Clone, Default)]
pub struct CurlResult {
    /// HTTP status of the final response (after any `1xx`), if one arrived.
    pub status: Option<u16>,
    /// Response headers (lower-case names), in order.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
    /// curl's exit code (0 when a response arrived, whatever its status).
    pub exit: i32,
    /// curl's error message, if it failed.
    pub error: String,
}

/// Runs `curl -sS -i --max-time 20 <args>` on this host and parses what it gave.
pub fn curl(args: &[&str]) -> CurlResult {
    let out = Command::new("curl")
        .args(BASE_ARGS)
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)");
    CurlResult::from_output(&out)
}

/// [`curl`] without blocking the async runtime.
pub async fn curl_async(args: &[&str]) -> CurlResult {
    let out = tokio::process::Command::new("curl")
        .args(BASE_ARGS)
        .args(args)
        .output()
        .await
        .expect("run curl (apt-get install curl)");
    CurlResult::from_output(&out)
}

/// Silent but with errors, response head included, bounded.
const BASE_ARGS: [&str; 4] = ["-sS", "-i", "--max-time", "20"];

impl CurlResult {
    /// Parses the output of a `curl -sS -i ...` run (wherever it ran, e.g. in a network
    /// namespace).
    pub fn from_output(out: &Output) -> CurlResult {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut r = CurlResult {
            exit: out.status.code().unwrap_or(-1),
            error: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ..Default::default()
        };
        let mut rest: &str = &text;
        loop {
            let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
            let mut lines = head.lines();
            r.status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse().ok());
            r.headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            r.body = body.to_string();
            // `100 Continue` and other interim heads come before the real one.
            match r.status {
                Some(100..=199) if body.starts_with("HTTP/") => rest = body,
                _ => return r,
            }
        }
    }

    /// The first value of response header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// A request header as httpbin echoed it (`/headers`, `/get`, `/anything` bodies).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get("headers")?
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    }
}

impl std::fmt::Display for CurlResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}"),
            None => write!(f, "no response (curl exit {}: {})", self.exit, self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str, code: i32) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"curl: (56) Recv failure: Connection reset by peer".to_vec(),
        }
    }

    #[test]
    fn curl_result_parses_status_headers_and_echoed_headers() {
        let r = CurlResult::from_output(&output(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nLocation: /x\r\n\r\n\
             {\"headers\": {\"X-Forwarded-Client-Cert\": \"URI=spiffe://a\"}}",
            0,
        ));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.header("location"), Some("/x"));
        assert_eq!(
            r.echoed_header("x-forwarded-client-cert").as_deref(),
            Some("URI=spiffe://a")
        );
        assert_eq!(r.to_string(), "HTTP 200");
    }

    #[test]
    fn curl_result_skips_an_interim_100_continue() {
        let r = CurlResult::from_output(&output(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nx-id: 7\r\n\r\n{}",
            0,
        ));
        assert_eq!(r.status, Some(201));
        assert_eq!(r.header("X-Id"), Some("7"));
        assert_eq!(r.json(), serde_json::json!({}));
    }

    #[test]
    fn curl_result_without_a_response_says_why() {
        let r = CurlResult::from_output(&output("", 56));
        assert_eq!(r.status, None);
        assert_eq!(r.exit, 56);
        assert!(r.to_string().contains("Connection reset by peer"), "{r}");
    }

    #[test]
    fn curl_runs_the_real_client() {
        // Nothing listens on port 1: curl itself reports the refusal.
        let r = curl(&["http://127.0.0.1:1/"]);
        assert_eq!((r.status, r.exit), (None, 7), "{r}");
    }
}
