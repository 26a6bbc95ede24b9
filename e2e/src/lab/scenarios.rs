//! The end-to-end suite: the scenarios the product promises, run against a live [`Lab`].
//! Each scenario returns a one-line finding on success and an error saying what it saw
//! on failure; [`run_suite`] times them and prints the table.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use super::config::hosts;
mod istio_seeds;
mod kube;
mod observability;
mod traffic_policy;

use super::{CurlResult, HTTP_PORT, HTTPS_PORT, Lab, LabOptions, MTLS_PORT, Pod, netns};

/// One scenario's outcome.
#[derive(Debug)]
pub struct Outcome {
    /// Scenario number (as the issue lists them).
    pub number: u8,
    /// What it checks.
    pub name: &'static str,
    /// The finding, or why it failed.
    pub result: Result<String, String>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The scenarios run against a live lab, in order; 10 (teardown) runs after them.
const SCENARIOS: &[(u8, &str)] = &[
    (
        1,
        "curl httpbin through the gateway; XFCC names the gateway (both variants)",
    ),
    (
        2,
        "STRICT: direct plaintext to httpbin refused; via the gateway works",
    ),
    (3, "Host-header routing; 404 for a host with no route"),
    (
        4,
        "HTTPS at the edge (openssl certs, --cacert, --resolve); HTTP -> HTTPS 301",
    ),
    (
        5,
        "edge mTLS (MUTUAL): refused without a client cert, accepted with one",
    ),
    (6, "header canary and a 90/10 weighted split"),
    (7, "PathPrefix /httpbin/ rewritten to /, hostname rewritten"),
    (
        8,
        "cert rotation + sds-agent restart under load: zero failed requests",
    ),
    (
        9,
        "sidecar variant: edge ports not captured; client address in X-Forwarded-For",
    ),
    (
        11,
        "misdirected request: SNI public, Host secure on one port -> 421 (h1 and h2)",
    ),
    (
        12,
        "kubernetes: HTTPRoute applied with kubectl -> served; status Accepted",
    ),
    (13, "kubernetes: route hostname changed -> the route moves"),
    (14, "kubernetes: route deleted -> 404"),
    (
        15,
        "kubernetes: API server killed 20 s under wrk: 0 failed; outage change served",
    ),
    (
        16,
        "kubernetes: Pod tlsMode label removed -> STRICT refuses plaintext; back: mTLS",
    ),
    (
        17,
        "kubernetes: EndpointSlice scale-out, terminating, scale-in under wrk: 0 failed",
    ),
    (
        18,
        "Istio Gateway + VirtualService beside Gateway API on one port: XFCC; 404 without host",
    ),
    (
        19,
        "Gloo VirtualService + Upstream default-httpbin-8000 -> httpbin over mTLS (XFCC)",
    ),
    (
        20,
        "local rate limit 100/s under wrk for 5 s: 200s within 10% of the bucket's allowance",
    ),
    (
        21,
        "AuthorizationPolicy DENY by ipBlocks: the client pod 403, another pod's address 200",
    ),
    (
        22,
        "Istio seed: Gateway on 80 + VirtualService to webapp:8080 by Host; 404 without",
    ),
    (
        23,
        "Istio seed: HTTPS SIMPLE from credentialName (--cacert --resolve); httpsRedirect",
    ),
    (
        24,
        "Istio seed: MUTUAL from credentialName: no cert refused, client cert 200",
    ),
    (
        25,
        "Istio seed: two hosts on 443, each with its own certificate by SNI",
    ),
    (26, "Istio seed: TCP echo on 31400 (socat at both ends)"),
    (
        27,
        "Istio seed: SNI passthrough on 31400: the client sees the upstream's certificate",
    ),
    (
        28,
        "kubernetes: secure naming: reviews expected from its Pods; impostor refused",
    ),
    (
        29,
        "kubernetes: two replicas: only the Lease holder writes status; kill -> takeover",
    ),
    (
        30,
        "Kiali: edge gateway -> httpbin edge (mutual_tls) in Prometheus",
    ),
    (31, "one trace across gateway and sidecar"),
    (
        32,
        "SRE: retries: one endpoint refuses connections; HTTPRoute retry -> 0 failed",
    ),
    (
        33,
        "SRE: outlier detection: the refusing endpoint ejected, then back after 5 s",
    ),
    (
        34,
        "SRE: circuit breaking: 1 connection + 1 pending -> the rest 503 UO at once",
    ),
    (
        35,
        "SRE: IP allow-list (AuthorizationPolicy ALLOW ipBlocks) for one host",
    ),
    (
        36,
        "Gloo seed: kubectl apply of the Gloo walkthrough -> httpbin over mTLS (XFCC)",
    ),
];
const TEARDOWN: (u8, &str) = (
    10,
    "teardown leaves no namespaces, processes or iptables rules",
);
/// Upper bound for one scenario (they take seconds; this only stops a hang).
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

/// Builds the lab, runs every scenario (or those in `only`), tears down, and prints a
/// table to `out`. Returns the outcomes (the lab start-up is not a scenario: if it fails,
/// every scenario fails with its error).
pub async fn run_suite(options: LabOptions, only: &[u8], out: &mut dyn Write) -> Vec<Outcome> {
    let selected = |n: u8| only.is_empty() || only.contains(&n);
    let before = host_state();
    let started = Instant::now();
    let _ = writeln!(out, "starting the lab in {} ...", options.dir.display());
    let mut outcomes = Vec::new();
    let mut lab = match Lab::start(options).await {
        Ok(lab) => {
            let _ = writeln!(out, "lab up in {:.1}s\n", started.elapsed().as_secs_f64());
            Some(lab)
        }
        Err(e) => {
            let _ = writeln!(out, "the lab did not start: {e:#}\n");
            for &(number, name) in SCENARIOS {
                if selected(number) {
                    outcomes.push(Outcome {
                        number,
                        name,
                        result: Err(format!("lab did not start: {e:#}")),
                        elapsed: Duration::ZERO,
                    });
                }
            }
            None
        }
    };
    let _ = writeln!(out, "{}", header());
    if let Some(lab) = lab.as_mut() {
        for &(number, name) in SCENARIOS.iter().filter(|(n, _)| selected(*n)) {
            let t = Instant::now();
            let result = match tokio::time::timeout(SCENARIO_LIMIT, run_one(lab, number)).await {
                Ok(Ok(finding)) => Ok(finding),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("did not finish within {SCENARIO_LIMIT:?}")),
            };
            let o = Outcome {
                number,
                name,
                result,
                elapsed: t.elapsed(),
            };
            let _ = writeln!(out, "{}", row(&o));
            outcomes.push(o);
        }
    }
    if selected(TEARDOWN.0) {
        let t = Instant::now();
        let result = match lab {
            Some(lab) => teardown(lab, &before).map_err(|e| format!("{e:#}")),
            None => verify_clean(&before, &[])
                .map(|()| "nothing was left behind by the failed start".to_string())
                .map_err(|e| format!("{e:#}")),
        };
        let o = Outcome {
            number: TEARDOWN.0,
            name: TEARDOWN.1,
            result,
            elapsed: t.elapsed(),
        };
        let _ = writeln!(out, "{}", row(&o));
        outcomes.push(o);
    } else if let Some(lab) = lab {
        let _ = lab.teardown();
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailures:");
        for o in &failed {
            let _ = writeln!(
                out,
                "\n[{}] {}\n{}",
                o.number,
                o.name,
                o.result.as_ref().unwrap_err()
            );
        }
    }
    let passed = outcomes.len() - failed.len();
    let _ = writeln!(
        out,
        "\n{passed} passed, {} failed (total {:.1}s)",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    outcomes
}

fn header() -> String {
    format!(
        "{:>3}  {:<78}  {:<6}  {:>7}  finding\n{}",
        "#",
        "scenario",
        "result",
        "time",
        "-".repeat(130)
    )
}

fn row(o: &Outcome) -> String {
    let (verdict, finding) = match &o.result {
        Ok(f) => ("PASS", f.clone()),
        Err(e) => ("FAIL", e.lines().next().unwrap_or_default().to_string()),
    };
    format!(
        "{:>3}  {:<78}  {:<6}  {:>6.1}s  {}",
        o.number,
        o.name,
        verdict,
        o.elapsed.as_secs_f64(),
        finding
    )
}

async fn run_one(lab: &mut Lab, number: u8) -> anyhow::Result<String> {
    match number {
        1 => xfcc_both_variants(lab).await,
        2 => strict_refuses_plaintext(lab).await,
        3 => host_routing(lab).await,
        4 => edge_https(lab).await,
        5 => edge_mutual(lab).await,
        6 => canary_and_split(lab).await,
        7 => rewrite(lab).await,
        8 => rotation_under_load(lab).await,
        9 => edge_ports_not_captured(lab).await,
        11 => misdirected_request(lab).await,
        12 => kube::route_applied(lab).await,
        13 => kube::hostname_moved(lab).await,
        14 => kube::route_deleted(lab).await,
        15 => kube::apiserver_outage(lab).await,
        16 => kube::pod_relabelled(lab).await,
        17 => kube::endpoints_scaled(lab).await,
        18 => istio_dialect(lab).await,
        19 => gloo_dialect(lab).await,
        20 => rate_limit_under_load(lab).await,
        21 => authz_by_address(lab).await,
        22 => istio_seeds::webapp_on_80(lab).await,
        23 => istio_seeds::webapp_https(lab).await,
        24 => istio_seeds::webapp_mutual(lab).await,
        25 => istio_seeds::two_hosts_by_sni(lab).await,
        26 => istio_seeds::tcp_echo(lab).await,
        27 => istio_seeds::sni_passthrough(lab).await,
        28 => kube::secure_naming(lab).await,
        29 => kube::lease_takeover(lab).await,
        32 => traffic_policy::retries(lab).await,
        36 => istio_seeds::gloo_walkthrough(lab).await,
        33 => traffic_policy::outlier_detection(lab).await,
        34 => traffic_policy::circuit_breaking(lab).await,
        35 => traffic_policy::ip_allow_list(lab).await,
        30 => observability::kiali_edge(lab).await,
        31 => observability::one_trace(lab).await,
        n => bail!("no scenario {n}"),
    }
}

/// What one look at a condition found: done, or not yet (and what was seen instead).
type Probe = anyhow::Result<Result<(), String>>;

/// Polls `probe` every `every` until it is done; how long that took, or an error naming
/// `what` and the last thing seen once `limit` has passed (the lab's one wait loop).
async fn poll(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Probe,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let seen = match probe().await? {
            Ok(()) => return Ok(t0.elapsed()),
            Err(seen) => seen,
        };
        ensure!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}; last seen: {seen}"
        );
        tokio::time::sleep(every).await;
    }
}

