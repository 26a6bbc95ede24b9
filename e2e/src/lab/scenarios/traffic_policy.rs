//! The SRE checklist at the native gateway, configured with kubectl the way Istio users
//! write it: retries on an HTTPRoute, a DestinationRule's outlier detection and connection
//! pool, an AuthorizationPolicy allow-list. The failing upstream is real: one endpoint of
//! the Service is an address where nothing listens (connections are refused), beside
//! httpbin.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::Value;

use super::{Lab, hosts, via};
use crate::curl::CurlResult;
use crate::lab::HTTPBIN_PORT;
use crate::testing::POLL;

/// How long an applied object may take to be served (it takes milliseconds).
const CONVERGE: Duration = Duration::from_secs(30);

/// Service `name` with two endpoints on port 8000: httpbin (its Pod, so mTLS) and the
/// echo pod's address, where nothing listens on that port.
fn half_dead_service(lab: &Lab, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{ports: [{{name: http, port: {HTTPBIN_PORT}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {HTTPBIN_PORT}}}]\n\
         endpoints:\n  - addresses: [\"{good}\"]\n    targetRef: {{kind: Pod, name: {pod}}}\n  \
         - addresses: [\"{dead}\"]\n",
        good = lab.httpbin.addr,
        pod = lab.httpbin.name,
        dead = lab.echo.addr,
    )
}

/// An HTTPRoute for `host` to Service `backend`, with `rule_extra` YAML in its rule.
fn route(name: &str, host: &str, backend: &str, rule_extra: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]\n  \
         hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: {HTTPBIN_PORT}}}]\n{rule_extra}"
    )
}

async fn apply(lab: &Lab, yaml: &str) -> anyhow::Result<()> {
    lab.kubectl_ok(&["apply", "-f", "-"], yaml)
        .await
        .map(|_| ())
}

async fn delete(lab: &Lab, yaml: &str) -> anyhow::Result<()> {
    lab.kubectl_ok(&["delete", "-f", "-"], yaml)
        .await
        .map(|_| ())
}

/// Polls `host` from `pod` until `done` holds; returns how long it took.
async fn until(
    lab: &Lab,
    pod: &super::Pod,
    host: &str,
    path: &str,
    done: impl Fn(&CurlResult) -> bool,
) -> anyhow::Result<Duration> {
    let url = format!("http://{}{path}", lab.gateway.at(crate::lab::HTTP_PORT));
    let host_header = format!("Host: {host}");
    let what = format!("{host}{path} from {}", pod.name);
    super::poll(&what, CONVERGE, POLL, async || {
        let r = lab.curl(pod, &["-H", &host_header, &url]).await?;
        Ok(if done(&r) {
            Ok(())
        } else {
            Err(format!("{r} {:?}", r.body))
        })
    })
    .await
}

/// `n` sequential GETs of `path` on `host` from the client pod; the status of each.
async fn statuses(lab: &Lab, host: &str, path: &str, n: usize) -> anyhow::Result<Vec<u16>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = via(lab, &lab.gateway, host, path, &[]).await?;
        out.push(r.status.unwrap_or(0));
    }
    Ok(out)
}

/// The native gateway's access-log entries for `host` (JSON lines on its stdout).
fn access_log(lab: &Lab, host: &str) -> anyhow::Result<Vec<Value>> {
    let log = lab.output(&lab.gateway, "gateway")?;
    Ok(log
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["authority"] == host)
        .collect())
}

