//! The Helm chart (`manifests/charts/meshgate`), rendered by the real `helm` binary
//! and checked as parsed objects; every rendered manifest and every sample validated
//! with `kubernetes-validate`; the kind walkthrough checked with `bash -n` and
//! shellcheck.
//!
//! Tools come from `$MESHGATE_TOOLS` (a bin directory) if set, else from
//! `<workspace>/.cache/tools/bin`, where `scripts/install-tools` puts them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::tools::{tool, tool_or_system, workspace_root};
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes version the manifests are validated against: the one Helm 4.1 renders
/// for by default (`helm version` prints `KubeClientVersion:"v1.35"`).
const KUBERNETES_VERSION: &str = "1.35.0";
/// The oldest Kubernetes the chart supports (`kubeVersion` in Chart.yaml): the
/// preStop `sleep` action is on by default from 1.30.
const OLDEST_KUBERNETES_VERSION: &str = "1.30.0";

/// Kinds that `kubernetes-validate` has no schema for (custom resources); their
/// samples are checked field by field in `samples_validate_against_kubernetes_schemas`.
const CUSTOM_RESOURCE_KINDS: [&str; 4] =
    ["Gateway", "GatewayClass", "HTTPRoute", "PeerAuthentication"];

const SDS_SOCKET_DIR: &str = "/var/run/secrets/workload-spiffe-uds";
const SDS_SOCKET: &str = "/var/run/secrets/workload-spiffe-uds/socket";
const DEFAULT_CA_ADDR: &str = "istiod.istio-system.svc:15012";
const RELEASE_NAMESPACE: &str = "gateway-system";

// ---------------------------------------------------------------- where things are

fn chart_dir() -> PathBuf {
    workspace_root().join("manifests/charts/meshgate")
}

fn samples_dir() -> PathBuf {
    workspace_root().join("manifests/samples")
}

fn run<I, S>(program: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- rendering

/// Runs `helm template` on the chart with extra arguments; returns its output.
fn helm_template(extra: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args: Vec<&OsStr> = vec![
        "template".as_ref(),
        "meshgate".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        RELEASE_NAMESPACE.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run(&tool("helm"), args)
}

/// The objects a multi-document YAML stream holds (empty documents left out).
fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("helm output is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of one rendering of the chart.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn with(set: &[&str]) -> Rendered {
        let mut extra = Vec::new();
        for s in set {
            extra.push("--set");
            extra.push(s);
        }
        Self::from_args(&extra)
    }

    fn from_args(extra: &[&str]) -> Rendered {
        let out = helm_template(extra);
        assert!(
            out.status.success(),
            "helm template {extra:?} failed:\n{}",
            text(&out.stderr)
        );
        let yaml = text(&out.stdout);
        let objects = parse_documents(&yaml);
        Rendered { yaml, objects }
    }

    fn object(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    }

    fn kinds(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| o["kind"].as_str().expect("kind is a string").to_owned())
            .collect()
    }

    fn deployment(&self) -> &Value {
        self.object("Deployment", "gateway-proxy")
    }

    fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]
    }

    fn pod_spec(&self) -> &Value {
        &self.pod()["spec"]
    }

    fn container_names(&self, list: &str) -> Vec<String> {
        self.pod_spec()[list]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| c["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn containers(&self) -> Vec<String> {
        self.container_names("containers")
    }

    fn init_containers(&self) -> Vec<String> {
        self.container_names("initContainers")
    }

    fn find_container(&self, list: &str, name: &str) -> &Value {
        self.pod_spec()[list]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no {list} entry named {name}"))
    }

    fn container(&self, name: &str) -> &Value {
        self.find_container("containers", name)
    }

    fn init_container(&self, name: &str) -> &Value {
        self.find_container("initContainers", name)
    }

    fn volume(&self, name: &str) -> &Value {
        self.pod_spec()["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("no volume named {name}"))
    }

    fn has_volume(&self, name: &str) -> bool {
        self.pod_spec()["volumes"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v["name"] == name))
    }

    fn pod_label(&self, key: &str) -> Option<&str> {
        self.pod()["metadata"]["labels"][key].as_str()
    }

    fn pod_annotation(&self, key: &str) -> Option<&str> {
        self.pod()["metadata"]["annotations"][key].as_str()
    }
}

/// A container's args as strings.
fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("args are strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The value following `flag` in a container's args.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A container's env entry by name.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("container {} has no env {name}", container["name"]))
}

/// Where a container mounts a volume, if it does.
fn mount_path<'a>(container: &'a Value, volume: &str) -> Option<&'a str> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
}

const INTEGRATION_OFF: &[&str] = &[];
const NATIVE: &[&str] = &["global.istioIntegration.enabled=true"];
const SIDECAR: &[&str] = &[
    "global.istioIntegration.enabled=true",
    "global.istioIntegration.mode=sidecar",
];
const SDS_ONLY: &[&str] = &["global.istioSDS.enabled=true"];
const FILE_PROVIDER: &[&str] = &["gatewayProxies.gatewayProxy.provider.type=file"];

// ---------------------------------------------------------------- helm lint