/// The fields of the last (nearest) element of an `X-Forwarded-Client-Cert` header.
pub fn xfcc_fields(xfcc: &str) -> Vec<(String, String)> {
    let last = xfcc.rsplit(',').next().unwrap_or_default();
    last.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

fn xfcc_field(xfcc: &str, key: &str) -> Option<String> {
    xfcc_fields(xfcc)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// GET `path` with `Host: host` through `gateway`'s HTTP edge port, from the client pod.
async fn via(
    lab: &Lab,
    gateway: &Pod,
    host: &str,
    path: &str,
    extra: &[&str],
) -> anyhow::Result<CurlResult> {
    let url = format!("http://{}{path}", gateway.at(HTTP_PORT));
    let host_header = format!("Host: {host}");
    let mut args = vec!["-H", host_header.as_str()];
    args.extend_from_slice(extra);
    args.push(&url);
    lab.curl(&lab.client, &args).await
}

/// The XFCC httpbin saw, requiring a 200.
fn xfcc(r: &CurlResult) -> anyhow::Result<String> {
    ensure!(
        r.status == Some(200),
        "expected 200, got {r}; body: {}",
        r.body
    );
    r.echoed_header("X-Forwarded-Client-Cert")
        .with_context(|| format!("httpbin saw no X-Forwarded-Client-Cert; body: {}", r.body))
}

/// Which httpbin deployment answered, by the `By=` (the sidecar's own identity) in XFCC.
fn served_by(lab: &Lab, r: &CurlResult) -> anyhow::Result<&'static str> {
    let by = xfcc_field(&xfcc(r)?, "By").context("XFCC without By=")?;
    for pod in [&lab.httpbin, &lab.httpbin_v2] {
        if by == pod.identity.to_string() {
            return Ok(pod.name);
        }
    }
    bail!("XFCC By={by} is neither httpbin deployment")
}

async fn gateway_certs(lab: &Lab) -> anyhow::Result<serde_json::Value> {
    let body = lab
        .admin_get(&lab.gateway, &super::gateway_admin("/certs"))
        .await?;
    serde_json::from_str(&body).context("gateway /certs is not JSON")
}

async fn xfcc_both_variants(lab: &mut Lab) -> anyhow::Result<String> {
    let mut found = Vec::new();
    for gw in [lab.gateway.clone(), lab.gateway_sidecar.clone()] {
        let r = via(lab, &gw, hosts::HTTPBIN, "/headers", &[]).await?;
        let x = xfcc(&r).with_context(|| format!("{} pod", gw.name))?;
        let uri = xfcc_field(&x, "URI").with_context(|| format!("XFCC without URI: {x}"))?;
        ensure!(
            uri == gw.identity.to_string(),
            "{} pod: XFCC URI={uri}, expected {}",
            gw.name,
            gw.identity
        );
        let by = xfcc_field(&x, "By").unwrap_or_default();
        ensure!(
            by == lab.httpbin.identity.to_string(),
            "XFCC By={by}, expected {}",
            lab.httpbin.identity
        );
        if gw.name == lab.gateway.name {
            // The certificate the gateway presented is the one its SDS client holds.
            let certs = gateway_certs(lab).await?;
            let hash = xfcc_field(&x, "Hash").unwrap_or_default();
            ensure!(
                Some(hash.as_str()) == certs["leaf_sha256"].as_str(),
                "XFCC Hash={hash} is not the gateway's current leaf ({})",
                certs["leaf_sha256"]
            );
        } else {
            // In the sidecar variant the pod's istio-proxy made the mTLS connection.
            let stat = format!(
                "cluster.outbound|{}||httpbin.default.svc.cluster.local.upstream_rq_total",
                super::HTTPBIN_PORT
            );
            let n = lab.envoy_stat(&gw, &stat).await?;
            ensure!(
                n >= 1,
                "the gateway pod's istio-proxy carried no request ({stat} = {n})"
            );
        }
        found.push(format!("{}: URI={uri}", gw.name));
    }
    Ok(found.join("; "))
}

async fn strict_refuses_plaintext(lab: &mut Lab) -> anyhow::Result<String> {
    let stat = "listener.virtualInbound.no_filter_chain_match";
    let before = lab.envoy_stat(&lab.httpbin, stat).await?;
    let url = format!("http://{}/get", lab.httpbin.at(super::HTTPBIN_PORT));
    let direct = lab.curl(&lab.client, &[&url]).await?;
    ensure!(
        direct.status.is_none(),
        "direct plaintext to {url} got {direct}; STRICT should refuse it"
    );
    let after = lab.envoy_stat(&lab.httpbin, stat).await?;
    ensure!(
        after > before,
        "the refusal did not come from httpbin's sidecar ({stat} stayed {before}): was inbound captured?"
    );
    let r = via(lab, &lab.gateway, hosts::HTTPBIN, "/get", &[]).await?;
    ensure!(r.status == Some(200), "through the gateway: {r}");
    Ok(format!(
        "direct: {direct}, refused by the sidecar; via gateway: HTTP 200"
    ))
}

/// The seed walkthrough's Istio objects on the sidecar-layout gateway: its server for
/// [`hosts::WEBAPP`] shares the HTTP edge port with the Gateway API listener.
async fn istio_dialect(lab: &mut Lab) -> anyhow::Result<String> {
    let gw = lab.gateway_sidecar.clone();
    let r = via(lab, &gw, hosts::WEBAPP, "/headers", &[]).await?;
    let x = xfcc(&r).context("Istio VirtualService route")?;
    let uri = xfcc_field(&x, "URI").unwrap_or_default();
    ensure!(
        uri == gw.identity.to_string(),
        "XFCC URI={uri}, expected the gateway pod's {}",
        gw.identity
    );
    let none = via(lab, &gw, "nope.istioinaction.io", "/headers", &[]).await?;
    ensure!(none.status == Some(404), "an unrouted host got {none}");
    let api = via(lab, &gw, hosts::HTTPBIN, "/headers", &[]).await?;
    ensure!(
        api.status == Some(200),
        "the Gateway API route on the same port: {api}"
    );
    Ok(format!(
        "{}: XFCC URI={uri}; other host 404; HTTPRoute host still 200",
        hosts::WEBAPP
    ))
}

/// Gloo's walkthrough: a VirtualService to the Upstream Gloo's discovery names
/// `default-httpbin-8000`, served on the Gateway API HTTP listener.
async fn gloo_dialect(lab: &mut Lab) -> anyhow::Result<String> {
    let gw = lab.gateway_sidecar.clone();
    let r = via(lab, &gw, hosts::GLOO, "/headers", &[]).await?;
    let by = served_by(lab, &r).context("Gloo VirtualService route")?;
    let x = xfcc(&r)?;
    let uri = xfcc_field(&x, "URI").unwrap_or_default();
    ensure!(
        uri == gw.identity.to_string(),
        "XFCC URI={uri}, expected {}",
        gw.identity
    );
    Ok(format!(
        "{}: served by {by} over mTLS, XFCC URI={uri}",
        hosts::GLOO
    ))
}

/// A BackendTrafficPolicy of 100 requests/second on one route, under wrk: a token bucket
/// admits its capacity plus the refill, 100 + 100 x seconds; the rest get 429.
async fn rate_limit_under_load(lab: &mut Lab) -> anyhow::Result<String> {
    let gw = lab.gateway_sidecar.clone();
    let seconds = 5;
    let wrk = start_wrk(lab, &gw, hosts::RATE_LIMITED, Duration::from_secs(seconds));
    let out = wrk.await?.context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "wrk failed: {text}");
    let r = parse_wrk(&text)?;
    ensure!(
        r.socket_errors == 0,
        "socket errors under the limit:\n{text}"
    );
    let admitted = r.requests - r.non_2xx_3xx;
    let per_second = super::config::RATE_LIMIT_PER_SECOND;
    // wrk's duration is measured from its first connection; allow for its ramp.
    let expected = per_second + per_second * seconds;
    let off = (admitted as f64 - expected as f64).abs() / expected as f64;
    ensure!(
        off <= 0.10,
        "{admitted} of {} requests admitted, expected {expected} +-10% ({:.1}% off)",
        r.requests,
        off * 100.0
    );
    Ok(format!(
        "{admitted} admitted of {} in {seconds} s (expected {expected}, {:.1}% off), {} refused with 429",
        r.requests,
        off * 100.0,
        r.non_2xx_3xx
    ))
}