pub(super) async fn retries(lab: &mut Lab) -> anyhow::Result<String> {
    const N: usize = 40;
    let (plain, retried) = ("noretry.example.com", "retry.example.com");
    let objects = format!(
        "{}---\n{}---\n{}",
        half_dead_service(lab, "flaky"),
        route("flaky", plain, "flaky", ""),
        route(
            "flaky-retry",
            retried,
            "flaky",
            "    retry: {attempts: 2, codes: [503], backoff: 10ms}\n"
        ),
    );
    apply(lab, &objects).await?;
    for host in [plain, retried] {
        until(lab, &lab.client, host, "/status/200", |r| {
            r.status == Some(200)
        })
        .await?;
    }
    let without = statuses(lab, plain, "/status/200", N).await?;
    let failed = without.iter().filter(|s| **s != 200).count();
    ensure!(
        failed > 0 && without.iter().all(|s| *s == 200 || *s == 503),
        "without retries one endpoint in two refuses connections, yet: {without:?}"
    );
    let with = statuses(lab, retried, "/status/200", N).await?;
    ensure!(with.iter().all(|s| *s == 200), "with retries: {with:?}");
    let second = access_log(lab, retried)?
        .iter()
        .filter(|e| e["path"] == "/status/200" && e["attempts"] == 2)
        .count();
    ensure!(second > 0, "no request needed a second attempt");
    // A listed code is retried until the attempts run out.
    let r = via(lab, &lab.gateway, retried, "/status/503", &[]).await?;
    let entry = access_log(lab, retried)?
        .into_iter()
        .rev()
        .find(|e| e["path"] == "/status/503")
        .context("no access-log line for /status/503")?;
    ensure!(
        r.status == Some(503) && entry["attempts"] == 3,
        "/status/503 with codes [503]: {r}, attempts {}",
        entry["attempts"]
    );
    delete(lab, &objects).await?;
    Ok(format!(
        "no retry: {failed}/{N} failed (503); retry attempts 2: {N}/{N} 200, {second} took a \
         2nd attempt; /status/503 with codes [503]: 3 attempts, then 503"
    ))
}

/// Admin `/debug/backends`: the health report of endpoint `address` of any backend.
async fn endpoint_state(lab: &Lab, address: &str) -> anyhow::Result<Value> {
    let body = lab
        .admin_get(&lab.gateway, &crate::lab::gateway_admin("/debug/backends"))
        .await?;
    let report: Value = serde_json::from_str(&body)?;
    let found = report["backends"]
        .as_object()
        .into_iter()
        .flat_map(|b| b.values())
        .flat_map(|b| b["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["address"] == address);
    found.with_context(|| format!("no endpoint {address} in /debug/backends: {body}"))
}

/// Waits until a backend of the native gateway reports `source` as its policy.
async fn policy_in_force(lab: &Lab, source: &str) -> anyhow::Result<()> {
    let url = crate::lab::gateway_admin("/debug/backends");
    let what = format!("{source} in force");
    super::poll(&what, CONVERGE, POLL, async || {
        let body = lab.admin_get(&lab.gateway, &url).await?;
        Ok(if body.contains(&format!("\"{source}\"")) {
            Ok(())
        } else {
            Err(body)
        })
    })
    .await
    .map(|_| ())
}

pub(super) async fn outlier_detection(lab: &mut Lab) -> anyhow::Result<String> {
    const HOST: &str = "outlier.example.com";
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
              metadata: {name: outlier, namespace: default}\n\
              spec:\n  host: outlier.default.svc.cluster.local\n  trafficPolicy:\n    \
              outlierDetection: {consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 100}\n";
    let objects = format!(
        "{}---\n{}---\n{dr}",
        half_dead_service(lab, "outlier"),
        route("outlier", HOST, "outlier", "")
    );
    apply(lab, &objects).await?;
    // No request before the count: the backend report shows when the rule is in force.
    policy_in_force(lab, "DestinationRule default/outlier").await?;
    let got = statuses(lab, HOST, "/status/200", 30).await?;
    // Endpoints are picked at random (no loadBalancer set), so where the dead one's two
    // requests fall varies; that there are exactly two, and none once it is ejected,
    // does not (without ejection about half of the 30 would fail).
    let failed: Vec<usize> = (0..got.len()).filter(|i| got[*i] != 200).collect();
    ensure!(
        failed.len() == 2,
        "expected exactly the 2 consecutive failures of the dead endpoint and none after \
         its ejection: {got:?}"
    );
    let dead = format!("{}:{HTTPBIN_PORT}", lab.echo.addr);
    let state = endpoint_state(lab, &dead).await?;
    ensure!(
        state["state"] == "ejected" && state["ejections"] == 1,
        "{dead} after two gateway errors: {state}"
    );
    let back = super::poll(
        &format!("{dead} back in rotation"),
        CONVERGE,
        Duration::from_millis(100),
        async || {
            let state = endpoint_state(lab, &dead).await?;
            Ok(if state["state"] == "healthy" {
                Ok(())
            } else {
                Err(state.to_string())
            })
        },
    )
    .await?;
    delete(lab, &objects).await?;
    Ok(format!(
        "{} of 30 failed (requests {failed:?}), then 0: {dead} ejected after 2 gateway errors, \
         back in rotation {:.1} s later (baseEjectionTime 5s)",
        failed.len(),
        back.as_secs_f64()
    ))
}

/// `n` concurrent GETs of `path` on `host` (curl --parallel from the client pod); how
/// many got each status.
async fn concurrent(
    lab: &Lab,
    host: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let url = format!("http://{}{path}", lab.gateway.at(crate::lab::HTTP_PORT));
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.ns,
            "curl",
            "-sS",
            "--max-time",
            "20",
        ])
        .args([
            "-Z",
            "--parallel-immediate",
            "--parallel-max",
            &n.to_string(),
        ])
        .args(["-H", &format!("Host: {host}"), "-o", "/dev/null"])
        .args(["-w", "%{http_code}\\n"])
        .args(std::iter::repeat_n(url.as_str(), n))
        .output()
        .await
        .context("running curl --parallel")?;
    let mut counts = BTreeMap::new();
    for code in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(code.to_string()).or_default() += 1;
    }
    Ok(counts)
}

