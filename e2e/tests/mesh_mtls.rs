//! Issue 4's scenario with real processes: the test CA; the gateway's sds-agent
//! (spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy); the real gateway; and an
//! httpbin "pod": real httpbin behind a real Envoy shaped like Istio's sidecar, with its
//! certificate from a second sds-agent (spiffe://cluster.local/ns/default/sa/httpbin).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::ca::TestCa;
use e2e::sidecar::{HttpbinPod, InboundPolicy};
use e2e::testing::{ChildGuard, eventually, free_port, start_agent, wait_for_port};
use e2e::tools::workspace_bin;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh::Identity;

const T: Duration = Duration::from_secs(30);
const GATEWAY_ID: &str = "spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy";
const HTTPBIN_ID: &str = "spiffe://cluster.local/ns/default/sa/httpbin";
/// The gateway's pod name (`--pod-name`).
const GATEWAY_POD: &str = "gateway-proxy-6b7c9-x2x4q";

/// The gateway pod (agent + gateway) in front of one httpbin pod.
struct Lab {
    dir: tempfile::TempDir,
    ca: TestCa,
    /// Kept alive for the test's duration.
    _pod: HttpbinPod,
    /// The CA httpbin's sidecar got its certificate from, when not the mesh's.
    _rogue_ca: Option<TestCa>,
    agent: Option<ChildGuard>,
    gateway_ttl: String,
    gateway: ChildGuard,
    edge: SocketAddr,
    /// The gateway's TCP listener (a TCPRoute to the same httpbin Service).
    tcp_edge: SocketAddr,
    gateway_admin: SocketAddr,
}

impl Lab {
    /// `annotations`: YAML flow-map entries for the httpbin Service, e.g.
    /// `meshgate.io/upstream-tls: disable`.
    async fn start(policy: InboundPolicy, annotations: &str, gateway_ttl: &str) -> Lab {
        Lab::start_with(policy, annotations, gateway_ttl, false, 2).await
    }

    /// `rogue_pod_ca`: httpbin's sidecar gets its certificate (with the expected identity)
    /// from a second CA that the mesh root does not vouch for. `workers`: the gateway's
    /// `--workers` (1 serves on the main thread, more on that many worker threads).
    async fn start_with(
        policy: InboundPolicy,
        annotations: &str,
        gateway_ttl: &str,
        rogue_pod_ca: bool,
        workers: usize,
    ) -> Lab {
        e2e::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::start().await;
        let rogue = if rogue_pod_ca {
            Some(TestCa::start().await)
        } else {
            None
        };
        let pod = HttpbinPod::start(
            dir.path(),
            rogue.as_ref().unwrap_or(&ca),
            Identity::new("cluster.local", "default", "httpbin").unwrap(),
            policy,
            "1h",
        )
        .await;

        // The gateway pod's sds-agent.
        let gw_identity: Identity = GATEWAY_ID.parse().unwrap();
        let gw_dir = dir.path().join("gateway-pod");
        std::fs::create_dir_all(&gw_dir).unwrap();
        let (agent, _, socket) = start_agent(&gw_dir, &ca, &gw_identity, gateway_ttl).await;

        // The gateway, configured with Kubernetes-shaped objects.
        let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tcp_edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let gateway_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            gateway_config(edge.port(), tcp_edge.port(), pod.inbound, annotations),
        )
        .unwrap();
        let mut cmd = Command::new(workspace_bin("gateway"));
        cmd.env_clear()
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(&config)
            .args(["--admin-addr", &gateway_admin.to_string()])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--log-format",
                "text",
                "--workers",
                &workers.to_string(),
            ])
            .arg("--sds-socket")
            .arg(&socket)
            // The gateway's identity, as the Istio metrics' source principal.
            .args([
                "--pod-namespace",
                "gateway-system",
                "--service-account",
                "gateway-proxy",
            ])
            // Its node metadata, sent to the mesh as Istio's peer metadata.
            .args([
                "--pod-name",
                GATEWAY_POD,
                "--instance-ip",
                "127.0.0.1",
                "--workload-name",
                "gateway-proxy",
                "--pod-labels",
                "app=gateway-proxy,version=v7",
                "--mesh-id",
                "mesh-east",
            ]);
        let gateway = ChildGuard::spawn("gateway", cmd, dir.path().join("gateway.log"));
        let lab = Lab {
            dir,
            ca,
            _pod: pod,
            _rogue_ca: rogue,
            agent: Some(agent),
            gateway_ttl: gateway_ttl.to_string(),
            gateway,
            edge,
            tcp_edge,
            gateway_admin,
        };
        lab.wait_ready().await;
        lab
    }

    async fn wait_ready(&self) {
        assert!(
            wait_for_port(self.gateway_admin, T).await,
            "gateway admin down:\n{}",
            self.gateway.output()
        );
        let ready = eventually(T, || async {
            e2e::http::get(self.gateway_admin, "/ready")
                .await
                .ok()
                .filter(|(s, _)| *s == 200)
        })
        .await;
        assert!(
            ready.is_some(),
            "gateway never ready:\n{}\nagent:\n{}",
            self.gateway.output(),
            self.agent_log()
        );
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway-pod/agent.log")).unwrap_or_default()
    }

    /// Starts the gateway pod's sds-agent again (same socket).
    async fn restart_agent(&mut self) {
        let gw_dir = self.dir.path().join("gateway-pod");
        let (agent, _, _) = start_agent(
            &gw_dir,
            &self.ca,
            &GATEWAY_ID.parse().unwrap(),
            &self.gateway_ttl,
        )
        .await;
        self.agent = Some(agent);
    }

    /// GET through the gateway's edge listener.
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        request(&client, self.edge, path, headers)
            .await
            .expect("request through the gateway")
    }

    /// The gateway's current mesh certificate as `/certs` reports it.
    async fn gateway_certs(&self) -> serde_json::Value {
        serde_json::from_str(
            &e2e::http::get(self.gateway_admin, "/certs")
                .await
                .unwrap()
                .1,
        )
        .unwrap()
    }

    /// Checks a gateway error body (`<status> <code> (request id <id>)`, naming no
    /// address or identity) and returns the gateway's explanation of it.
    async fn explain(&self, status: u16, code: &str, body: &str) -> String {
        let prefix = format!("{status} {code} (request id ");
        let id = body
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(")\n"))
            .unwrap_or_else(|| panic!("expected {prefix}...: {body:?}"));
        let (st, why) = e2e::http::get(self.gateway_admin, &format!("/debug/requests/{id}"))
            .await
            .unwrap();
        assert_eq!(st, 200, "{why}");
        let why: serde_json::Value = serde_json::from_str(&why).unwrap();
        why["reason"].as_str().unwrap().to_string()
    }

    async fn gateway_metric(&self, series: &str) -> f64 {
        e2e::http::metric(
            &e2e::http::get(self.gateway_admin, "/metrics")
                .await
                .unwrap()
                .1,
            series,
        )
    }
}