/// An AuthorizationPolicy DENY on the client pod's address (ipBlocks) for one host: the
/// client pod gets Istio's 403, a request from another pod's address is served.
async fn authz_by_address(lab: &mut Lab) -> anyhow::Result<String> {
    let gw = lab.gateway_sidecar.clone();
    let denied = via(lab, &gw, hosts::AUTHZ, "/headers", &[]).await?;
    ensure!(
        denied.status == Some(403) && denied.body.trim() == "RBAC: access denied",
        "from the client pod ({}): {denied}",
        lab.client.addr
    );
    let other = lab.istiod.clone();
    let url = format!("http://{}/headers", gw.at(HTTP_PORT));
    let host = format!("Host: {}", hosts::AUTHZ);
    let allowed = lab.curl(&other, &["-H", &host, &url]).await?;
    ensure!(
        allowed.status == Some(200),
        "from {} ({}): {allowed}",
        other.name,
        other.addr
    );
    let still = via(lab, &gw, hosts::HTTPBIN, "/headers", &[]).await?;
    ensure!(
        still.status == Some(200),
        "other hosts from the client pod: {still}"
    );
    Ok(format!(
        "{} (client pod): 403 RBAC: access denied; {} ({}): 200; other hosts 200",
        lab.client.addr, other.addr, other.name
    ))
}