pub(super) async fn circuit_breaking(lab: &mut Lab) -> anyhow::Result<String> {
    const HOST: &str = "breaker.example.com";
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
              metadata: {name: breaker, namespace: default}\n\
              spec:\n  host: httpbin.default.svc.cluster.local\n  trafficPolicy:\n    \
              connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n";
    let objects = format!("{}---\n{dr}", route("breaker", HOST, "httpbin", ""));
    apply(lab, &objects).await?;
    policy_in_force(lab, "DestinationRule default/breaker").await?;
    until(lab, &lab.client, HOST, "/status/200", |r| {
        r.status == Some(200)
    })
    .await?;
    let counts = concurrent(lab, HOST, "/delay/1", 6).await?;
    let overflowed = access_log(lab, HOST)?
        .iter()
        .filter(|e| e["response_flags"] == "UO" && e["response_code"] == 503)
        .count();
    delete(lab, &objects).await?;
    let (ok, over) = (
        counts.get("200").copied().unwrap_or(0),
        counts.get("503").copied().unwrap_or(0),
    );
    ensure!(
        ok == 2 && over == 4 && overflowed == 4,
        "6 concurrent /delay/1 with 1 connection and 1 pending: {counts:?}, {overflowed} \
         logged UO; expected 2 served and 4 overflowed"
    );
    Ok(format!(
        "6 concurrent /delay/1 through maxConnections 1 + http1MaxPendingRequests 1: {ok} x \
         200, {over} x 503 (access log UO: {overflowed})"
    ))
}

pub(super) async fn ip_allow_list(lab: &mut Lab) -> anyhow::Result<String> {
    const HOST: &str = "allow.example.com";
    let istiod = lab.istiod.clone();
    let policy = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: allow-list, namespace: gateway-system}}\n\
         spec:\n  selector: {{matchLabels: {{app: gateway-proxy}}}}\n  action: ALLOW\n  rules:\n  \
         - to: [{{operation: {{notHosts: [{HOST}]}}}}]\n  \
         - from: [{{source: {{ipBlocks: [\"{}/32\"]}}}}]\n    to: [{{operation: {{hosts: [{HOST}]}}}}]\n",
        istiod.addr
    );
    let objects = format!("{}---\n{policy}", route("allow", HOST, "httpbin", ""));
    apply(lab, &objects).await?;
    let denied = until(lab, &lab.client, HOST, "/get", |r| r.status == Some(403)).await?;
    let r = via(lab, &lab.gateway, HOST, "/get", &[]).await?;
    ensure!(
        r.body.trim() == "RBAC: access denied",
        "the client pod got {r} {:?}",
        r.body
    );
    until(lab, &istiod, HOST, "/get", |r| r.status == Some(200)).await?;
    let other = via(lab, &lab.gateway, hosts::HTTPBIN, "/get", &[]).await?;
    ensure!(
        other.status == Some(200),
        "the allow-list's other rule should keep other hosts open: {other}"
    );
    delete(lab, &objects).await?;
    until(lab, &lab.client, hosts::HTTPBIN, "/get", |r| {
        r.status == Some(200)
    })
    .await?;
    Ok(format!(
        "ALLOW ipBlocks {}/32 for {HOST}: client pod 403 RBAC: access denied (in force after \
         {} ms), istiod's address 200; other hosts 200 from the client",
        istiod.addr,
        denied.as_millis()
    ))
}
