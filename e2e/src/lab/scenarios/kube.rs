//! Scenarios on the Kubernetes provider: the native gateway pod watches the lab's API
//! server, and the real kubectl changes objects from the host.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;

use super::{Lab, WrkReport, hosts, parse_wrk, served_by, via, xfcc, xfcc_field};
use crate::curl::CurlResult;

/// How long a change may take to show at the gateway (it takes milliseconds; this only
/// bounds the poll).
const CONVERGE: Duration = Duration::from_secs(30);
/// The route the apply/move/delete scenarios drive.
const ROUTE: &str = "kube-demo";
/// Its first hostname, and where it moves to.
const FIRST_HOST: &str = "kube.example.com";
const MOVED_HOST: &str = "moved.example.com";
/// The route written while the API server is down.
const OUTAGE_HOST: &str = "outage.example.com";
/// The gateway's Service annotation choosing upstream TLS (`auto`, `istio-mutual`,
/// `disable`).
const UPSTREAM_TLS_ANNOTATION: &str = "meshgate.io/upstream-tls";

fn route_yaml(name: &str, host: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]\n  hostnames: [{host}]\n  \
         rules:\n  - backendRefs: [{{name: {backend}, port: {port}}}]\n",
        port = crate::lab::HTTPBIN_PORT
    )
}