async fn host_routing(lab: &mut Lab) -> anyhow::Result<String> {
    let a = via(lab, &lab.gateway, hosts::HTTPBIN, "/headers", &[]).await?;
    let b = via(lab, &lab.gateway, hosts::ECHO, "/headers", &[]).await?;
    let (a_pod, b_pod) = (served_by(lab, &a)?, served_by(lab, &b)?);
    ensure!(
        a_pod == lab.httpbin.name,
        "{} was served by {a_pod}",
        hosts::HTTPBIN
    );
    ensure!(
        b_pod == lab.httpbin_v2.name,
        "{} was served by {b_pod}",
        hosts::ECHO
    );
    let none = via(lab, &lab.gateway, "nope.example.com", "/headers", &[]).await?;
    ensure!(
        none.status == Some(404),
        "a host with no route got {none}, expected 404"
    );
    Ok(format!(
        "{} -> {a_pod}, {} -> {b_pod}, nope.example.com -> 404",
        hosts::HTTPBIN,
        hosts::ECHO
    ))
}

fn resolve(host: &str, pod: &Pod) -> String {
    format!("{host}:{HTTPS_PORT}:{}", pod.addr)
}

async fn edge_https(lab: &mut Lab) -> anyhow::Result<String> {
    let ca = lab.certs.server_ca.display().to_string();
    let url = format!("https://{}:{HTTPS_PORT}/headers", hosts::SECURE);
    let pin = resolve(hosts::SECURE, &lab.gateway);
    let ok = lab
        .curl(&lab.client, &["--cacert", &ca, "--resolve", &pin, &url])
        .await?;
    let x = xfcc(&ok).context("HTTPS with --cacert")?;
    ensure!(
        xfcc_field(&x, "URI").as_deref() == Some(lab.gateway.identity.to_string().as_str()),
        "HTTPS request reached httpbin without the gateway's identity: {x}"
    );
    let untrusted = lab.curl(&lab.client, &["--resolve", &pin, &url]).await?;
    ensure!(
        untrusted.status.is_none() && untrusted.exit == 60,
        "without --cacert curl should refuse the edge certificate (exit 60), got {untrusted}"
    );
    let redirect = via(lab, &lab.gateway, hosts::SECURE, "/get?x=1", &[]).await?;
    let location = redirect.header("location").unwrap_or_default().to_string();
    let expected = format!("https://{}:{HTTPS_PORT}/get?x=1", hosts::SECURE);
    ensure!(
        redirect.status == Some(301) && location == expected,
        "HTTP to {} got {redirect} Location {location:?}, expected 301 to {expected}",
        hosts::SECURE
    );
    Ok(format!(
        "HTTPS 200 (untrusted without --cacert: exit 60); HTTP 301 -> {location}"
    ))
}