fn gateway_config(edge_port: u16, tcp_port: u16, inbound: SocketAddr, annotations: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gateway-proxy, namespace: default}}
spec:
  gatewayClassName: meshgate
  listeners:
    - {{name: http, port: {edge_port}, protocol: HTTP}}
    - {{name: tcp, port: {tcp_port}, protocol: TCP}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: httpbin-tcp, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: httpbin, port: 8000}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: httpbin, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy}}]
  rules: [{{backendRefs: [{{name: httpbin, port: 8000}}]}}]
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: default
  annotations: {{{annotations}}}
spec: {{ports: [{{name: http, port: 8000, targetPort: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-1
  namespace: default
  labels: {{kubernetes.io/service-name: httpbin}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["{ip}"]
    targetRef: {{kind: Pod, name: httpbin-1}}
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-1
  namespace: default
  labels: {{app: httpbin, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: httpbin
"#,
        port = inbound.port(),
        ip = inbound.ip(),
    )
}

async fn request(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    edge: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut req = hyper::Request::get(format!("http://{edge}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Empty::new())?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The X-Forwarded-Client-Cert value httpbin echoed in `/headers`, if any.
fn xfcc(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["headers"]["X-Forwarded-Client-Cert"]
        .as_str()
        .map(str::to_string)
}

fn hash_of(xfcc: &str) -> Option<String> {
    xfcc.split(';')
        .find_map(|kv| kv.strip_prefix("Hash="))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfcc_through_a_strict_sidecar_names_the_gateway_identity_and_hash() {
    let lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    let (status, body) = lab.get("/headers", &[]).await;
    assert_eq!(status, 200, "{body}\n{}", lab.gateway.output());
    let xfcc = xfcc(&body).unwrap_or_else(|| panic!("no XFCC reached httpbin: {body}"));
    assert!(xfcc.contains(&format!("URI={GATEWAY_ID}")), "{xfcc}");
    assert!(xfcc.contains(&format!("By={HTTPBIN_ID}")), "{xfcc}");
    let certs = lab.gateway_certs().await;
    assert_eq!(certs["identity"], GATEWAY_ID);
    let leaf = certs["leaf_sha256"].as_str().unwrap();
    assert_eq!(
        hash_of(&xfcc).as_deref(),
        Some(leaf),
        "Hash is the gateway's current leaf: {xfcc}"
    );
    // Istio's metrics report the edge as mutual TLS, with the gateway's principal.
    let metrics = e2e::http::get(lab.gateway_admin, "/metrics")
        .await
        .unwrap()
        .1;
    let edge = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("destination_service_name=\"httpbin\"")
        })
        .unwrap_or_else(|| panic!("no httpbin edge in:\n{metrics}"));
    assert!(
        edge.contains("connection_security_policy=\"mutual_tls\""),
        "{edge}"
    );
    assert!(
        edge.contains(&format!("source_principal=\"{GATEWAY_ID}\"")),
        "{edge}"
    );
    assert!(
        edge.contains(&format!("destination_principal=\"{HTTPBIN_ID}\"")),
        "{edge}"
    );
    assert!(
        edge.contains("destination_workload=\"httpbin-1\""),
        "{edge}"
    );
    assert!(edge.ends_with(" 1"), "{edge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_xfcc_from_the_edge_never_reaches_httpbin() {
    let lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    let forged = "By=spiffe://cluster.local/ns/default/sa/httpbin;URI=spiffe://cluster.local/ns/kube-system/sa/admin";
    let (status, body) = lab
        .get("/headers", &[("x-forwarded-client-cert", forged)])
        .await;
    assert_eq!(status, 200, "{body}");
    let xfcc = xfcc(&body).unwrap();
    assert!(!xfcc.contains("kube-system"), "forged value leaked: {xfcc}");
    assert!(
        xfcc.starts_with(&format!("By={HTTPBIN_ID}")),
        "only the sidecar's value: {xfcc}"
    );
}

/// The `X-Envoy-Peer-Metadata-Id` and `X-Envoy-Peer-Metadata` httpbin echoed, if any.
fn peer_metadata(body: &str) -> (Option<String>, Option<String>) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let h = |k: &str| v["headers"][k].as_str().map(str::to_string);
    (h("X-Envoy-Peer-Metadata-Id"), h("X-Envoy-Peer-Metadata"))
}

/// Decodes `x-envoy-peer-metadata` as Istio's peer-metadata filter does (base64, then a
/// `google.protobuf.Struct`) into `key -> string` (`LABELS.<label>` for the labels).
fn decode_peer_metadata(value: &str) -> std::collections::BTreeMap<String, String> {
    use base64::Engine as _;
    use prost::Message as _;
    use prost_types::value::Kind;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {value}"));
    let s = prost_types::Struct::decode(bytes.as_slice()).expect("a google.protobuf.Struct");
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in s.fields {
        match v.kind {
            Some(Kind::StringValue(v)) => {
                out.insert(k, v);
            }
            Some(Kind::StructValue(labels)) => {
                for (l, v) in labels.fields {
                    let Some(Kind::StringValue(v)) = v.kind else {
                        panic!("{k}.{l} is not a string");
                    };
                    out.insert(format!("{k}.{l}"), v);
                }
            }
            other => panic!("{k}: unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_metadata_reaches_the_mesh_sidecar_in_istios_format() {
    let lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    let (status, body) = lab.get("/headers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let (id, value) = peer_metadata(&body);
    assert_eq!(
        id.as_deref(),
        Some(
            "router~127.0.0.1~gateway-proxy-6b7c9-x2x4q.gateway-system~gateway-system.svc.cluster.local"
        ),
        "{body}"
    );
    let got = decode_peer_metadata(&value.unwrap_or_else(|| panic!("no peer metadata: {body}")));
    let want: std::collections::BTreeMap<String, String> = [
        ("NAME", GATEWAY_POD),
        ("NAMESPACE", "gateway-system"),
        ("WORKLOAD_NAME", "gateway-proxy"),
        ("CLUSTER_ID", "Kubernetes"),
        ("MESH_ID", "mesh-east"),
        (
            "OWNER",
            "kubernetes://apis/apps/v1/namespaces/gateway-system/deployments/gateway-proxy",
        ),
        ("LABELS.app", "gateway-proxy"),
        ("LABELS.version", "v7"),
        ("LABELS.service.istio.io/canonical-name", "gateway-proxy"),
        ("LABELS.service.istio.io/canonical-revision", "v7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_metadata_forged_by_an_edge_client_never_reaches_the_mesh() {
    use base64::Engine as _;
    let lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    // A client claiming to be istio-system's ingress gateway.
    let forged = base64::engine::general_purpose::STANDARD.encode(b"forged");
    let forged_id =
        "router~10.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local";
    let (status, body) = lab
        .get(
            "/headers",
            &[
                ("x-envoy-peer-metadata", forged.as_str()),
                ("x-envoy-peer-metadata-id", forged_id),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (id, value) = peer_metadata(&body);
    assert!(
        id.as_deref().is_some_and(|id| id.contains(GATEWAY_POD)),
        "{body}"
    );
    assert!(
        !body.contains(forged_id) && !body.contains(&forged),
        "{body}"
    );
    let value = value.unwrap();
    assert_eq!(decode_peer_metadata(&value)["NAME"], GATEWAY_POD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_upstream_gets_no_peer_metadata_even_when_a_client_sends_it() {
    let lab = Lab::start(
        InboundPolicy::Permissive,
        "meshgate.io/upstream-tls: disable",
        "1h",
    )
    .await;
    let (status, body) = lab
        .get(
            "/headers",
            &[
                ("x-envoy-peer-metadata", "Zm9yZ2Vk"),
                ("x-envoy-peer-metadata-id", "router~forged"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(xfcc(&body), None, "plaintext (no XFCC): {body}");
    assert_eq!(peer_metadata(&body), (None, None), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_towards_a_strict_sidecar_is_503_upstream_requires_mtls() {
    let lab = Lab::start(
        InboundPolicy::Strict,
        "meshgate.io/upstream-tls: disable",
        "1h",
    )
    .await;
    let (status, body) = lab.get("/headers", &[]).await;
    let why = lab.explain(status, "mesh_mtls_required", &body).await;
    assert!(why.contains("upstream requires mTLS"), "{why}");
    // The access log is written by its own task: the line may trail the response.
    let logged = eventually(Duration::from_secs(5), || async {
        lab.gateway
            .output()
            .contains("upstream requires mTLS")
            .then_some(())
    })
    .await;
    assert!(logged.is_some(), "access log says why");
    assert!(
        lab.gateway_metric("gateway_upstream_tls_errors_total{reason=\"upstream_requires_mtls\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reaches_a_permissive_sidecar_with_mtls() {
    let lab = Lab::start(InboundPolicy::Permissive, "", "1h").await;
    let (status, body) = lab.get("/headers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let xfcc = xfcc(&body).unwrap_or_else(|| panic!("plaintext was used, no XFCC: {body}"));
    assert!(xfcc.contains(&format!("URI={GATEWAY_ID}")), "{xfcc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_an_unexpected_identity_is_refused_naming_both() {
    let lab = Lab::start(
        InboundPolicy::Strict,
        "meshgate.io/service-accounts: reviews",
        "1h",
    )
    .await;
    let (status, body) = lab.get("/headers", &[]).await;
    assert!(
        !body.contains("spiffe://"),
        "identities leaked to the client: {body}"
    );
    let why = lab.explain(status, "mesh_identity_mismatch", &body).await;
    assert!(
        why.contains("expected spiffe://cluster.local/ns/default/sa/reviews")
            && why.contains(&format!("got {HTTPBIN_ID}")),
        "{why}"
    );
    assert!(
        lab.gateway_metric("gateway_upstream_tls_errors_total{reason=\"identity_mismatch\"}")
            .await
            >= 1.0
    );
}

/// Steady load through the gateway, counting requests in `done` as they finish:
/// returns (requests, failures, XFCC hashes seen).
async fn load(
    edge: SocketAddr,
    duration: Duration,
    workers: usize,
    done: Arc<AtomicU64>,
) -> (u64, Vec<String>, HashSet<String>) {
    let mut tasks = Vec::new();
    let until = Instant::now() + duration;
    for _ in 0..workers {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let mut failures = Vec::new();
            let mut hashes = HashSet::new();
            while Instant::now() < until {
                match request(&client, edge, "/headers", &[]).await {
                    Ok((200, body)) => {
                        if let Some(h) = xfcc(&body).as_deref().and_then(hash_of) {
                            hashes.insert(h);
                        }
                    }
                    Ok((code, body)) => failures.push(format!("{code}: {body}")),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (failures, hashes)
        }));
    }
    let mut failures = Vec::new();
    let mut hashes = HashSet::new();
    for t in tasks {
        let (f, h) = t.await.unwrap();
        failures.extend(f);
        hashes.extend(h);
    }
    (done.load(Ordering::Relaxed), failures, hashes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_a_minute_of_load_fails_nothing_and_changes_the_hash() {
    rotation_under_load_fails_nothing(2).await;
}

/// The same on the current-thread runtime (`--workers 1`), whose rotation and pool swap
/// run on the one thread that also serves the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_a_minute_of_load_on_one_worker_fails_nothing_and_changes_the_hash() {
    rotation_under_load_fails_nothing(1).await;
}

async fn rotation_under_load_fails_nothing(workers: usize) {
    let lab = Lab::start_with(InboundPolicy::Strict, "", "6s", false, workers).await;
    let (requests, failures, hashes) =
        load(lab.edge, Duration::from_secs(60), 4, Arc::default()).await;
    assert!(
        failures.is_empty(),
        "{} of {requests} failed, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(3)],
        lab.gateway.output()
    );
    assert!(
        hashes.len() >= 3,
        "the client certificate seen by httpbin rotated: {hashes:?}"
    );
    assert!(requests > 500, "steady load: {requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sds_agent_killed_and_restarted_under_load_fails_nothing() {
    let mut lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    let edge = lab.edge;
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let traffic =
        tokio::spawn(async move { load(edge, Duration::from_secs(15), 4, counter).await });
    let served_since = |from: u64| {
        let done = done.clone();
        move || {
            let n = done.load(Ordering::Relaxed);
            std::future::ready((n >= from + 50).then_some(n))
        }
    };
    let before_kill = eventually(T, served_since(0))
        .await
        .expect("load is flowing");
    lab.agent.take().unwrap().kill();
    // The gateway has seen its agent go, and kept serving on the certificate it holds.
    let noticed = eventually(T, || async {
        (lab.gateway_metric("gateway_sds_reconnects_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(
        noticed.is_some(),
        "the gateway never noticed the agent was gone:\n{}",
        lab.gateway.output()
    );
    eventually(T, served_since(before_kill))
        .await
        .expect("load flows while the agent is down");
    lab.restart_agent().await;
    let (requests, failures, _) = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The gateway reconnected to the restarted agent and took its (new) certificate.
    let again = eventually(T, || async {
        (lab.gateway_metric("gateway_sds_updates_total").await >= 2.0).then_some(())
    })
    .await;
    assert!(
        again.is_some(),
        "no SDS update after the agent restart:\n{}",
        lab.gateway.output()
    );
    assert!(lab.gateway_metric("gateway_sds_reconnects_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expected_identity_under_another_ca_is_refused() {
    let lab = Lab::start_with(InboundPolicy::Strict, "", "1h", true, 2).await;
    let (status, body) = lab.get("/headers", &[]).await;
    let why = lab.explain(status, "mesh_untrusted_upstream", &body).await;
    assert!(why.contains("upstream certificate rejected"), "{why}");
    assert!(
        lab.gateway_metric("gateway_upstream_tls_errors_total{reason=\"untrusted_upstream\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_route_reaches_the_strict_sidecars_tcp_chain_with_the_gateway_identity() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = Lab::start(InboundPolicy::Strict, "", "1h").await;
    let mut s = tokio::net::TcpStream::connect(lab.tcp_edge).await.unwrap();
    s.write_all(b"GET /headers HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut response))
        .await
        .expect("the response within the limit")
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{response}\n{}",
        lab.gateway.output()
    );
    // Bytes, not HTTP, crossed the sidecar: its TCP chain added no XFCC.
    assert!(!response.contains("X-Forwarded-Client-Cert"), "{response}");
    // Envoy's tcp_proxy half-closes and logs once both directions have ended.
    drop(s);
    let peer = format!("tcp-inbound peer={GATEWAY_ID}");
    let logged = eventually(T, || async {
        lab._pod.envoy_log().contains(&peer).then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "the sidecar's TCP chain did not log {peer}:\n{}",
        lab._pod.envoy_log()
    );
    let mtls = "istio_tcp_connections_closed_total{reporter=\"source\"";
    let closed = eventually(T, || async {
        let m = e2e::http::get(lab.gateway_admin, "/metrics").await.ok()?.1;
        m.lines()
            .find(|l| {
                l.starts_with(mtls) && l.contains("connection_security_policy=\"mutual_tls\"")
            })
            .map(str::to_string)
    })
    .await;
    assert!(closed.is_some(), "no mutual_tls TCP series");
}