/// Polls `GET /get` with `Host: host` through the native gateway every 25 ms until `done`
/// holds for the response; returns how long it took, or the last response on timeout.
async fn wait_for(
    lab: &Lab,
    host: &str,
    what: &str,
    done: impl Fn(&CurlResult) -> bool,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let r = via(lab, &lab.gateway, host, "/get", &[]).await?;
        if done(&r) {
            return Ok(t0.elapsed());
        }
        ensure!(
            t0.elapsed() < CONVERGE,
            "{host}: {what} not seen within {CONVERGE:?}; last: {r}, body {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_is(code: u16) -> impl Fn(&CurlResult) -> bool {
    move |r| r.status == Some(code)
}

/// The conditions of our Gateway's entry in the route's `status.parents`, as
/// `Type=Status`.
fn our_conditions(route: &Value) -> Vec<String> {
    let parents = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    parents
        .iter()
        .filter(|p| p["controllerName"] == "meshgate.io/gateway-controller")
        .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            format!(
                "{}={}",
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

pub(super) async fn route_applied(lab: &mut Lab) -> anyhow::Result<String> {
    let before = via(lab, &lab.gateway, FIRST_HOST, "/get", &[]).await?;
    ensure!(
        before.status == Some(404),
        "{FIRST_HOST} answered {before} before its route existed"
    );
    let yaml = route_yaml(ROUTE, FIRST_HOST, "httpbin");
    let t0 = Instant::now();
    lab.kubectl_ok(&["apply", "-f", "-"], &yaml).await?;
    let applied = t0.elapsed();
    let served = wait_for(lab, FIRST_HOST, "200", status_is(200)).await? + applied;
    // The gateway (the status Lease holder) reports the route Accepted and resolved.
    let t1 = Instant::now();
    let conditions = loop {
        let out = lab
            .kubectl_ok(&["get", "httproute", ROUTE, "-o", "json"], "")
            .await?;
        let route: Value = serde_json::from_str(&out).context("kubectl get -o json")?;
        let c = our_conditions(&route);
        if c.iter().any(|c| c == "Accepted=True") && c.iter().any(|c| c == "ResolvedRefs=True") {
            break c;
        }
        ensure!(
            t1.elapsed() < CONVERGE,
            "route status never showed Accepted=True, ResolvedRefs=True: {}",
            route["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(format!(
        "kubectl apply -> 200 in {} ms (kubectl itself {} ms); status {}",
        served.as_millis(),
        applied.as_millis(),
        conditions.join(", ")
    ))
}

pub(super) async fn hostname_moved(lab: &mut Lab) -> anyhow::Result<String> {
    let yaml = route_yaml(ROUTE, MOVED_HOST, "httpbin");
    let t0 = Instant::now();
    lab.kubectl_ok(&["apply", "-f", "-"], &yaml).await?;
    wait_for(lab, MOVED_HOST, "200", status_is(200)).await?;
    let moved = t0.elapsed();
    wait_for(lab, FIRST_HOST, "404", status_is(404)).await?;
    Ok(format!(
        "{FIRST_HOST} -> {MOVED_HOST}: new host 200 after {} ms, old host 404",
        moved.as_millis()
    ))
}

pub(super) async fn route_deleted(lab: &mut Lab) -> anyhow::Result<String> {
    let t0 = Instant::now();
    lab.kubectl_ok(&["delete", "httproute", ROUTE], "").await?;
    wait_for(lab, MOVED_HOST, "404", status_is(404)).await?;
    let gone = via(lab, &lab.gateway, MOVED_HOST, "/get", &[]).await?;
    ensure!(
        gone.body.starts_with("404 NR "),
        "the deleted route's host got {gone} with body {:?}, expected `404 NR ...`",
        gone.body
    );
    Ok(format!(
        "kubectl delete -> 404 NR after {} ms",
        t0.elapsed().as_millis()
    ))
}

/// wrk's report, which must show no failed request.
async fn wrk_without_failures(
    wrk: tokio::task::JoinHandle<std::io::Result<std::process::Output>>,
) -> anyhow::Result<WrkReport> {
    let out = wrk.await?.context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = parse_wrk(&text)?;
    ensure!(
        report.non_2xx_3xx == 0 && report.socket_errors == 0,
        "{} requests, {} non-2xx/3xx, {} socket errors:\n{text}",
        report.requests,
        report.non_2xx_3xx,
        report.socket_errors
    );
    Ok(report)
}

pub(super) async fn apiserver_outage(lab: &mut Lab) -> anyhow::Result<String> {
    const OUTAGE: Duration = Duration::from_secs(20);
    const LOAD: Duration = Duration::from_secs(30);
    let wrk = super::start_wrk(lab, &lab.gateway, hosts::HTTPBIN, LOAD);
    tokio::time::sleep(Duration::from_secs(2)).await;

    lab.kill_apiserver()?;
    let down_at = Instant::now();
    // While it is down, the change lands in what the API server will come back with (as
    // an object written to etcd by another API server replica would).
    let change = lab.apiserver.dir.join("outage-change.yaml");
    std::fs::write(&change, route_yaml("outage", OUTAGE_HOST, "httpbin-v2"))?;
    let refused = lab.kubectl(&["get", "httproutes"], "").await?;
    ensure!(
        !refused.ok,
        "kubectl still reached the API server after it was killed"
    );
    // The gateway stays ready and keeps serving the last good table.
    let ready = lab
        .curl(&lab.gateway, &[&crate::lab::gateway_admin("/ready")])
        .await?;
    ensure!(
        ready.status == Some(200),
        "the gateway left readiness during the outage: {ready}"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    lab.restart_apiserver(Some(&change)).await?;
    let back_at = Instant::now();
    let down_for = down_at.elapsed();
    wait_for(lab, OUTAGE_HOST, "200", status_is(200)).await?;
    let picked_up = back_at.elapsed();
    let report = wrk_without_failures(wrk).await?;
    Ok(format!(
        "down {:.1}s: {} requests ({:.0}/s), 0 failed; outage change served {} ms after return",
        down_for.as_secs_f64(),
        report.requests,
        report.rps,
        picked_up.as_millis()
    ))
}

pub(super) async fn pod_relabelled(lab: &mut Lab) -> anyhow::Result<String> {
    let pod = lab.httpbin.name;
    let label = mesh::consts::TLS_MODE_LABEL;
    let stat = "listener.virtualInbound.no_filter_chain_match";
    let refused_before = lab.envoy_stat(&lab.httpbin, stat).await?;

    // Without the label, `auto` sends plaintext; httpbin's STRICT sidecar closes it.
    lab.kubectl_ok(&["label", "pod", pod, &format!("{label}-")], "")
        .await?;
    let unlabelled = wait_for(lab, hosts::HTTPBIN, "503", status_is(503)).await?;
    let r = via(lab, &lab.gateway, hosts::HTTPBIN, "/get", &[]).await?;
    ensure!(
        r.status == Some(503) && r.body.starts_with("503 UC "),
        "plaintext to the STRICT pod got {r} body {:?}, expected `503 UC ...` (upstream \
         closed without answering)",
        r.body
    );
    let refused_after = lab.envoy_stat(&lab.httpbin, stat).await?;
    ensure!(
        refused_after > refused_before,
        "the refusal did not come from httpbin's STRICT sidecar ({stat} stayed {refused_before})"
    );

    // Labelled again: mTLS with the gateway's identity.
    lab.kubectl_ok(&["label", "pod", pod, &format!("{label}=istio")], "")
        .await?;
    wait_for(lab, hosts::HTTPBIN, "200", status_is(200)).await?;
    let ok = via(lab, &lab.gateway, hosts::HTTPBIN, "/headers", &[]).await?;
    let uri = xfcc_field(&xfcc(&ok)?, "URI").unwrap_or_default();
    ensure!(
        uri == lab.gateway.identity.to_string(),
        "after relabelling, XFCC URI={uri}, expected the gateway's {}",
        lab.gateway.identity
    );

    // A labelled pod sent plaintext anyway (the Service forces it): the gateway knows the
    // pod requires mTLS and says so.
    let ann = UPSTREAM_TLS_ANNOTATION;
    let svc = lab.httpbin.service();
    lab.kubectl_ok(&["annotate", "service", svc, &format!("{ann}=disable")], "")
        .await?;
    let forced = wait_for(lab, hosts::HTTPBIN, "503", status_is(503)).await;
    let r = via(lab, &lab.gateway, hosts::HTTPBIN, "/get", &[]).await?;
    lab.kubectl_ok(&["annotate", "service", svc, &format!("{ann}-")], "")
        .await?;
    forced?;
    ensure!(
        r.body.starts_with("503 mesh_mtls_required "),
        "plaintext forced to a labelled pod got {r} body {:?}, expected `503 mesh_mtls_required ...`",
        r.body
    );
    wait_for(lab, hosts::HTTPBIN, "200", status_is(200)).await?;
    Ok(format!(
        "unlabelled: 503 UC after {} ms (sidecar refused); relabelled: 200, XFCC URI={uri}; \
         labelled + upstream-tls=disable: 503 mesh_mtls_required",
        unlabelled.as_millis()
    ))
}

/// An EndpointSlice of Service httpbin holding httpbin-v2's pod, with `conditions`.
fn extra_slice(lab: &Lab, conditions: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: httpbin-2\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: httpbin}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
         endpoints:\n  - addresses: [\"{addr}\"]\n    conditions: {conditions}\n    \
         targetRef: {{kind: Pod, name: {pod}}}\n",
        port = crate::lab::HTTPBIN_PORT,
        addr = lab.httpbin_v2.addr,
        pod = lab.httpbin_v2.name,
    )
}

/// Which pods answered `n` requests for Service httpbin (by XFCC `By=`).
async fn answering(lab: &Lab, n: usize) -> anyhow::Result<Vec<&'static str>> {
    let mut pods = Vec::new();
    for _ in 0..n {
        let r = via(lab, &lab.gateway, hosts::HTTPBIN, "/headers", &[]).await?;
        pods.push(served_by(lab, &r)?);
    }
    Ok(pods)
}

pub(super) async fn endpoints_scaled(lab: &mut Lab) -> anyhow::Result<String> {
    const LOAD: Duration = Duration::from_secs(15);
    let svc = lab.httpbin.service();
    let (v1, v2) = (lab.httpbin.name, lab.httpbin_v2.name);
    // The new pod runs as another service account: secure naming must admit it first.
    lab.kubectl_ok(
        &[
            "annotate",
            "--overwrite",
            "service",
            svc,
            &format!("meshgate.io/service-accounts={v1},{v2}"),
        ],
        "",
    )
    .await?;
    let wrk = super::start_wrk(lab, &lab.gateway, hosts::HTTPBIN, LOAD);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Scale out: a second slice with a ready endpoint.
    let t0 = Instant::now();
    lab.kubectl_ok(
        &["apply", "-f", "-"],
        &extra_slice(lab, "{ready: true, serving: true, terminating: false}"),
    )
    .await?;
    let out_after = loop {
        if answering(lab, 10).await?.contains(&v2) {
            break t0.elapsed();
        }
        ensure!(t0.elapsed() < CONVERGE, "{v2} never answered for {svc}");
    };
    // Scale in, as the endpoints controller does: terminating (not ready, still serving)
    // first, then the slice goes.
    let t1 = Instant::now();
    lab.kubectl_ok(
        &["apply", "-f", "-"],
        &extra_slice(lab, "{ready: false, serving: true, terminating: true}"),
    )
    .await?;
    let in_after = loop {
        let pods = answering(lab, 20).await?;
        if pods.iter().all(|p| *p == v1) {
            break t1.elapsed();
        }
        ensure!(
            t1.elapsed() < CONVERGE,
            "the terminating endpoint kept getting requests: {pods:?}"
        );
    };
    lab.kubectl_ok(&["delete", "endpointslice", "httpbin-2"], "")
        .await?;
    let report = wrk_without_failures(wrk).await?;
    lab.kubectl_ok(
        &[
            "annotate",
            "--overwrite",
            "service",
            svc,
            &format!("meshgate.io/service-accounts={v1}"),
        ],
        "",
    )
    .await?;
    let pods = answering(lab, 10).await?;
    ensure!(pods.iter().all(|p| *p == v1), "after scale-in: {pods:?}");
    Ok(format!(
        "{v2} added: seen answering within {} ms; terminating: out of rotation within {} ms; \
         wrk {} requests ({:.0}/s), 0 failed",
        out_after.as_millis(),
        in_after.as_millis(),
        report.requests,
        report.rps
    ))
}

/// An HTTPRoute on the HTTP listener for `host` to port `port` of Service `backend`.
fn route_to(name: &str, host: &str, backend: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]\n  \
         hostnames: [{host}]\n  rules:\n  - backendRefs: [{{name: {backend}, port: {port}}}]\n"
    )
}

/// Service `ratings` whose only endpoint is the reviews pod's address, with a Pod object
/// that says it runs as `ratings`: the workload there presents `reviews`.
fn impostor(lab: &Lab) -> String {
    let port = crate::lab::config::REVIEWS_PORT;
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: ratings-v1, namespace: default, \
         labels: {{app: ratings, security.istio.io/tlsMode: istio}}}}\n\
         spec: {{serviceAccountName: ratings}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: ratings, namespace: default}}\n\
         spec: {{ports: [{{name: http, port: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: ratings-1, namespace: default, labels: {{kubernetes.io/service-name: ratings}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
         endpoints:\n  - addresses: [\"{addr}\"]\n    targetRef: {{kind: Pod, name: ratings-v1}}\n---\n{route}",
        addr = lab.reviews.addr,
        route = route_to("ratings", RATINGS_HOST, "ratings", port),
    )
}

const REVIEWS_HOST: &str = "reviews.example.com";
const RATINGS_HOST: &str = "ratings.example.com";

/// The gateway's explanation of a refused request (`/debug/requests/<id>`), from the
/// request id in a `<status> <code> (request id <id>)` body.
async fn explanation(lab: &Lab, r: &CurlResult, code: &str) -> anyhow::Result<String> {
    let prefix = format!("503 {code} (request id ");
    let id = r
        .body
        .strip_prefix(&prefix)
        .and_then(|rest| rest.trim_end().strip_suffix(')'))
        .with_context(|| format!("expected `{prefix}...)`, got {r} {:?}", r.body))?;
    let url = crate::lab::gateway_admin(&format!("/debug/requests/{id}"));
    let why: Value = serde_json::from_str(&lab.admin_get(&lab.gateway, &url).await?)?;
    Ok(why["reason"].as_str().unwrap_or_default().to_string())
}

pub(super) async fn secure_naming(lab: &mut Lab) -> anyhow::Result<String> {
    let port = crate::lab::config::REVIEWS_PORT;
    let svc = lab
        .kubectl_ok(&["get", "service", "reviews", "-o", "json"], "")
        .await?;
    let svc: Value = serde_json::from_str(&svc)?;
    ensure!(
        svc["metadata"]["annotations"]
            .get("meshgate.io/service-accounts")
            .is_none(),
        "the reviews Service carries the identity override: {}",
        svc["metadata"]
    );
    lab.kubectl_ok(
        &["apply", "-f", "-"],
        &route_to("reviews", REVIEWS_HOST, "reviews", port),
    )
    .await?;
    wait_for(lab, REVIEWS_HOST, "200", status_is(200)).await?;
    let r = via(lab, &lab.gateway, REVIEWS_HOST, "/headers", &[]).await?;
    let by = xfcc_field(&xfcc(&r)?, "By").unwrap_or_default();
    let expected = lab.reviews.identity.to_string();
    ensure!(by == expected, "served by {by}, expected {expected}");
    let dump = lab
        .admin_get(&lab.gateway, &crate::lab::gateway_admin("/config_dump"))
        .await?;
    ensure!(
        dump.contains(&format!("\"{expected}\"")),
        "the gateway's configuration does not expect {expected}"
    );

    lab.kubectl_ok(&["apply", "-f", "-"], &impostor(lab))
        .await?;
    wait_for(lab, RATINGS_HOST, "503", status_is(503)).await?;
    let refused = via(lab, &lab.gateway, RATINGS_HOST, "/headers", &[]).await?;
    ensure!(
        !refused.body.contains("spiffe://"),
        "identities leaked to the client: {:?}",
        refused.body
    );
    let why = explanation(lab, &refused, "mesh_identity_mismatch").await?;
    let ratings = "spiffe://cluster.local/ns/default/sa/ratings";
    ensure!(
        why.contains(&format!("expected {ratings}")) && why.contains(&format!("got {expected}")),
        "the refusal does not name both identities: {why}"
    );
    lab.kubectl_ok(&["delete", "-f", "-"], &impostor(lab))
        .await?;
    lab.kubectl_ok(&["delete", "httproute", "reviews"], "")
        .await?;
    Ok(format!(
        "reviews (no annotation): expects and gets {expected}; ratings Pod at the reviews \
         pod's address: 503 mesh_identity_mismatch, \"{why}\""
    ))
}

/// The status Lease the native gateway replicas share.
const LEASE: &str = "meshgate-gateway-proxy";

async fn lease_holder(lab: &Lab) -> anyhow::Result<String> {
    let ns = lab.gateway.identity.namespace();
    let out = lab
        .kubectl_ok(&["get", "lease", "-n", ns, LEASE, "-o", "json"], "")
        .await?;
    let lease: Value = serde_json::from_str(&out)?;
    Ok(lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Polls until `pod` holds the Lease; returns how long it took.
async fn until_holder(lab: &Lab, pod: &str, limit: Duration) -> anyhow::Result<Duration> {
    let what = format!("{pod} holding the Lease");
    super::poll(&what, limit, Duration::from_millis(100), async || {
        let holder = lease_holder(lab).await?;
        Ok(if holder == pod {
            Ok(())
        } else {
            Err(format!("holder {holder:?}"))
        })
    })
    .await
}

/// Applies a route and waits until its status shows our Accepted condition.
async fn route_with_status(lab: &Lab, name: &str, host: &str) -> anyhow::Result<Duration> {
    let port = crate::lab::HTTPBIN_PORT;
    let t0 = Instant::now();
    lab.kubectl_ok(
        &["apply", "-f", "-"],
        &route_to(name, host, "httpbin", port),
    )
    .await?;
    let what = format!("{name}: status Accepted");
    super::poll(
        &what,
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let out = lab
                .kubectl_ok(&["get", "httproute", name, "-o", "json"], "")
                .await?;
            let route: Value = serde_json::from_str(&out)?;
            Ok(
                if our_conditions(&route).iter().any(|c| c == "Accepted=True") {
                    Ok(())
                } else {
                    Err(route["status"].to_string())
                },
            )
        },
    )
    .await?;
    Ok(t0.elapsed())
}

const STATUS_WRITTEN: &str = "HTTPRoute status written";

pub(super) async fn lease_takeover(lab: &mut Lab) -> anyhow::Result<String> {
    let primary = lab.gateway.clone();
    until_holder(lab, primary.name, CONVERGE).await?;
    let replica = lab.add_gateway_replica("gateway-2", "veth-gw2", 12).await?;
    let r = via(lab, &replica, hosts::HTTPBIN, "/headers", &[]).await?;
    xfcc(&r).context("through the second replica")?;

    route_with_status(lab, "lease-a", "lease-a.example.com").await?;
    ensure!(
        lab.output(&primary, "gateway")?.contains(STATUS_WRITTEN),
        "the Lease holder did not write the status"
    );
    ensure!(
        !lab.output(&replica, "gateway")?.contains("status written"),
        "the replica without the Lease wrote status"
    );

    // The holder dies without releasing: the replica waits out the Lease.
    lab.kill(&primary, "gateway")?;
    let takeover = until_holder(lab, replica.name, Duration::from_secs(60)).await?;
    let written = route_with_status(lab, "lease-b", "lease-b.example.com").await?;
    ensure!(
        lab.output(&replica, "gateway")?.contains(STATUS_WRITTEN),
        "the new holder did not write the status"
    );

    // Back as it was: the first replica returns, the second leaves with SIGTERM and
    // releases the Lease, so the first takes it at once.
    lab.relaunch(&primary, "gateway")?;
    lab.wait_ok(&primary, "gateway", &crate::lab::gateway_admin("/ready"))
        .await?;
    lab.terminate(&replica, "gateway")?;
    let handback = until_holder(lab, primary.name, CONVERGE).await?;
    for name in ["lease-a", "lease-b"] {
        lab.kubectl_ok(&["delete", "httproute", name], "").await?;
    }
    Ok(format!(
        "gateway-2 served too, wrote no status; holder SIGKILLed: gateway-2 took the Lease \
         after {:.1} s (15 s Lease) and wrote a new route's status {} ms later; SIGTERM \
         released it back in {} ms",
        takeover.as_secs_f64(),
        written.as_millis(),
        handback.as_millis()
    ))
}