async fn edge_mutual(lab: &mut Lab) -> anyhow::Result<String> {
    let ca = lab.certs.server_ca.display().to_string();
    let url = format!("https://{}:{MTLS_PORT}/headers", hosts::MTLS);
    let pin = format!("{}:{MTLS_PORT}:{}", hosts::MTLS, lab.gateway.addr);
    let without = lab
        .curl(&lab.client, &["--cacert", &ca, "--resolve", &pin, &url])
        .await?;
    ensure!(
        without.status.is_none(),
        "MUTUAL listener answered without a client certificate: {without}"
    );
    let (cert, key) = (
        lab.certs.client_cert.display().to_string(),
        lab.certs.client_key.display().to_string(),
    );
    let with = lab
        .curl(
            &lab.client,
            &[
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "--resolve",
                &pin,
                &url,
            ],
        )
        .await?;
    xfcc(&with).context("with a client certificate")?;
    // A client certificate from a CA the listener does not trust is refused too.
    let (other, other_key) = (
        lab.certs.rogue_cert.display().to_string(),
        lab.certs.rogue_key.display().to_string(),
    );
    let wrong = lab
        .curl(
            &lab.client,
            &[
                "--cacert",
                &ca,
                "--cert",
                &other,
                "--key",
                &other_key,
                "--resolve",
                &pin,
                &url,
            ],
        )
        .await?;
    ensure!(
        wrong.status.is_none(),
        "a client certificate from an untrusted CA was accepted: {wrong}"
    );
    Ok(format!(
        "no cert: curl exit {}; untrusted cert: exit {}; client cert: HTTP 200",
        without.exit, wrong.exit
    ))
}