#[test]
fn chart_passes_helm_lint_in_every_mode() {
    for set in [INTEGRATION_OFF, NATIVE, SIDECAR, SDS_ONLY] {
        let chart = chart_dir();
        let mut lint_args: Vec<&OsStr> = vec!["lint".as_ref(), "--strict".as_ref()];
        for s in set {
            lint_args.push("--set".as_ref());
            lint_args.push(s.as_ref());
        }
        lint_args.push(chart.as_os_str());
        let out = run(&tool("helm"), lint_args);
        assert!(
            out.status.success(),
            "helm lint --strict {set:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------- the four layouts

#[test]
fn integration_off_renders_the_gateway_alone() {
    let r = Rendered::with(INTEGRATION_OFF);
    assert_eq!(r.containers(), ["gateway"]);
    assert!(r.init_containers().is_empty());
    assert_eq!(r.pod_label("sidecar.istio.io/inject"), None);
    assert_eq!(
        r.pod_annotation("traffic.sidecar.istio.io/excludeInboundPorts"),
        None
    );
    assert!(!r.has_volume("workload-socket"));
    assert!(!r.has_volume("istio-token"));

    // The kubernetes provider is the default: no ConfigMap, no config volume.
    let gateway_args = args(r.container("gateway"));
    assert_eq!(
        gateway_args,
        [
            "--provider",
            "kubernetes",
            "--gateway",
            "gateway-system/gateway-proxy",
            "--secret-namespaces",
            "gateway-system",
            "--admin-addr",
            "127.0.0.1:19000",
            "--stats-addr",
            "0.0.0.0:8081"
        ]
    );
    assert!(!r.has_volume("gateway-config"));
    assert!(!r.kinds().contains("ConfigMap"));
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(r.kinds().contains(kind), "no {kind} rendered");
    }
    assert!(!r.kinds().contains("HorizontalPodAutoscaler"));
}

#[test]
fn file_provider_is_a_switch_that_mounts_the_standalone_config() {
    let r = Rendered::with(FILE_PROVIDER);
    let gateway_args = args(r.container("gateway"));
    assert_eq!(
        gateway_args,
        [
            "--config",
            "/etc/meshgate/",
            "--admin-addr",
            "127.0.0.1:19000",
            "--stats-addr",
            "0.0.0.0:8081"
        ]
    );
    assert_eq!(flag(&gateway_args, "--provider"), None);
    assert_eq!(
        mount_path(r.container("gateway"), "gateway-config"),
        Some("/etc/meshgate/")
    );
    assert_eq!(
        r.volume("gateway-config")["configMap"]["name"],
        "gateway-proxy-config"
    );
    assert!(r.kinds().contains("ConfigMap"));
}

#[test]
fn kubernetes_provider_serves_the_named_gateway_and_reads_secrets_where_listed() {
    let r = Rendered::with(&[
        "gatewayProxies.gatewayProxy.provider.gateway=edge/public",
        "rbac.secretNamespaces={edge,certs}",
    ]);
    let gateway_args = args(r.container("gateway"));
    assert_eq!(flag(&gateway_args, "--provider"), Some("kubernetes"));
    assert_eq!(flag(&gateway_args, "--gateway"), Some("edge/public"));
    assert_eq!(
        flag(&gateway_args, "--secret-namespaces"),
        Some("edge,certs")
    );
    assert_eq!(flag(&gateway_args, "--config"), None);
    // The Lease replica name comes from the pod.
    assert_eq!(
        env(r.container("gateway"), "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let secret_roles: BTreeSet<&str> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "gateway-proxy-secrets")
        .map(|o| o["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(secret_roles, BTreeSet::from(["edge", "certs"]));
    let bound: BTreeSet<&str> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == "gateway-proxy-secrets")
        .map(|o| {
            assert_eq!(o["subjects"][0]["namespace"], RELEASE_NAMESPACE);
            o["metadata"]["namespace"].as_str().unwrap()
        })
        .collect();
    assert_eq!(bound, secret_roles);
}

#[test]
fn native_mode_runs_gateway_init_then_gateway_and_sds_agent() {
    let r = Rendered::with(NATIVE);
    assert_eq!(r.init_containers(), ["gateway-init"]);
    assert_eq!(r.containers(), ["gateway", "sds-agent"]);
    assert_eq!(r.pod_label("sidecar.istio.io/inject"), Some("false"));
    assert_eq!(
        r.pod_annotation("traffic.sidecar.istio.io/excludeInboundPorts"),
        None
    );

    assert_eq!(
        args(r.init_container("gateway-init")),
        [
            "--mode",
            "native",
            "--edge-ports",
            "8080,8443",
            "--loopback-only-ports",
            "19000,15030"
        ]
    );

    let gateway_args = args(r.container("gateway"));
    assert_eq!(flag(&gateway_args, "--provider"), Some("kubernetes"));
    assert_eq!(flag(&gateway_args, "--admin-addr"), Some("127.0.0.1:19000"));
    assert_eq!(flag(&gateway_args, "--sds-socket"), Some(SDS_SOCKET));
    assert_eq!(flag(&gateway_args, "--upstream-tls"), Some("auto"));
    assert_eq!(flag(&gateway_args, "--trust-domain"), Some("cluster.local"));
}

#[test]
fn native_mode_shares_sds_socket_between_gateway_and_agent() {
    let r = Rendered::with(NATIVE);
    let socket = r.volume("workload-socket");
    assert_eq!(socket["emptyDir"]["medium"], "Memory");

    let gateway = r.container("gateway");
    let agent = r.container("sds-agent");
    assert_eq!(mount_path(gateway, "workload-socket"), Some(SDS_SOCKET_DIR));
    assert_eq!(mount_path(agent, "workload-socket"), Some(SDS_SOCKET_DIR));
    // Both ends name the same socket file, inside the shared volume.
    assert_eq!(flag(&args(gateway), "--sds-socket"), Some(SDS_SOCKET));
    assert_eq!(flag(&args(agent), "--sds-socket"), Some(SDS_SOCKET));
    // The socket is owner-only: the two containers run as one uid.
    let uid = &r.pod_spec()["securityContext"]["runAsUser"];
    assert!(
        uid.is_u64(),
        "the pod sets one runAsUser for both containers"
    );
    assert!(gateway["securityContext"]["runAsUser"].is_null());
    assert!(agent["securityContext"]["runAsUser"].is_null());
}

#[test]
fn sds_agent_asks_istiod_ca_with_an_istio_ca_audience_token() {
    let r = Rendered::with(NATIVE);
    let agent = r.container("sds-agent");
    assert_eq!(env(agent, "CA_ADDR")["value"], DEFAULT_CA_ADDR);
    assert_eq!(env(agent, "TRUST_DOMAIN")["value"], "cluster.local");
    assert_eq!(env(agent, "ISTIO_META_CLUSTER_ID")["value"], "Kubernetes");
    assert_eq!(env(agent, "ISTIO_META_MESH_ID")["value"], "cluster.local");
    assert_eq!(env(agent, "SECRET_TTL")["value"], "24h");
    assert_eq!(
        env(agent, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env(agent, "SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(r.pod_spec()["serviceAccountName"], "gateway-proxy");
    r.object("ServiceAccount", "gateway-proxy");

    let agent_args = args(agent);
    assert_eq!(flag(&agent_args, "--source"), Some("istiod"));
    assert_eq!(
        flag(&agent_args, "--root-cert"),
        Some("/var/run/secrets/istio/root-cert.pem")
    );
    assert_eq!(
        flag(&agent_args, "--token-file"),
        Some("/var/run/secrets/tokens/istio-token")
    );
    assert_eq!(flag(&agent_args, "--admin-addr"), Some("127.0.0.1:15030"));

    let sources = r.volume("istio-token")["projected"]["sources"]
        .as_array()
        .expect("istio-token is a projected volume");
    assert_eq!(sources.len(), 1);
    let token = &sources[0]["serviceAccountToken"];
    assert_eq!(token["audience"], "istio-ca");
    assert_eq!(token["expirationSeconds"], 43200);
    assert_eq!(token["path"], "istio-token");
    assert_eq!(
        mount_path(agent, "istio-token"),
        Some("/var/run/secrets/tokens")
    );
    assert_eq!(
        r.volume("istiod-ca-cert")["configMap"]["name"],
        "istio-ca-root-cert"
    );
    assert_eq!(
        mount_path(agent, "istiod-ca-cert"),
        Some("/var/run/secrets/istio")
    );
    // The gateway sees neither the token nor the CA's root file.
    assert_eq!(mount_path(r.container("gateway"), "istio-token"), None);
}

#[test]
fn ca_addr_follows_a_custom_istio_discovery_address() {
    let custom = "istiod-1-24.istio-system.svc:15012";
    let set = format!("gatewayProxies.gatewayProxy.istioDiscoveryAddress={custom}");
    let cluster = "gatewayProxies.gatewayProxy.istioMetaClusterId=east";
    let td = "gatewayProxies.gatewayProxy.trustDomain=example.org";
    for mode in [NATIVE, SDS_ONLY] {
        let mut values = mode.to_vec();
        values.extend([set.as_str(), cluster, td]);
        let r = Rendered::with(&values);
        let agent = r.container("sds-agent");
        assert_eq!(env(agent, "CA_ADDR")["value"], custom);
        assert_eq!(env(agent, "ISTIO_META_CLUSTER_ID")["value"], "east");
        assert_eq!(env(agent, "TRUST_DOMAIN")["value"], "example.org");
        assert_eq!(
            flag(&args(r.container("gateway")), "--trust-domain"),
            Some("example.org")
        );
    }
}

#[test]
fn sidecar_mode_leaves_capture_to_istio_annotations_and_runs_no_gateway_init() {
    let r = Rendered::with(SIDECAR);
    // Istio's istio-init programs the pod from the annotations; gateway-init would be a
    // second owner of the same iptables rules.
    assert!(
        r.init_containers().is_empty(),
        "init containers in sidecar mode: {:?}",
        r.init_containers()
    );
    // The istio-proxy is injected by Istio and secures upstream traffic: no sds-agent.
    assert_eq!(r.containers(), ["gateway"]);
    // Edge ports excluded, and Istio's own exclusions (15020 merged metrics, 15021
    // health, 15090 Envoy's Prometheus) kept.
    assert_eq!(
        r.pod_annotation("traffic.sidecar.istio.io/excludeInboundPorts"),
        Some("8080,8443,15020,15021,15090")
    );
    let traffic: BTreeSet<&str> = r.pod()["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| k.starts_with("traffic.sidecar.istio.io/"))
        .collect();
    assert_eq!(
        traffic,
        BTreeSet::from(["traffic.sidecar.istio.io/excludeInboundPorts"]),
        "only the inbound exclusion is set; outbound capture stays Istio's default"
    );
    assert_eq!(r.pod_label("sidecar.istio.io/inject"), Some("true"));
    let gateway_args = args(r.container("gateway"));
    assert_eq!(flag(&gateway_args, "--upstream-tls"), Some("disable"));
    assert_eq!(flag(&gateway_args, "--sds-socket"), None);
    assert!(!r.has_volume("workload-socket"));
}

#[test]
fn custom_edge_ports_reach_init_annotation_container_and_service() {
    let ports = [
        "gatewayProxies.gatewayProxy.podTemplate.httpPort=9080",
        "gatewayProxies.gatewayProxy.podTemplate.httpsPort=9443",
    ];
    let r = Rendered::with(&[SIDECAR, &ports].concat());
    assert_eq!(
        r.pod_annotation("traffic.sidecar.istio.io/excludeInboundPorts"),
        Some("9080,9443,15020,15021,15090")
    );
    let r = Rendered::with(&[NATIVE, FILE_PROVIDER, &ports].concat());
    assert_eq!(
        flag(&args(r.init_container("gateway-init")), "--edge-ports"),
        Some("9080,9443")
    );
    let ports = &r.container("gateway")["ports"];
    assert_eq!(ports[0]["containerPort"], 9080);
    assert_eq!(ports[1]["containerPort"], 9443);
    let config = r.object("ConfigMap", "gateway-proxy-config");
    let gateway = parse_documents(config["data"]["gateway.yaml"].as_str().unwrap());
    assert_eq!(gateway[0]["spec"]["listeners"][0]["port"], 9080);
}

#[test]
fn sds_only_adds_the_agent_without_init_or_mesh_labels() {
    let r = Rendered::with(SDS_ONLY);
    assert_eq!(r.containers(), ["gateway", "sds-agent"]);
    assert!(r.init_containers().is_empty());
    assert_eq!(r.pod_label("sidecar.istio.io/inject"), None);
    assert_eq!(
        r.pod_annotation("traffic.sidecar.istio.io/excludeInboundPorts"),
        None
    );
    assert_eq!(r.volume("workload-socket")["emptyDir"]["medium"], "Memory");
    let gateway_args = args(r.container("gateway"));
    assert_eq!(flag(&gateway_args, "--sds-socket"), Some(SDS_SOCKET));
    // Certificates for backends that opt in; no automatic mTLS.
    assert_eq!(flag(&gateway_args, "--upstream-tls"), Some("disable"));
    assert_eq!(
        env(r.container("sds-agent"), "CA_ADDR")["value"],
        DEFAULT_CA_ADDR
    );
}

#[test]
fn enable_auto_mtls_false_leaves_mtls_to_per_backend_opt_in() {
    let mut values = NATIVE.to_vec();
    values.push("global.istioIntegration.enableAutoMtls=false");
    let r = Rendered::with(&values);
    assert_eq!(
        flag(&args(r.container("gateway")), "--upstream-tls"),
        Some("disable")
    );

    let mut values = NATIVE.to_vec();
    values.push("gatewayProxies.gatewayProxy.upstreamTls=istio-mutual");
    let r = Rendered::with(&values);
    assert_eq!(
        flag(&args(r.container("gateway")), "--upstream-tls"),
        Some("istio-mutual")
    );
}

#[test]
fn gateway_init_holds_only_net_admin_and_net_raw() {
    // Native mode only: in sidecar mode Istio's istio-init programs the pod.
    {
        let r = Rendered::with(NATIVE);
        let sc = &r.init_container("gateway-init")["securityContext"];
        assert_eq!(
            sc["capabilities"]["add"],
            serde_json::json!(["NET_ADMIN", "NET_RAW"])
        );
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["runAsNonRoot"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
    }
}

#[test]
fn gateway_and_sds_agent_run_unprivileged_and_never_as_istio_proxy_uid() {
    let r = Rendered::with(NATIVE);
    let uid = r.pod_spec()["securityContext"]["runAsUser"]
        .as_u64()
        .expect("pod runAsUser");
    assert_ne!(uid, 0);
    assert_ne!(uid, 1337, "1337 is Istio's proxy uid");
    for name in ["gateway", "sds-agent"] {
        let sc = &r.container(name)["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name} adds no capability"
        );
    }
}

#[test]
fn gateway_knows_its_workload_identity_and_labels_for_metrics_and_policy() {
    let r = Rendered::with(NATIVE);
    let gateway = r.container("gateway");
    assert_eq!(
        env(gateway, "SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        env(gateway, "ISTIO_META_WORKLOAD_NAME")["value"],
        "gateway-proxy"
    );
    assert_eq!(env(gateway, "ISTIO_META_CLUSTER_ID")["value"], "Kubernetes");
    // Istio's peer metadata: MESH_ID and the pod IP of the node id.
    assert_eq!(env(gateway, "ISTIO_META_MESH_ID")["value"], "cluster.local");
    assert_eq!(
        env(gateway, "INSTANCE_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    // Every pod label, so AuthorizationPolicy selectors and Istio's app/version
    // rules see what Kubernetes sees.
    let labels = env(gateway, "POD_LABELS")["value"].as_str().unwrap();
    let pairs: BTreeSet<&str> = labels.split(',').collect();
    for (k, v) in r.pod()["metadata"]["labels"].as_object().unwrap() {
        let pair = format!("{k}={}", v.as_str().unwrap());
        assert!(
            pairs.contains(pair.as_str()),
            "{pair} missing from {labels}"
        );
    }
    assert!(pairs.contains("sidecar.istio.io/inject=false"), "{labels}");
}

#[test]
fn tracing_is_off_by_default_and_set_by_endpoint_and_percent() {
    let off = Rendered::with(INTEGRATION_OFF);
    let no_otel = off.container("gateway")["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["name"].as_str().unwrap().starts_with("OTEL_"));
    assert!(no_otel, "no OTEL_* env without an endpoint");

    let on = Rendered::with(&[
        "gatewayProxies.gatewayProxy.podTemplate.tracing.otlpEndpoint=http://collector:4317",
        "gatewayProxies.gatewayProxy.podTemplate.tracing.samplingPercent=10",
    ]);
    let gateway = on.container("gateway");
    let value = |name| env(gateway, name)["value"].as_str().unwrap().to_owned();
    assert_eq!(
        value("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "http://collector:4317"
    );
    assert_eq!(value("OTEL_TRACES_SAMPLER"), "parentbased_traceidratio");
    assert_eq!(value("OTEL_TRACES_SAMPLER_ARG"), "0.1");
    assert_eq!(
        value("OTEL_SERVICE_NAME"),
        format!("gateway-proxy.{RELEASE_NAMESPACE}")
    );
}

#[test]
fn tracing_sampling_over_100_percent_fails_naming_the_key() {
    let err = render_failure(
        "gatewayProxies:\n  gatewayProxy:\n    podTemplate:\n      tracing:\n        samplingPercent: 150\n",
    );
    assert!(err.contains("samplingPercent"), "{err}");
}

#[test]
fn probes_exec_the_binaries_against_loopback_admin_servers() {
    let r = Rendered::with(NATIVE);
    let expect = [
        ("gateway", "/usr/local/bin/gateway", "127.0.0.1:19000"),
        ("sds-agent", "/usr/local/bin/sds-agent", "127.0.0.1:15030"),
    ];
    for (name, binary, admin) in expect {
        let c = r.container(name);
        assert_eq!(
            c["readinessProbe"]["exec"]["command"],
            serde_json::json!([binary, "probe", "--admin-addr", admin]),
            "{name} readiness"
        );
        assert_eq!(
            c["livenessProbe"]["exec"]["command"],
            serde_json::json!([binary, "probe", "--admin-addr", admin, "--path", "/healthz"]),
            "{name} liveness"
        );
    }
    // Graceful termination: a grace period and a preStop pause before SIGTERM.
    assert_eq!(r.pod_spec()["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        r.container("gateway")["lifecycle"]["preStop"]["sleep"]["seconds"],
        5
    );
}

#[test]
fn service_maps_80_and_443_to_the_edge_ports() {
    let r = Rendered::with(INTEGRATION_OFF);
    let svc = r.object("Service", "gateway-proxy");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    let ports = svc["spec"]["ports"].as_array().unwrap();
    let by_name = |n: &str| ports.iter().find(|p| p["name"] == n).unwrap();
    assert_eq!(by_name("http")["port"], 80);
    assert_eq!(by_name("http")["targetPort"], "http");
    assert_eq!(by_name("https")["port"], 443);
    assert_eq!(by_name("https")["targetPort"], "https");
    let gateway = r.container("gateway");
    let container_port = |n: &str| {
        gateway["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["containerPort"]
            .clone()
    };
    assert_eq!(container_port("http"), 8080);
    assert_eq!(container_port("https"), 8443);
    // The Service selects exactly the pods of the Deployment.
    let selector = &svc["spec"]["selector"];
    let labels = &r.pod()["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&labels[k], v, "pod label {k}");
    }
}

/// (apiGroup, resource) -> verbs, from a role's rules.
fn grants(role: &Value) -> std::collections::BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = std::collections::BTreeMap::new();
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    for rule in role["rules"].as_array().unwrap() {
        for group in strs(&rule["apiGroups"]) {
            for resource in strs(&rule["resources"]) {
                out.entry((group.clone(), resource))
                    .or_insert_with(BTreeSet::new)
                    .extend(strs(&rule["verbs"]));
            }
        }
    }
    out
}

#[test]
fn rbac_reads_cluster_wide_writes_only_status_and_leases_secrets_per_namespace() {
    let r = Rendered::with(INTEGRATION_OFF);
    let cluster = grants(
        r.objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole")
            .unwrap(),
    );
    let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    let write: BTreeSet<String> = ["patch", "update"].map(String::from).into();
    let mut expected = std::collections::BTreeMap::new();
    for resource in [
        "gateways",
        "httproutes",
        "grpcroutes",
        "tcproutes",
        "tlsroutes",
        "referencegrants",
        "backendtlspolicies",
        "gatewayclasses",
    ] {
        expected.insert(
            ("gateway.networking.k8s.io".to_owned(), resource.to_owned()),
            read.clone(),
        );
    }
    for resource in ["services", "pods", "namespaces"] {
        expected.insert((String::new(), resource.to_owned()), read.clone());
    }
    expected.insert(
        ("discovery.k8s.io".to_owned(), "endpointslices".to_owned()),
        read.clone(),
    );
    for resource in [
        "gatewayclasses/status",
        "gateways/status",
        "httproutes/status",
        "grpcroutes/status",
        "tcproutes/status",
        "tlsroutes/status",
        "backendtlspolicies/status",
    ] {
        expected.insert(
            ("gateway.networking.k8s.io".to_owned(), resource.to_owned()),
            write.clone(),
        );
    }
    for (group, resource) in [
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("gateway.solo.io", "gateways"),
        ("gateway.solo.io", "virtualservices"),
        ("gloo.solo.io", "upstreams"),
        ("security.istio.io", "authorizationpolicies"),
        ("gateway.envoyproxy.io", "backendtrafficpolicies"),
        ("gateway.envoyproxy.io", "clienttrafficpolicies"),
    ] {
        expected.insert((group.to_owned(), resource.to_owned()), read.clone());
    }
    assert_eq!(cluster, expected, "the ClusterRole grants exactly these");

    let leases = grants(r.object("Role", "gateway-proxy-leases"));
    assert_eq!(
        r.object("Role", "gateway-proxy-leases")["metadata"]["namespace"],
        RELEASE_NAMESPACE
    );
    assert_eq!(
        leases,
        [(
            ("coordination.k8s.io".to_owned(), "leases".to_owned()),
            ["create", "get", "update"].map(String::from).into()
        )]
        .into()
    );

    // Secrets and ConfigMaps: a Role in the release namespace only (the default list).
    let roles: Vec<&Value> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "gateway-proxy-secrets")
        .collect();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], RELEASE_NAMESPACE);
    assert_eq!(
        grants(roles[0]),
        [
            ((String::new(), "configmaps".to_owned()), read.clone()),
            ((String::new(), "secrets".to_owned()), read.clone()),
        ]
        .into()
    );
}

#[test]
fn autoscaler_replaces_fixed_replicas_when_enabled() {
    let r = Rendered::with(&["gatewayProxies.gatewayProxy.horizontalPodAutoscaler.enabled=true"]);
    let hpa = r.object("HorizontalPodAutoscaler", "gateway-proxy");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "gateway-proxy");
    assert!(r.deployment()["spec"]["replicas"].is_null());
    let r = Rendered::with(&["gatewayProxies.gatewayProxy.kind.deployment.replicas=3"]);
    assert_eq!(r.deployment()["spec"]["replicas"], 3);
}

// ---------------------------------------------------------------- values checks

/// Renders with a values file holding `values`; returns the failure's stderr.
fn render_failure(values: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).expect("write values file");
    let out = helm_template(&["--values", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "helm template accepted bad values:\n{values}"
    );
    text(&out.stderr)
}

#[test]
fn values_with_a_wrong_type_fail_naming_the_key() {
    let stderr = render_failure("global:\n  istioIntegration:\n    enabled: \"yes\"\n");
    assert!(
        stderr.contains("/global/istioIntegration/enabled") && stderr.contains("boolean"),
        "message names the key and the expected type:\n{stderr}"
    );

    let stderr = render_failure(
        "gatewayProxies:\n  gatewayProxy:\n    podTemplate:\n      httpPort: http\n",
    );
    assert!(
        stderr.contains("/gatewayProxies/gatewayProxy/podTemplate/httpPort")
            && stderr.contains("integer"),
        "message names the key and the expected type:\n{stderr}"
    );
}

#[test]
fn values_with_an_unknown_key_fail_naming_the_key() {
    let stderr = render_failure(
        "gatewayProxies:\n  gatewayProxy:\n    istioDiscoveryAdress: istiod.istio-system.svc:15012\n",
    );
    assert!(
        stderr.contains("istioDiscoveryAdress") && stderr.contains("/gatewayProxies/gatewayProxy"),
        "message names the unknown key and where it is:\n{stderr}"
    );
}

#[test]
fn values_with_an_unknown_mode_fail_naming_the_key() {
    let stderr = render_failure("global:\n  istioIntegration:\n    mode: ambient\n");
    assert!(
        stderr.contains("/global/istioIntegration/mode"),
        "message names the key:\n{stderr}"
    );
}

#[test]
fn sidecar_mode_refuses_istio_proxy_uid_for_the_gateway() {
    let values = r#"
global:
  istioIntegration:
    enabled: true
    mode: sidecar
gatewayProxies:
  gatewayProxy:
    podTemplate:
      podSecurityContext:
        runAsUser: 1337
"#;
    let stderr = render_failure(values);
    assert!(
        stderr.contains("podSecurityContext.runAsUser") && stderr.contains("1337"),
        "message names the key and the uid:\n{stderr}"
    );
}

#[test]
fn config_resources_without_a_name_fail_naming_the_entry() {
    let values = r#"
gatewayProxies:
  gatewayProxy:
    provider: {type: file}
    config:
      resources:
        - apiVersion: gateway.networking.k8s.io/v1
          kind: HTTPRoute
          metadata: {}
"#;
    let stderr = render_failure(values);
    assert!(
        stderr.contains("gatewayProxies.gatewayProxy.config.resources[0]"),
        "message names the entry:\n{stderr}"
    );
}

#[test]
fn install_notes_tell_the_mesh_next_steps() {
    let chart = chart_dir();
    let out = run(
        &tool("helm"),
        [
            OsStr::new("install"),
            OsStr::new("meshgate"),
            chart.as_os_str(),
            OsStr::new("--namespace"),
            OsStr::new(RELEASE_NAMESPACE),
            OsStr::new("--dry-run=client"),
            OsStr::new("--set"),
            OsStr::new("global.istioIntegration.enabled=true"),
        ],
    );
    assert!(
        out.status.success(),
        "helm install --dry-run=client:\n{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let notes = &stdout[stdout.find("NOTES:").expect("helm prints NOTES")..];
    for step in [
        "istio-injection=enabled",
        "PeerAuthentication",
        "mode: STRICT",
        "curl",
        "X-Forwarded-Client-Cert",
        "spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy",
    ] {
        assert!(notes.contains(step), "NOTES lack {step:?}:\n{notes}");
    }
}

// ---------------------------------------------------------------- schemas

/// Runs `kubernetes-validate --strict` on a file; returns (success, output).
fn kubernetes_validate(file: &Path, version: &str) -> (bool, String) {
    let out = run(
        &tool("kubernetes-validate"),
        [
            OsStr::new("--strict"),
            OsStr::new("--kubernetes-version"),
            OsStr::new(version),
            file.as_os_str(),
        ],
    );
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.success(), output)
}

/// Every object of `objects` validated, except the custom resources it has no schema for.
fn assert_validates(file: &Path, objects: &[Value], version: &str) {
    let (ok, output) = kubernetes_validate(file, version);
    assert!(
        ok,
        "{} does not validate against Kubernetes {version}:\n{output}",
        file.display()
    );
    for o in objects {
        let kind = o["kind"].as_str().unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        let verdict = format!("resource {}/{} ", kind.to_lowercase(), name);
        if CUSTOM_RESOURCE_KINDS.contains(&kind) {
            assert!(
                output.contains(&format!("Couldn't find schema for kind {kind}")),
                "{kind} {name}: expected kubernetes-validate to have no schema for it:\n{output}"
            );
        } else {
            assert!(
                output.contains(&format!("passed for {verdict}")),
                "{kind} {name} in {} not reported as passed:\n{output}",
                file.display()
            );
        }
    }
    for line in output.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            CUSTOM_RESOURCE_KINDS
                .iter()
                .any(|k| line.contains(&format!("kind {k} "))),
            "unexpected warning from kubernetes-validate: {line}"
        );
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_schemas() {
    let cases: [(&str, Vec<&str>); 6] = [
        ("integration-off", INTEGRATION_OFF.to_vec()),
        ("file-provider", FILE_PROVIDER.to_vec()),
        ("native", NATIVE.to_vec()),
        ("sidecar", SIDECAR.to_vec()),
        ("sds-only", SDS_ONLY.to_vec()),
        (
            "native-hpa-nodeports",
            [
                NATIVE,
                &[
                    "gatewayProxies.gatewayProxy.horizontalPodAutoscaler.enabled=true",
                    "gatewayProxies.gatewayProxy.service.type=NodePort",
                    "gatewayProxies.gatewayProxy.service.httpNodePort=30080",
                    "gatewayProxies.gatewayProxy.podDisruptionBudget.maxUnavailable=null",
                    "gatewayProxies.gatewayProxy.podDisruptionBudget.minAvailable=50%",
                ],
            ]
            .concat(),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, set) in cases {
        let r = Rendered::with(&set);
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &r.yaml).unwrap();
        for version in [KUBERNETES_VERSION, OLDEST_KUBERNETES_VERSION] {
            assert_validates(&file, &r.objects, version);
        }
        // The gateway's own configuration inside the ConfigMap is well-formed too.
        if r.kinds().contains("ConfigMap") {
            let config = r.object("ConfigMap", "gateway-proxy-config");
            let gateway = parse_documents(config["data"]["gateway.yaml"].as_str().unwrap());
            assert_gateway_shape(&gateway[0]);
        }
    }
}

#[test]
fn samples_validate_against_kubernetes_schemas() {
    let dir = samples_dir();
    let mut seen_kinds = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("manifests/samples exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("values-")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in &files {
        let objects = parse_documents(&std::fs::read_to_string(file).unwrap());
        assert_validates(file, &objects, KUBERNETES_VERSION);
        for o in &objects {
            seen_kinds.insert(o["kind"].as_str().unwrap().to_owned());
            match o["kind"].as_str().unwrap() {
                "Gateway" => assert_gateway_shape(o),
                "GatewayClass" => {
                    assert_eq!(o["apiVersion"], "gateway.networking.k8s.io/v1");
                    assert_eq!(
                        o["spec"]["controllerName"],
                        "meshgate.io/gateway-controller"
                    );
                }
                "HTTPRoute" => assert_httproute_shape(o),
                "PeerAuthentication" => {
                    assert_eq!(o["apiVersion"], "security.istio.io/v1");
                    assert_eq!(o["spec"]["mtls"]["mode"], "STRICT");
                }
                _ => {}
            }
        }
    }
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Service",
        "Deployment",
        "Gateway",
        "HTTPRoute",
        "PeerAuthentication",
    ] {
        assert!(seen_kinds.contains(kind), "no sample holds a {kind}");
    }
}

#[test]
fn walkthrough_values_route_to_the_httpbin_sample() {
    let values = samples_dir().join("values-httpbin.yaml");
    let r = Rendered::from_args(&["--values", values.to_str().unwrap()]);
    assert_eq!(r.containers(), ["gateway", "sds-agent"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("walkthrough.yaml");
    std::fs::write(&file, &r.yaml).unwrap();
    assert_validates(&file, &r.objects, KUBERNETES_VERSION);

    // The gateway's configuration holds the same HTTPRoute and Service as the samples.
    let config = &r.object("ConfigMap", "gateway-proxy-config")["data"];
    let loaded: Vec<Value> = config
        .as_object()
        .unwrap()
        .values()
        .flat_map(|doc| parse_documents(doc.as_str().unwrap()))
        .collect();
    let find = |objs: &[Value], kind: &str| -> Value {
        objs.iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    let route_sample = parse_documents(
        &std::fs::read_to_string(samples_dir().join("gateway-httproute.yaml")).unwrap(),
    );
    let httpbin_sample =
        parse_documents(&std::fs::read_to_string(samples_dir().join("httpbin.yaml")).unwrap());
    assert_eq!(find(&loaded, "HTTPRoute"), find(&route_sample, "HTTPRoute"));
    assert_eq!(find(&loaded, "Service"), find(&httpbin_sample, "Service"));
    // The chart's Gateway is the one the sample shows and the route attaches to.
    assert_eq!(find(&loaded, "Gateway"), find(&route_sample, "Gateway"));
}

/// The fields of a Gateway that the gateway needs (Gateway API v1).
fn assert_gateway_shape(gateway: &Value) {
    assert_eq!(gateway["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(gateway["kind"], "Gateway");
    assert!(gateway["metadata"]["name"].is_string());
    assert!(gateway["spec"]["gatewayClassName"].is_string());
    let listeners = gateway["spec"]["listeners"].as_array().expect("listeners");
    assert!(!listeners.is_empty());
    for l in listeners {
        assert!(l["name"].is_string(), "listener name: {l}");
        assert!(l["port"].is_u64(), "listener port: {l}");
        assert!(
            ["HTTP", "HTTPS", "TLS", "TCP"].contains(&l["protocol"].as_str().unwrap_or("")),
            "listener protocol: {l}"
        );
    }
}

/// The fields of an HTTPRoute that the gateway needs (Gateway API v1).
fn assert_httproute_shape(route: &Value) {
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    let parents = route["spec"]["parentRefs"].as_array().expect("parentRefs");
    assert!(parents.iter().all(|p| p["name"].is_string()));
    for rule in route["spec"]["rules"].as_array().expect("rules") {
        for b in rule["backendRefs"].as_array().expect("backendRefs") {
            assert!(
                b["name"].is_string() && b["port"].is_u64(),
                "backendRef {b}"
            );
        }
    }
}

// ---------------------------------------------------------------- walkthrough

#[test]
fn kind_walkthrough_passes_bash_n_and_shellcheck() {
    let script = workspace_root().join("scripts/kind-walkthrough");
    assert!(script.is_file(), "{} is missing", script.display());
    let out = run(Path::new("bash"), [OsStr::new("-n"), script.as_os_str()]);
    assert!(out.status.success(), "bash -n:\n{}", text(&out.stderr));
    let out = run(
        &tool_or_system("shellcheck"),
        [OsStr::new("--shell=bash"), script.as_os_str()],
    );
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------- documentation

/// Dotted keys of the values the schema defines, down to the leaves (free-form
/// objects such as `resources` count as leaves).
fn schema_keys(schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let closed = schema["additionalProperties"] == false;
    match schema["properties"].as_object() {
        Some(props) if closed => {
            for (k, sub) in props {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                schema_keys(sub, &key, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn readme_documents_every_value() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .expect("values.schema.json is JSON");
    let readme = std::fs::read_to_string(workspace_root().join("manifests/README.md")).unwrap();
    let mut keys = Vec::new();
    schema_keys(&schema, "", &mut keys);
    assert!(keys.len() > 40, "schema walk found {keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "manifests/README.md's values table lacks {missing:?}"
    );
}

/// Prometheus finds the gateway as it finds any pod (the `prometheus.io/*` annotations
/// its kubernetes-pods job and Istio's metrics merging read), on a metrics-only port; in
/// sidecar mode the istio-proxy reports the upstream traffic, so the gateway's own
/// istio_* series are off there (Kiali would count each request twice).
#[test]
fn stats_are_exposed_for_prometheus_on_their_own_port_and_off_when_asked() {
    for (set, istio_metrics) in [(NATIVE, None), (SIDECAR, Some("off"))] {
        let r = Rendered::with(set);
        let gateway = r.container("gateway");
        let gateway_args = args(gateway);
        assert_eq!(flag(&gateway_args, "--stats-addr"), Some("0.0.0.0:8081"));
        assert_eq!(flag(&gateway_args, "--istio-metrics"), istio_metrics);
        assert_eq!(
            flag(&gateway_args, "--admin-addr"),
            Some("127.0.0.1:19000"),
            "the admin API stays on loopback"
        );
        let port = gateway["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http-monitoring")
            .expect("http-monitoring port");
        assert_eq!(port["containerPort"], 8081);
        assert_eq!(r.pod_annotation("prometheus.io/scrape"), Some("true"));
        assert_eq!(r.pod_annotation("prometheus.io/port"), Some("8081"));
        assert_eq!(r.pod_annotation("prometheus.io/path"), Some("/metrics"));
    }
    for mode in [NATIVE, SIDECAR] {
        let off = [mode, &["gatewayProxies.gatewayProxy.stats.enabled=false"]].concat();
        let r = Rendered::with(&off);
        let gateway_args = args(r.container("gateway"));
        assert_eq!(flag(&gateway_args, "--stats-addr"), None);
        assert_eq!(flag(&gateway_args, "--istio-metrics"), None);
        assert_eq!(r.pod_annotation("prometheus.io/scrape"), None);
    }
}
