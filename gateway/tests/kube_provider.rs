//! The gateway binary with `--provider kubernetes` against the Kubernetes API server
//! fixture (e2e), a real httpbin and the real kubectl: routes applied with kubectl are
//! served, their status says why, endpoints wait for their Pods, the expected identities
//! are the Pods' service accounts, an API server outage changes nothing that serves, and
//! of two replicas only the Lease holder writes status.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::apiserver::ApiServer;
use e2e::tools::{tool_or_system, workspace_root};
use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

const GATEWAY_CLASS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gatewayclasses.gateway.networking.k8s.io}
spec:
  group: gateway.networking.k8s.io
  names: {kind: GatewayClass, listKind: GatewayClassList, plural: gatewayclasses, singular: gatewayclass}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Polls `f` every 50 ms until it returns `Some`, or panics naming `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An API server fixture with the Gateway API CRDs, GatewayClass `meshgate`, Gateway
/// `default/edge` (HTTP on a free port) and Service `httpbin` in front of a real httpbin.
struct Cluster {
    server: ApiServer,
    dir: tempfile::TempDir,
    port: u16,
    _httpbin: Httpbin,
    httpbin_port: u16,
}

impl Cluster {
    async fn start() -> Cluster {
        let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("start the API server fixture");
        let crds = workspace_root().join("e2e/tests/fixtures/apiserver/crds/gateway-api.yaml");
        server.seed_file(&crds).expect("Gateway API CRDs");
        server
            .seed_yaml(GATEWAY_CLASS_CRD)
            .expect("GatewayClass CRD");
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        let httpbin = Httpbin::start();
        let port = free_port();
        let cluster = Cluster {
            server,
            dir,
            port,
            httpbin_port: httpbin.port,
            _httpbin: httpbin,
        };
        cluster.seed(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
             metadata: {{name: meshgate}}\nspec: {{controllerName: meshgate.io/gateway-controller}}\n\
             ---\n{}---\n{}",
            http_gateway(port),
            local_service("httpbin", cluster.httpbin_port)
        ));
        cluster
    }

    /// Writes objects straight into the fixture's store (no HTTP: works during an outage).
    fn seed(&self, yaml: &str) {
        self.server.seed_yaml(yaml).expect("seed");
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Runs the real kubectl; asserts success; returns stdout.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut cmd = Command::new(tool_or_system("kubectl"));
        cmd.args(args)
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("cache").display()
            ))
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    fn get_json(&self, what: &[&str]) -> Value {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&args, None)).unwrap()
    }

    /// A gateway replica serving `default/edge`, with listeners bound to `bind`; ready.
    fn gateway(&self, name: &str, bind: &str) -> Gateway {
        self.gateway_waiting_for(name, bind, "/ready")
    }

    fn gateway_waiting_for(&self, name: &str, bind: &str, wait_path: &str) -> Gateway {
        self.gateway_with_lease(name, bind, wait_path, "2s")
    }

    fn gateway_with_lease(&self, name: &str, bind: &str, wait_path: &str, lease: &str) -> Gateway {
        self.gateway_with_args(name, bind, wait_path, lease, &[])
    }

    fn gateway_with_args(
        &self,
        name: &str,
        bind: &str,
        wait_path: &str,
        lease: &str,
        extra: &[&str],
    ) -> Gateway {
        let kubeconfig = self.kubeconfig().display().to_string();
        let args = [
            &[
                "--provider",
                "kubernetes",
                "--gateway",
                "default/edge",
                "--kubeconfig",
                &kubeconfig,
                "--pod-name",
                name,
                "--bind-address",
                bind,
                "--lease-duration",
                lease,
                "--debounce",
                "50ms",
            ][..],
            extra,
        ]
        .concat();
        Gateway::start_waiting_for("", &args, wait_path)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn get(&self, host: &str, path: &str) -> CurlResult {
        curl(&["-H", &format!("Host: {host}"), &self.url(path)])
    }
}

fn route(name: &str, host: &str, path_match: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: edge}}]\n  \
         hostnames: [{host}]\n  rules:\n  - matches: [{{path: {path_match}}}]\n    \
         backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

fn httpbin_route(host: &str) -> String {
    route("httpbin", host, "{type: PathPrefix, value: /}", "httpbin")
}

/// The conditions of our entry in a route's `status.parents`, by type.
fn our_conditions(route: &Value) -> Option<Vec<(String, String, String)>> {
    let parents = route["status"]["parents"].as_array()?;
    let ours = parents
        .iter()
        .find(|p| p["controllerName"] == "meshgate.io/gateway-controller")?;
    let cs = ours["conditions"].as_array()?;
    Some(
        cs.iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("status"), s("reason"))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_applied_with_kubectl_is_served_moves_with_its_hostname_and_404s_once_deleted() {
    let cluster = Cluster::start().await;
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    assert_eq!(cluster.get("httpbin.example.com", "/get").status, 404);

    let applied = Instant::now();
    cluster.apply(&httpbin_route("httpbin.example.com"));
    wait_for("the route to be served", || {
        (cluster.get("httpbin.example.com", "/get").status == 200).then_some(())
    });
    eprintln!("apply -> 200: {:?}", applied.elapsed());

    cluster.apply(&httpbin_route("moved.example.com"));
    wait_for("the route to move", || {
        (cluster.get("moved.example.com", "/get").status == 200).then_some(())
    });
    let old = cluster.get("httpbin.example.com", "/get");
    assert_eq!((old.status, error_code(&old).as_str()), (404, "NR"));

    cluster.kubectl(&["delete", "httproute", "httpbin"], None);
    wait_for("the deleted route to 404", || {
        (cluster.get("moved.example.com", "/get").status == 404).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_status_says_accepted_and_a_broken_route_is_refused_while_the_first_keeps_serving() {
    let cluster = Cluster::start().await;
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    cluster.apply(&httpbin_route("httpbin.example.com"));
    let good = wait_for("Accepted and ResolvedRefs on httpbin", || {
        let r = cluster.get_json(&["httproute", "httpbin"]);
        let cs = our_conditions(&r)?;
        (cs.len() == 2).then_some(cs)
    });
    assert_eq!(
        good,
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into())
        ]
    );
    let gw = wait_for("Gateway Programmed with one attached route", || {
        let g = cluster.get_json(&["gateway", "edge"]);
        (g["status"]["listeners"][0]["attachedRoutes"] == 1).then_some(g)
    });
    let gw_conditions: Vec<(&str, &str)> = gw["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        gw_conditions,
        [("Accepted", "True"), ("Programmed", "True")]
    );
    assert_eq!(
        gw["status"]["conditions"][0]["observedGeneration"],
        gw["metadata"]["generation"]
    );
    assert_eq!(
        gw["status"]["listeners"][0]["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );

    // Valid for the API server's schema, not for the gateway: a regex that does not compile.
    cluster.apply(&route(
        "broken",
        "broken.example.com",
        "{type: RegularExpression, value: \"/([\"}",
        "httpbin",
    ));
    let broken = wait_for("Accepted=False on the broken route", || {
        let r = cluster.get_json(&["httproute", "broken"]);
        let ours = r["status"]["parents"].as_array()?.first()?.clone();
        Some(ours)
    });
    let c = &broken["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("Accepted"), Some("False"))
    );
    assert_eq!(c["reason"], "UnsupportedValue");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("HTTPRoute default/broken rule 0"),
        "{c}"
    );
    assert_eq!(cluster.get("httpbin.example.com", "/get").status, 200);
    // Changes keep flowing while the broken route is there.
    cluster.apply(&route(
        "other",
        "other.example.com",
        "{type: PathPrefix, value: /}",
        "httpbin",
    ));
    wait_for("another route served beside the broken one", || {
        (cluster.get("other.example.com", "/get").status == 200).then_some(())
    });
}

/// A condition as (type, status, reason).
type Summary = (String, String, String);

/// Our entries in a route's `status.parents`, keyed by `parentRef.sectionName`, with
/// their conditions.
fn our_entries_by_section(route: &Value) -> Vec<(String, Vec<Summary>)> {
    let parents = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    parents
        .iter()
        .filter(|p| p["controllerName"] == "meshgate.io/gateway-controller")
        .map(|p| {
            let section = p["parentRef"]["sectionName"].as_str().unwrap_or_default();
            let cs = p["conditions"].as_array().cloned().unwrap_or_default();
            let cs = cs
                .iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    (s("type"), s("status"), s("reason"))
                })
                .collect();
            (section.to_string(), cs)
        })
        .collect()
}

fn condition(t: &str, s: &str, r: &str) -> Summary {
    (t.into(), s.into(), r.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_ref_without_a_matching_listener_is_refused_alone_and_the_route_serves_through_the_other()
 {
    let cluster = Cluster::start().await;
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: two, namespace: default}\nspec:\n  \
         parentRefs: [{name: edge, sectionName: http}, {name: edge, sectionName: nope}]\n  \
         hostnames: [two.example.com]\n  rules:\n  - backendRefs: [{name: httpbin, port: 80}]\n",
    );
    wait_for(
        "the route to be served through its matching parentRef",
        || (cluster.get("two.example.com", "/get").status == 200).then_some(()),
    );
    let entries = wait_for("both of our status entries", || {
        let e = our_entries_by_section(&cluster.get_json(&["httproute", "two"]));
        (e.len() == 2).then_some(e)
    });
    assert_eq!(
        entries,
        [
            (
                "http".to_string(),
                vec![
                    condition("Accepted", "True", "Accepted"),
                    condition("ResolvedRefs", "True", "ResolvedRefs")
                ]
            ),
            (
                "nope".to_string(),
                vec![
                    condition("Accepted", "False", "NoMatchingParent"),
                    condition("ResolvedRefs", "True", "ResolvedRefs")
                ]
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_controllers_entries_in_route_status_are_kept() {
    let cluster = Cluster::start().await;
    cluster.apply(&httpbin_route("httpbin.example.com"));
    let foreign = r#"{"status":{"parents":[{"parentRef":{"name":"other-gw"},"controllerName":"example.com/other","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}]}}"#;
    cluster.kubectl(
        &[
            "patch",
            "httproute",
            "httpbin",
            "--subresource=status",
            "--type=merge",
            "-p",
            foreign,
        ],
        None,
    );
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    let parents = wait_for("our entry beside the other controller's", || {
        let r = cluster.get_json(&["httproute", "httpbin"]);
        let ps = r["status"]["parents"].as_array()?.clone();
        (ps.len() == 2).then_some(ps)
    });
    assert_eq!(parents[0]["controllerName"], "example.com/other");
    assert_eq!(
        parents[1]["controllerName"],
        "meshgate.io/gateway-controller"
    );
}

fn service_with_pod_endpoint(name: &str, port: u16, pod: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, \
         annotations: {{meshgate.io/upstream-tls: auto}}}}\n\
         spec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n\
         - addresses: [127.0.0.1]\n  conditions: {{ready: true}}\n  \
         targetRef: {{kind: Pod, name: {pod}, namespace: default}}\n"
    )
}

fn pod(name: &str, service_account: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {labels}}}\n\
         spec: {{serviceAccountName: {service_account}, containers: [{{name: app, image: httpbin}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_held_back_until_its_pod_is_known() {
    let cluster = Cluster::start().await;
    cluster.apply(&service_with_pod_endpoint(
        "web",
        cluster.httpbin_port,
        "web-1",
    ));
    cluster.apply(&route(
        "web",
        "web.example.com",
        "{type: PathPrefix, value: /}",
        "web",
    ));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    let held = wait_for("the route to answer without endpoints", || {
        let r = cluster.get("web.example.com", "/get");
        (r.status == 503).then_some(r)
    });
    assert_eq!(error_code(&held), "UH");
    cluster.apply(&pod("web-1", "web", "{app: web}"));
    wait_for("the endpoint once its Pod is known", || {
        (cluster.get("web.example.com", "/get").status == 200).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_identity_is_the_service_account_of_the_pods_without_any_annotation() {
    let cluster = Cluster::start().await;
    cluster.apply(&service_with_pod_endpoint(
        "reviews",
        cluster.httpbin_port,
        "reviews-1",
    ));
    cluster.apply(&pod(
        "reviews-1",
        "reviews",
        "{app: reviews, security.istio.io/tlsMode: istio}",
    ));
    cluster.apply(&route(
        "reviews",
        "reviews.example.com",
        "{type: PathPrefix, value: /}",
        "reviews",
    ));
    // Mesh upstreams without an SDS identity: never ready, but the table is built.
    let gw = cluster.gateway_waiting_for("gw-a", "127.0.0.1", "/healthz");
    let identities = wait_for("a mesh endpoint in the config dump", || {
        let (_, body) = gw.admin_get("/config_dump");
        let dump: Value = serde_json::from_str(&body).ok()?;
        let text = dump.to_string();
        text.contains("outbound_.80_._.reviews.default.svc.cluster.local")
            .then(|| find_identities(&dump))
            .flatten()
    });
    assert_eq!(identities, ["spiffe://cluster.local/ns/default/sa/reviews"]);
}

/// The `identities` list of the first mesh target in a config dump.
fn find_identities(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Object(m) => {
            if let Some(ids) = m.get("identities").and_then(Value::as_array) {
                return Some(
                    ids.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect(),
                );
            }
            m.values().find_map(find_identities)
        }
        Value::Array(a) => a.iter().find_map(find_identities),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_keeps_serving_and_a_change_made_during_it_is_picked_up_after() {
    let cluster = Cluster::start().await;
    cluster.apply(&httpbin_route("httpbin.example.com"));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    wait_for("the route to be served", || {
        (cluster.get("httpbin.example.com", "/get").status == 200).then_some(())
    });
    let outage = Duration::from_secs(3);
    cluster.server.faults().fail_for(503, outage);
    cluster.server.drop_watches();
    cluster.seed(&route(
        "late",
        "late.example.com",
        "{type: PathPrefix, value: /}",
        "httpbin",
    ));
    let (mut served, mut failed) = (0, Vec::new());
    let end = Instant::now() + outage;
    while Instant::now() < end {
        let r = cluster.get("httpbin.example.com", "/get");
        match r.status {
            200 => served += 1,
            s => failed.push(s),
        }
    }
    assert!(served > 0);
    assert_eq!(
        failed,
        Vec::<u16>::new(),
        "requests failed during the outage"
    );
    let back = Instant::now();
    wait_for("the change made during the outage", || {
        (cluster.get("late.example.com", "/get").status == 200).then_some(())
    });
    eprintln!(
        "outage: {served} requests, 0 failed; change served {:?} after",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_status_and_another_replica_takes_over_when_it_dies() {
    let cluster = Cluster::start().await;
    let mut a = cluster.gateway("gw-a", "127.0.0.1");
    wait_for("gw-a to hold the Lease", || {
        let l = cluster.get_json(&["lease", "meshgate-edge"]);
        (l["spec"]["holderIdentity"] == "gw-a").then_some(())
    });
    let b = cluster.gateway("gw-b", "127.0.0.2");
    cluster.apply(&httpbin_route("httpbin.example.com"));
    wait_for("route status from the holder", || {
        our_conditions(&cluster.get_json(&["httproute", "httpbin"]))
    });
    assert!(a.log().contains("HTTPRoute status written"), "{}", a.log());
    assert!(!b.log().contains("status written"), "{}", b.log());

    let killed = Instant::now();
    let _ = Command::new("kill")
        .args(["-KILL", &a.process().id().to_string()])
        .status();
    wait_for("gw-b to take the Lease over", || {
        let l = cluster.get_json(&["lease", "meshgate-edge"]);
        (l["spec"]["holderIdentity"] == "gw-b").then_some(())
    });
    eprintln!(
        "Lease takeover after the holder died: {:?}",
        killed.elapsed()
    );
    cluster.apply(&route(
        "second",
        "second.example.com",
        "{type: PathPrefix, value: /}",
        "httpbin",
    ));
    wait_for("route status from the new holder", || {
        our_conditions(&cluster.get_json(&["httproute", "second"]))
    });
    assert!(b.log().contains("HTTPRoute status written"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_releases_the_lease_on_sigterm_and_the_other_replica_takes_over() {
    let cluster = Cluster::start().await;
    // A 60 s Lease: gw-b retries every 20 s, but could only take an unreleased Lease
    // over 60 s after it last saw it renewed, longer than `wait_for` waits.
    let mut a = cluster.gateway_with_lease("gw-a", "127.0.0.1", "/ready", "60s");
    wait_for("gw-a to hold the Lease", || {
        let l = cluster.get_json(&["lease", "meshgate-edge"]);
        (l["spec"]["holderIdentity"] == "gw-a").then_some(())
    });
    let b = cluster.gateway_with_lease("gw-b", "127.0.0.2", "/ready", "60s");
    assert!(
        a.process().terminate(Duration::from_secs(30)),
        "gw-a exits after SIGTERM"
    );
    assert!(a.log().contains("status Lease released"), "{}", a.log());
    let released = cluster.get_json(&["lease", "meshgate-edge"]);
    assert_ne!(
        released["spec"]["holderIdentity"], "gw-a",
        "gw-a gave the Lease up before exiting: {released}"
    );
    wait_for("gw-b to take the released Lease", || {
        let l = cluster.get_json(&["lease", "meshgate-edge"]);
        (l["spec"]["holderIdentity"] == "gw-b").then_some(())
    });
    cluster.apply(&httpbin_route("httpbin.example.com"));
    wait_for("route status from the new holder", || {
        our_conditions(&cluster.get_json(&["httproute", "httpbin"]))
    });
    assert!(b.log().contains("HTTPRoute status written"), "{}", b.log());
}

/// A CustomResourceDefinition that keeps every field (the gateway decodes and validates
/// them), serving `versions` with the first one stored.
fn crd(group: &str, kind: &str, plural: &str, versions: &[&str]) -> String {
    let versions: String = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "  - name: {v}\n    served: true\n    storage: {}\n    subresources: {{status: {{}}}}\n    \
                 schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          \
                 spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n          \
                 status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n",
                i == 0
            )
        })
        .collect();
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  \
         names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {}}}\n  \
         scope: Namespaced\n  versions:\n{versions}",
        kind.to_lowercase()
    )
}

/// The Gateway API v1.6 kinds beyond Gateway and HTTPRoute, as v1.6 serves them.
fn more_gateway_api_crds() -> String {
    const GW: &str = "gateway.networking.k8s.io";
    [
        crd(GW, "GRPCRoute", "grpcroutes", &["v1"]),
        crd(GW, "ReferenceGrant", "referencegrants", &["v1beta1"]),
        crd(GW, "BackendTLSPolicy", "backendtlspolicies", &["v1"]),
    ]
    .join("---\n")
}

/// Our entry in a policy's `status.ancestors`: (ancestorRef, conditions).
fn our_ancestor(policy: &Value) -> Option<(Value, Vec<Summary>)> {
    let ancestors = policy["status"]["ancestors"].as_array()?;
    let ours = ancestors
        .iter()
        .find(|a| a["controllerName"] == "meshgate.io/gateway-controller")?;
    let cs = ours["conditions"].as_array()?;
    let cs = cs
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("status"), s("reason"))
        })
        .collect();
    Some((ours["ancestorRef"].clone(), cs))
}

mod grpc_backend {
    //! A tonic server (Envoy's SecretDiscoveryService) that answers FetchSecrets with its
    //! tag, so a test sees a call reach it through the gateway.
    use std::pin::Pin;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
        SecretDiscoveryService, SecretDiscoveryServiceServer,
    };
    use tokio_stream::Stream;
    use tonic::{Request, Response, Status, Streaming};

    type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    struct Tagged(&'static str);

    #[tonic::async_trait]
    impl SecretDiscoveryService for Tagged {
        type DeltaSecretsStream = Replies<DeltaDiscoveryResponse>;
        type StreamSecretsStream = Replies<DiscoveryResponse>;

        async fn delta_secrets(
            &self,
            _: Request<Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
            Err(Status::unimplemented("delta"))
        }

        async fn stream_secrets(
            &self,
            _: Request<Streaming<DiscoveryRequest>>,
        ) -> Result<Response<Self::StreamSecretsStream>, Status> {
            Err(Status::unimplemented("stream"))
        }

        async fn fetch_secrets(
            &self,
            _: Request<DiscoveryRequest>,
        ) -> Result<Response<DiscoveryResponse>, Status> {
            Ok(Response::new(DiscoveryResponse {
                version_info: self.0.into(),
                ..Default::default()
            }))
        }
    }

    /// Serves on a free port; returns it.
    pub async fn serve(tag: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(Tagged(tag)))
                .serve_with_incoming(incoming),
        );
        port
    }

    /// One FetchSecrets call over h2c to `port`: the tag that answered, or the status.
    pub async fn fetch(port: u16) -> Result<String, tonic::Code> {
        let mut client = SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        client
            .fetch_secrets(DiscoveryRequest::default())
            .await
            .map(|r| r.into_inner().version_info)
            .map_err(|s| s.code())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_applied_with_kubectl_is_served_and_gets_route_status() {
    let cluster = Cluster::start().await;
    cluster.seed(&more_gateway_api_crds());
    let backend = grpc_backend::serve("sds-backend").await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: sds, namespace: default}}\n\
         spec: {{ports: [{{name: grpc, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: sds-1, namespace: default, labels: {{kubernetes.io/service-name: sds}}}}\n\
         addressType: IPv4\nports: [{{name: grpc, port: {backend}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
    ));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    assert_eq!(
        grpc_backend::fetch(cluster.port).await,
        Err(tonic::Code::Unimplemented),
        "no route yet: 404 NR, which gRPC reads as UNIMPLEMENTED"
    );
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {name: sds, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n  - matches: [{method: {service: envoy.service.secret.v3.SecretDiscoveryService, method: FetchSecrets}}]\n    \
         backendRefs: [{name: sds, port: 80}]\n",
    );
    let answered = {
        let deadline = Instant::now() + WAIT;
        loop {
            match grpc_backend::fetch(cluster.port).await {
                Ok(tag) => break tag,
                Err(code) => assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the GRPCRoute to be served (last: {code:?})"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(answered, "sds-backend");
    let conditions = wait_for("Accepted and ResolvedRefs on the GRPCRoute", || {
        let cs = our_conditions(&cluster.get_json(&["grpcroute", "sds"]))?;
        (cs.len() == 2).then_some(cs)
    });
    assert_eq!(
        conditions,
        [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_backend_ref_is_served_only_while_a_reference_grant_allows_it() {
    let cluster = Cluster::start().await;
    cluster.seed(&more_gateway_api_crds());
    cluster.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
    cluster.apply(&local_service_in("other", "shared", cluster.httpbin_port));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: cross, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         hostnames: [cross.example.com]\n  rules:\n  - backendRefs: [{name: shared, namespace: other, port: 80}]\n",
    );
    let refused = wait_for("ResolvedRefs=False without a ReferenceGrant", || {
        let cs = our_conditions(&cluster.get_json(&["httproute", "cross"]))?;
        (cs.len() == 2).then_some(cs)
    });
    assert_eq!(
        refused,
        [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "False", "RefNotPermitted")
        ]
    );
    let r = cluster.get("cross.example.com", "/get");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (500, "backend_unresolvable")
    );

    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {name: from-default, namespace: other}\nspec:\n  \
         from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  \
         to: [{group: \"\", kind: Service, name: shared}]\n";
    cluster.apply(grant);
    wait_for("the granted backend to serve", || {
        (cluster.get("cross.example.com", "/get").status == 200).then_some(())
    });
    wait_for("ResolvedRefs=True once granted", || {
        let cs = our_conditions(&cluster.get_json(&["httproute", "cross"]))?;
        (cs == [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs"),
        ])
        .then_some(())
    });

    cluster.kubectl(
        &["delete", "referencegrant", "from-default", "-n", "other"],
        None,
    );
    wait_for("the backend refused again once the grant is gone", || {
        (cluster.get("cross.example.com", "/get").status == 500).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_policy_gets_ancestor_status_and_serves_once_its_ca_config_map_exists() {
    let cluster = Cluster::start().await;
    cluster.seed(&more_gateway_api_crds());
    let pki = Pki::new();
    pki.ca("backend-ca");
    pki.leaf("backend", "backend-ca", &["httpbin.backend.test"], false);
    let tls_hb = Httpbin::start_tls(&pki.path("backend.crt"), &pki.path("backend.key"));
    cluster.apply(&local_service("secure", tls_hb.port));
    cluster.apply(&route(
        "secure",
        "secure.example.com",
        "{type: PathPrefix, value: /}",
        "secure",
    ));
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
         metadata: {name: secure, namespace: default}\nspec:\n  \
         targetRefs: [{group: \"\", kind: Service, name: secure}]\n  validation:\n    \
         caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n    \
         hostname: httpbin.backend.test\n",
    );
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    let (ancestor, missing) = wait_for("the policy's ancestor entry", || {
        our_ancestor(&cluster.get_json(&["backendtlspolicy", "secure"]))
    });
    assert_eq!(
        ancestor,
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default", "name": "edge"})
    );
    assert_eq!(
        missing,
        [
            condition("Accepted", "False", "NoValidCACertificate"),
            condition("ResolvedRefs", "False", "InvalidCACertificateRef")
        ]
    );
    let r = cluster.get("secure.example.com", "/get");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (500, "backend_unresolvable")
    );

    cluster.apply(&pki.ca_config_map("backend-ca", "backend-ca"));
    wait_for("the TLS backend to serve", || {
        (cluster.get("secure.example.com", "/get").status == 200).then_some(())
    });
    wait_for("Accepted and ResolvedRefs on the policy", || {
        let (_, cs) = our_ancestor(&cluster.get_json(&["backendtlspolicy", "secure"]))?;
        (cs == [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs"),
        ])
        .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_authorization_policy_served_only_as_v1beta1_is_watched_and_enforced() {
    let cluster = Cluster::start().await;
    cluster.seed(&crd(
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1beta1"],
    ));
    cluster.apply(&httpbin_route("httpbin.example.com"));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    wait_for("the route to be served", || {
        (cluster.get("httpbin.example.com", "/status/418").status == 418).then_some(())
    });
    cluster.apply(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n\
         metadata: {name: no-teapots, namespace: default}\nspec:\n  action: DENY\n  \
         rules: [{to: [{operation: {paths: [/status/418]}}]}]\n",
    );
    let denied = wait_for("the DENY policy in force", || {
        let r = cluster.get("httpbin.example.com", "/status/418");
        (r.status == 403).then_some(r)
    });
    assert_eq!(denied.body.trim(), "RBAC: access denied");
    assert_eq!(cluster.get("httpbin.example.com", "/get").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_class_of_our_controller_is_accepted_and_a_foreign_one_is_left_alone() {
    let cluster = Cluster::start().await;
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata: {name: foreign}\nspec: {controllerName: example.com/other-controller}\n",
    );
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    let class = wait_for("status on GatewayClass meshgate", || {
        let c = cluster.get_json(&["gatewayclass", "meshgate"]);
        c["status"]["conditions"].is_array().then_some(c)
    });
    let conditions: Vec<(&str, &str, &str)> = class["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default();
            (s("type"), s("status"), s("reason"))
        })
        .collect();
    assert_eq!(conditions, [("Accepted", "True", "Accepted")]);
    assert_eq!(
        class["status"]["conditions"][0]["observedGeneration"],
        class["metadata"]["generation"]
    );
    // Both classes were in the same write round: the foreign one got nothing from us.
    let foreign = cluster.get_json(&["gatewayclass", "foreign"]);
    assert!(foreign["status"]["conditions"].is_null(), "{foreign}");
}

/// Server-side applies to a status path the fixture has served so far.
fn status_applies(cluster: &Cluster, path: &str) -> usize {
    let path = format!("/apis/gateway.networking.k8s.io/v1/{path}/status?");
    cluster
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.uri.starts_with(&path))
        .count()
}

fn gateway_status_writes(cluster: &Cluster) -> usize {
    status_applies(cluster, "namespaces/default/gateways/edge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_applied_once_per_change_and_not_again_before_the_write_is_seen() {
    let cluster = Cluster::start().await;
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    wait_for("the Gateway Programmed", || {
        let g = cluster.get_json(&["gateway", "edge"]);
        (g["status"]["conditions"][1]["status"] == "True").then_some(())
    });
    let before = gateway_status_writes(&cluster);
    cluster.apply(&httpbin_route("httpbin.example.com"));
    wait_for("one attached route in the Gateway's status", || {
        let g = cluster.get_json(&["gateway", "edge"]);
        (g["status"]["listeners"][0]["attachedRoutes"] == 1).then_some(())
    });
    wait_for("the route's status", || {
        our_conditions(&cluster.get_json(&["httproute", "httpbin"]))
    });
    // A duplicate would follow within a debounce (50 ms) and a table swap of the write;
    // an absence can only be observed over a window.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        gateway_status_writes(&cluster) - before,
        1,
        "Gateway status writes for one change: {:?}",
        cluster
            .server
            .requests()
            .iter()
            .filter(|r| r.uri.contains("status"))
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect::<Vec<_>>()
    );
    // At start-up the table swap came right after the class's first write.
    assert_eq!(status_applies(&cluster, "gatewayclasses/meshgate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_reported_never_hold_readiness_back_and_are_watched_once_installed() {
    let cluster = Cluster::start().await;
    // Only Gateway, HTTPRoute and GatewayClass are installed; `gateway()` waits for /ready.
    let gw = cluster.gateway("gw-a", "127.0.0.1");
    let log = gw.log();
    for kind in [
        "GRPCRoute",
        "TCPRoute",
        "TLSRoute",
        "ReferenceGrant",
        "BackendTLSPolicy",
        "DestinationRule",
        "AuthorizationPolicy",
        "BackendTrafficPolicy",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("not installed on the API server") && l.contains(kind)),
            "{kind} reported missing:\n{log}"
        );
    }
    cluster.seed(&crd(
        "gateway.networking.k8s.io",
        "GRPCRoute",
        "grpcroutes",
        &["v1"],
    ));
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {name: late, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n  - backendRefs: [{name: httpbin, port: 80}]\n",
    );
    // Discovery looks again every 10 s.
    let conditions = wait_for("the GRPCRoute of a CRD installed later", || {
        our_conditions(&cluster.get_json(&["grpcroute", "late"]))
    });
    assert_eq!(conditions[0], condition("Accepted", "True", "Accepted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_gateway_backend_traffic_policy_applied_with_kubectl_rate_limits_its_route() {
    let cluster = Cluster::start().await;
    cluster.seed(&crd(
        "gateway.envoyproxy.io",
        "BackendTrafficPolicy",
        "backendtrafficpolicies",
        &["v1alpha1"],
    ));
    cluster.apply(&httpbin_route("httpbin.example.com"));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    wait_for("the route to be served", || {
        (cluster.get("httpbin.example.com", "/get").status == 200).then_some(())
    });
    cluster.apply(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: slow-down, namespace: default}\nspec:\n  \
         targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: httpbin}]\n  \
         rateLimit:\n    type: Local\n    local:\n      rules: [{limit: {requests: 2, unit: Hour}}]\n",
    );
    let limited = wait_for("a 429 from the local rate limit", || {
        let r = cluster.get("httpbin.example.com", "/get");
        (r.status == 429).then_some(r)
    });
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_destination_rule_applied_with_kubectl_sets_the_upstream_tls_mode() {
    let cluster = Cluster::start().await;
    cluster.seed(&crd(
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        &["v1", "v1beta1"],
    ));
    cluster.apply(&httpbin_route("httpbin.example.com"));
    // Mesh upstreams without an SDS identity: the gateway is never ready once one exists.
    let _gw = cluster.gateway_waiting_for("gw-a", "127.0.0.1", "/healthz");
    wait_for("the route to be served in plaintext", || {
        (cluster.get("httpbin.example.com", "/get").status == 200).then_some(())
    });
    cluster.apply(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n\
         metadata: {name: httpbin, namespace: default}\nspec:\n  host: httpbin\n  \
         trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    );
    let refused = wait_for("ISTIO_MUTUAL in force", || {
        let r = cluster.get("httpbin.example.com", "/get");
        (r.status != 200).then_some(r)
    });
    assert_eq!(
        (refused.status, error_code(&refused).as_str()),
        (503, "mesh_no_identity"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rule_simple_tls_serves_once_its_credential_secret_exists() {
    let cluster = Cluster::start().await;
    cluster.seed(&crd(
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        &["v1"],
    ));
    let pki = Pki::new();
    pki.ca("backend-ca");
    pki.leaf("backend", "backend-ca", &["httpbin.backend.test"], false);
    let tls_hb = Httpbin::start_tls(&pki.path("backend.crt"), &pki.path("backend.key"));
    cluster.apply(&local_service("secure", tls_hb.port));
    cluster.apply(&route(
        "secure",
        "secure.example.com",
        "{type: PathPrefix, value: /}",
        "secure",
    ));
    cluster.apply(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: secure, namespace: default}\nspec:\n  host: secure\n  \
         trafficPolicy: {tls: {mode: SIMPLE, credentialName: backend-ca, sni: httpbin.backend.test}}\n",
    );
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    // Without its Secret the rule fails closed: no connection at all (never plaintext).
    let closed = wait_for("the route served, failing closed", || {
        let r = cluster.get("secure.example.com", "/get");
        (r.status == 503).then_some(r)
    });
    assert_eq!(error_code(&closed), "UF", "{closed:?}");
    cluster.apply(&pki.secret_in(
        "default",
        "backend-ca",
        "Opaque",
        &[("cacert", "backend-ca.crt")],
    ));
    wait_for("TLS to the backend once the Secret exists", || {
        (cluster.get("secure.example.com", "/get").status == 200).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_tls_policy_served_only_as_v1alpha3_gets_its_status_written_at_that_version() {
    let cluster = Cluster::start().await;
    cluster.seed(&crd(
        "gateway.networking.k8s.io",
        "BackendTLSPolicy",
        "backendtlspolicies",
        &["v1alpha3"],
    ));
    cluster.apply(&httpbin_route("httpbin.example.com"));
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\n\
         metadata: {name: system-roots, namespace: default}\nspec:\n  \
         targetRefs: [{group: \"\", kind: Service, name: httpbin}]\n  \
         validation: {wellKnownCACertificates: System, hostname: httpbin.example.com}\n",
    );
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    let (_, conditions) = wait_for("the policy's ancestor entry", || {
        our_ancestor(&cluster.get_json(&["backendtlspolicy", "system-roots"]))
    });
    assert_eq!(
        conditions,
        [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_applied_with_kubectl_is_served_on_a_tcp_listener_with_its_status() {
    let cluster = Cluster::start().await;
    // Gateway API v1.6's standard channel serves TCPRoute as v1 only.
    cluster.seed(&crd(
        "gateway.networking.k8s.io",
        "TCPRoute",
        "tcproutes",
        &["v1"],
    ));
    let tcp_port = free_port();
    cluster.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\nspec:\n  gatewayClassName: meshgate\n  \
         listeners:\n  - {{name: http, port: {}, protocol: HTTP}}\n  \
         - {{name: tcp, port: {tcp_port}, protocol: TCP}}\n",
        cluster.port
    ));
    let _gw = cluster.gateway("gw-a", "127.0.0.1");
    cluster.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
         metadata: {name: raw, namespace: default}\nspec:\n  \
         parentRefs: [{name: edge, sectionName: tcp}]\n  \
         rules: [{backendRefs: [{name: httpbin, port: 80}]}]\n",
    );
    let url = format!("http://127.0.0.1:{tcp_port}/get");
    wait_for("httpbin through the TCP listener", || {
        (curl(&[&url]).status == 200).then_some(())
    });
    let conditions = wait_for("the TCPRoute's status", || {
        let cs = our_conditions(&cluster.get_json(&["tcproute", "raw"]))?;
        (cs.len() == 2).then_some(cs)
    });
    assert_eq!(
        conditions,
        [
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    let gw = wait_for("the TCP listener's attached route", || {
        let g = cluster.get_json(&["gateway", "edge"]);
        (g["status"]["listeners"][1]["attachedRoutes"] == 1).then_some(g)
    });
    assert_eq!(
        gw["status"]["listeners"][1]["supportedKinds"],
        serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "TCPRoute"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_and_gloo_objects_applied_with_kubectl_are_served_and_removed() {
    let cluster = Cluster::start().await;
    for f in ["istio.yaml", "gloo.yaml"] {
        let crds = workspace_root()
            .join("e2e/tests/fixtures/apiserver/crds")
            .join(f);
        cluster.server.seed_file(&crds).expect("CRDs");
    }
    let istio_port = free_port();
    let extra = [
        "--pod-labels",
        "istio=ingressgateway",
        "--pod-namespace",
        "default",
    ];
    let _gw = cluster.gateway_with_args("gw-a", "127.0.0.1", "/ready", "2s", &extra);
    cluster.apply(&format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
         metadata: {{name: coolstore-gateway, namespace: default}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n  \
         - port: {{number: {istio_port}, name: http, protocol: HTTP}}\n    \
         hosts: [webapp.istioinaction.io]\n---\n\
         apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
         metadata: {{name: webapp, namespace: default}}\nspec:\n  \
         hosts: [webapp.istioinaction.io]\n  gateways: [coolstore-gateway]\n  \
         http: [{{route: [{{destination: {{host: httpbin, port: {{number: 80}}}}}}]}}]\n"
    ));
    let webapp = || {
        let url = format!("http://127.0.0.1:{istio_port}/get");
        curl(&["-H", "Host: webapp.istioinaction.io", &url]).status
    };
    wait_for("the Istio VirtualService served", || {
        (webapp() == 200).then_some(())
    });
    cluster.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: gloo-system}\n---\n\
         apiVersion: gloo.solo.io/v1\nkind: Upstream\n\
         metadata: {name: default-httpbin-80, namespace: gloo-system}\n\
         spec: {kube: {serviceName: httpbin, serviceNamespace: default, servicePort: 80}}\n---\n\
         apiVersion: gateway.solo.io/v1\nkind: VirtualService\n\
         metadata: {name: default, namespace: gloo-system}\nspec:\n  virtualHost:\n    \
         domains: [gloo.example.com]\n    routes:\n    \
         - routeAction: {single: {upstream: {name: default-httpbin-80}}}\n",
    );
    wait_for(
        "the Gloo VirtualService served on the Gateway's HTTP listener",
        || (cluster.get("gloo.example.com", "/get").status == 200).then_some(()),
    );
    cluster.kubectl(
        &["delete", "virtualservices.networking.istio.io", "webapp"],
        None,
    );
    wait_for("the deleted VirtualService no longer served", || {
        (webapp() == 404).then_some(())
    });
    assert_eq!(cluster.get("gloo.example.com", "/get").status, 200);
}