async fn canary_and_split(lab: &mut Lab) -> anyhow::Result<String> {
    for _ in 0..5 {
        let canary = via(
            lab,
            &lab.gateway,
            hosts::HTTPBIN,
            "/headers",
            &["-H", "x-canary: true"],
        )
        .await?;
        let pod = served_by(lab, &canary)?;
        ensure!(
            pod == lab.httpbin_v2.name,
            "x-canary: true was served by {pod}"
        );
        let stable = via(
            lab,
            &lab.gateway,
            hosts::HTTPBIN,
            "/headers",
            &["-H", "x-canary: false"],
        )
        .await?;
        let pod = served_by(lab, &stable)?;
        ensure!(
            pod == lab.httpbin.name,
            "x-canary: false was served by {pod}"
        );
    }
    const N: usize = 200;
    let bodies = many(lab, &lab.gateway, hosts::HTTPBIN, "/split/headers", N).await?;
    let mut v2 = 0;
    for body in &bodies {
        let r = CurlResult {
            status: Some(200),
            body: body.clone(),
            ..Default::default()
        };
        if served_by(lab, &r)? == lab.httpbin_v2.name {
            v2 += 1;
        }
    }
    // Binomial(200, 0.1): mean 20, sd 4.2; [6, 40] is beyond 3 sd on either side.
    ensure!(
        (6..=40).contains(&v2),
        "90/10 split sent {v2} of {N} requests to httpbin-v2"
    );
    Ok(format!(
        "canary header -> httpbin-v2 5/5; split: {} v1 / {v2} v2 of {N}",
        N - v2
    ))
}

/// `n` GETs over one curl process (one kept-alive connection); returns the bodies, each
/// of which must have been a 200.
async fn many(
    lab: &Lab,
    gateway: &Pod,
    host: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    const SEP: &str = "\n@@meshlab-end@@ ";
    let url = format!("http://{}{path}", gateway.at(HTTP_PORT));
    let host_header = format!("Host: {host}");
    let write_out = format!("{SEP}%{{http_code}}@@\n");
    let mut args = vec!["-H", host_header.as_str(), "-w", write_out.as_str()];
    args.extend(std::iter::repeat_n(url.as_str(), n));
    let out = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.ns,
            "curl",
            "-sS",
            "--max-time",
            "60",
        ])
        .args(&args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    // body1 SEP code1@@ body2 SEP code2@@ ... bodyN SEP codeN@@
    let mut parts = text.split(SEP);
    let mut bodies = vec![parts.next().unwrap_or_default().to_string()];
    let mut codes = Vec::new();
    for part in parts {
        let (code, next_body) = part.split_once("@@\n").unwrap_or((part, ""));
        codes.push(code.to_string());
        bodies.push(next_body.to_string());
    }
    bodies.pop();
    ensure!(
        codes.len() == n && codes.iter().all(|c| c == "200"),
        "expected {n} x 200, got {} responses ({:?}...); curl: {}",
        codes.len(),
        &codes[..codes.len().min(5)],
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(bodies)
}

async fn rewrite(lab: &mut Lab) -> anyhow::Result<String> {
    let r = via(
        lab,
        &lab.gateway,
        hosts::HTTPBIN,
        "/httpbin/anything/deep/path?q=1",
        &[],
    )
    .await?;
    ensure!(r.status == Some(200), "rewritten request got {r}");
    let v: serde_json::Value = serde_json::from_str(&r.body).context("httpbin /anything body")?;
    let url = v["url"].as_str().unwrap_or_default();
    let expected = format!("http://{}/anything/deep/path?q=1", hosts::REWRITTEN);
    ensure!(
        url == expected,
        "httpbin saw {url:?}, expected {expected:?}"
    );
    let host = r.echoed_header("Host").unwrap_or_default();
    ensure!(
        host == hosts::REWRITTEN,
        "httpbin saw Host {host:?}, expected {}",
        hosts::REWRITTEN
    );
    Ok(format!("/httpbin/anything/deep/path -> {url}"))
}

/// wrk's verdict: requests completed and every kind of failure it counts.
#[derive(Debug, Default)]
struct WrkReport {
    requests: u64,
    non_2xx_3xx: u64,
    socket_errors: u64,
    rps: f64,
}

/// Starts wrk (2 threads, 8 connections, `GET /status/200` with `Host: host`) from the
/// client pod through `gateway`'s HTTP edge port for `load`.
fn start_wrk(
    lab: &Lab,
    gateway: &Pod,
    host: &str,
    load: Duration,
) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    let url = format!("http://{}/status/200", gateway.at(HTTP_PORT));
    let wrk = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lab.client.ns, "wrk", "-t2", "-c8"])
        .args(["--timeout", "5s", &format!("-d{}s", load.as_secs())])
        .args(["-H", &format!("Host: {host}"), &url])
        .output();
    tokio::spawn(wrk)
}

fn parse_wrk(text: &str) -> anyhow::Result<WrkReport> {
    let mut r = WrkReport::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = rest.trim().parse()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 1, write 0, timeout 0"
            r.socket_errors = rest
                .split(',')
                .filter_map(|f| f.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            r.rps = rest.trim().parse()?;
        } else if line.contains(" requests in ") {
            r.requests = line.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    ensure!(r.requests > 0, "wrk completed no requests:\n{text}");
    Ok(r)
}

async fn rotation_under_load(lab: &mut Lab) -> anyhow::Result<String> {
    const LOAD: Duration = Duration::from_secs(24);
    let gw = lab.gateway.clone();
    let first = gateway_certs(lab).await?["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(
        !first.is_empty(),
        "the gateway holds no certificate before the test"
    );
    let before_hash = xfcc_field(
        &xfcc(&via(lab, &gw, hosts::HTTPBIN, "/headers", &[]).await?)?,
        "Hash",
    );

    let wrk = start_wrk(lab, &gw, hosts::HTTPBIN, LOAD);

    // Watch the serial the gateway uses while the load runs.
    let mut serials = vec![first.clone()];
    let note = |serials: &mut Vec<String>, s: String| {
        if !s.is_empty() && serials.last() != Some(&s) {
            serials.push(s);
        }
    };
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Restart the gateway pod's sds-agent; the new one issues 12 s certificates, so it
    // also rotates (at half-life, ~6 s) while the load still runs.
    lab.restart_agent(&gw, Some("12s")).await?;
    let restarted_at = t0.elapsed();
    while t0.elapsed() < LOAD - Duration::from_secs(1) {
        if let Ok(c) = gateway_certs(lab).await {
            note(
                &mut serials,
                c["serial"].as_str().unwrap_or_default().to_string(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = wrk.await?.context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = parse_wrk(&text)?;
    let distinct: BTreeSet<&String> = serials.iter().collect();
    ensure!(
        distinct.len() >= 3,
        "expected the restart and a rotation to give the gateway >= 3 certificates, saw {serials:?} (restart at {restarted_at:?})"
    );
    ensure!(
        report.non_2xx_3xx == 0 && report.socket_errors == 0,
        "{} requests, {} non-2xx/3xx, {} socket errors:\n{text}",
        report.requests,
        report.non_2xx_3xx,
        report.socket_errors
    );
    // Upstream connections now present the newest certificate. The agent still rotates
    // every ~6 s, so the leaf is read before and after the request, and a request that a
    // rotation overtook is asked again (three times at most).
    let mut hash = None;
    let mut stable = None;
    for _ in 0..3 {
        let leaf = gateway_certs(lab).await?["leaf_sha256"].clone();
        let after = xfcc(&via(lab, &gw, hosts::HTTPBIN, "/headers", &[]).await?)?;
        hash = xfcc_field(&after, "Hash");
        if gateway_certs(lab).await?["leaf_sha256"] == leaf {
            stable = Some(leaf);
            break;
        }
    }
    let leaf = stable.context("the gateway's certificate changed around each of 3 requests")?;
    ensure!(
        hash != before_hash,
        "httpbin still sees the first certificate (XFCC Hash unchanged)"
    );
    ensure!(
        hash.as_deref() == leaf.as_str(),
        "XFCC Hash {hash:?} is not the gateway's current leaf {leaf}"
    );
    Ok(format!(
        "{} requests ({:.0}/s), 0 failed; gateway certs: {} (restart + rotation)",
        report.requests,
        report.rps,
        distinct.len()
    ))
}

async fn edge_ports_not_captured(lab: &mut Lab) -> anyhow::Result<String> {
    let gws = lab.gateway_sidecar.clone();
    let stat = "listener.virtualInbound.downstream_cx_total";
    let captured_before = lab.envoy_stat(&gws, stat).await?;
    // httpbin hides X-Forwarded-* unless asked with show_env.
    let r = via(lab, &gws, hosts::HTTPBIN, "/headers?show_env=1", &[]).await?;
    ensure!(
        r.status == Some(200),
        "edge request to the sidecar variant: {r}"
    );
    let xff = r
        .echoed_header("X-Forwarded-For")
        .context("httpbin saw no X-Forwarded-For")?;
    let first = xff.split(',').next().unwrap_or_default().trim().to_string();
    ensure!(
        first == lab.client.addr.to_string(),
        "X-Forwarded-For is {xff:?}: the gateway did not see the client's address {}",
        lab.client.addr
    );
    let captured_after = lab.envoy_stat(&gws, stat).await?;
    ensure!(
        captured_after == captured_before,
        "the edge connection went through the istio-proxy's inbound listener ({stat} {captured_before} -> {captured_after})"
    );
    // A non-edge port of the same pod is captured: the proxy's inbound listener takes it.
    let other = format!("http://{}/", gws.at(9999));
    let _ = lab.curl(&lab.client, &["--max-time", "3", &other]).await?;
    let captured_other = lab.envoy_stat(&gws, stat).await?;
    ensure!(
        captured_other > captured_after,
        "a non-edge port was not captured either ({stat} stayed {captured_after}); is capture on?"
    );
    Ok(format!(
        "X-Forwarded-For: {xff}; port 9999 captured, {HTTP_PORT} not"
    ))
}

/// The TLS handshake names [`hosts::PUBLIC`] (its own listener and route on the HTTPS
/// port) while `Host` names [`hosts::SECURE`], another listener on the same port: the
/// gateway must answer 421 `misdirected_request` over HTTP/1.1 and HTTP/2 (RFC 9110
/// §15.5.20; Gateway API listener isolation) and never serve the secure route.
async fn misdirected_request(lab: &mut Lab) -> anyhow::Result<String> {
    let ca = lab.certs.server_ca.display().to_string();
    let pin = resolve(hosts::PUBLIC, &lab.gateway);
    let url = format!("https://{}:{HTTPS_PORT}/headers", hosts::PUBLIC);
    let own = lab
        .curl(&lab.client, &["--cacert", &ca, "--resolve", &pin, &url])
        .await?;
    let pod = served_by(lab, &own).context("the public route itself")?;
    ensure!(
        pod == lab.httpbin_v2.name,
        "{} was served by {pod}, expected its own route (httpbin-v2)",
        hosts::PUBLIC
    );
    let secure_host = format!("Host: {}", hosts::SECURE);
    let mut found = Vec::new();
    for version in ["--http1.1", "--http2"] {
        let r = lab
            .curl(
                &lab.client,
                &[
                    version,
                    "--cacert",
                    &ca,
                    "--resolve",
                    &pin,
                    "-H",
                    &secure_host,
                    &url,
                ],
            )
            .await?;
        ensure!(
            r.status == Some(421),
            "{version}: SNI {} with {secure_host} got {r}, expected 421",
            hosts::PUBLIC
        );
        ensure!(
            r.body.starts_with("421 misdirected_request (request id "),
            "{version}: 421 body is {:?}, expected `421 misdirected_request (request id ...)`",
            r.body
        );
        ensure!(
            r.echoed_header("X-Forwarded-Client-Cert").is_none(),
            "{version}: the 421 carries an upstream's answer: {}",
            r.body
        );
        found.push(format!("{version}: 421 misdirected_request"));
    }
    Ok(format!(
        "{} own route -> httpbin-v2; Host {}: {}",
        hosts::PUBLIC,
        hosts::SECURE,
        found.join(", ")
    ))
}

/// What the host looked like before the lab: its namespaces and its iptables rules.
#[derive(Debug, Clone)]
pub struct HostState {
    iptables: String,
    ip6tables: String,
    links: String,
}

fn rules(cmd: &str) -> String {
    let out = std::process::Command::new(cmd).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // Comments carry timestamps and chain lines packet counters; neither is a rule.
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            Some((chain, _)) if l.starts_with(':') => chain.to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    names.sort();
    names.join(" ")
}

/// Captures the host's iptables rules and interfaces.
pub fn host_state() -> HostState {
    HostState {
        iptables: rules("iptables-save"),
        ip6tables: rules("ip6tables-save"),
        links: links(),
    }
}

fn teardown(lab: Lab, before: &HostState) -> anyhow::Result<String> {
    let pids = lab.pids();
    let dir = lab.options().dir.clone();
    lab.teardown()?;
    verify_clean(before, &pids)?;
    Ok(format!(
        "{} processes stopped, namespaces removed, host rules unchanged ({})",
        pids.len(),
        dir.display()
    ))
}

fn verify_clean(before: &HostState, pids: &[i32]) -> anyhow::Result<()> {
    let left = netns::existing();
    ensure!(left.is_empty(), "namespaces left: {}", left.join(", "));
    // SAFETY: kill(2) with signal 0 only checks whether the pid exists.
    let alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| unsafe { libc::kill(p, 0) } == 0)
        .collect();
    ensure!(alive.is_empty(), "processes still running: {alive:?}");
    let after = host_state();
    ensure!(
        after.iptables == before.iptables,
        "host iptables rules changed:\nbefore:\n{}\nafter:\n{}",
        before.iptables,
        after.iptables
    );
    ensure!(
        after.ip6tables == before.ip6tables,
        "host ip6tables rules changed"
    );
    ensure!(
        after.links == before.links,
        "host interfaces changed: before [{}], after [{}]",
        before.links,
        after.links
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_fields_reads_the_nearest_element_and_unquotes() {
        let x = "By=spiffe://a;URI=spiffe://old,By=spiffe://cluster.local/ns/default/sa/httpbin;\
                 Hash=abc;Subject=\"\";URI=spiffe://cluster.local/ns/gw/sa/gw";
        assert_eq!(
            xfcc_field(x, "URI").as_deref(),
            Some("spiffe://cluster.local/ns/gw/sa/gw")
        );
        assert_eq!(
            xfcc_field(x, "by").as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/httpbin")
        );
        assert_eq!(xfcc_field(x, "Subject").as_deref(), Some(""));
        assert_eq!(xfcc_field(x, "DNS"), None);
    }

    #[test]
    fn parse_wrk_counts_every_failure_kind() {
        let clean = "Running 24s test @ http://10.77.0.10:8080/status/200\n  2 threads and 8 connections\n  \
                     33142 requests in 24.07s, 5.12MB read\nRequests/sec:   1377.01\nTransfer/sec:    217.71KB\n";
        let r = parse_wrk(clean).unwrap();
        assert_eq!((r.requests, r.non_2xx_3xx, r.socket_errors), (33142, 0, 0));
        assert!((r.rps - 1377.01).abs() < 1e-6);
        let failing = "  100 requests in 1.00s, 1KB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  \
                       Non-2xx or 3xx responses: 7\nRequests/sec: 100.00\n";
        let r = parse_wrk(failing).unwrap();
        assert_eq!((r.requests, r.non_2xx_3xx, r.socket_errors), (100, 7, 6));
        assert!(parse_wrk("unable to connect to 10.77.0.10:8080 Connection refused\n").is_err());
    }
}
