//! The real kubectl against the Kubernetes API server fixture: apply of CRDs and of
//! Gateway API, Istio and Gloo samples (validated, no `--validate=false`), re-apply as a
//! patch, `get -o yaml`, `get -w`, `delete`, `patch --subresource=status`, server-side
//! apply conflicts, `api-resources` and `explain`.
//!
//! kubectl comes from `$MESHGATE_TOOLS` or `<workspace>/.cache/tools/bin` (scripts/install-tools),
//! else `$PATH`; without it these tests fail and say how to install it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use e2e::apiserver::ApiServer;
use e2e::tools::{tool_or_system, workspace_root};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(20);

fn fixtures() -> PathBuf {
    workspace_root().join("e2e/tests/fixtures/apiserver")
}

/// kubectl pointed at one fixture, with its own kubeconfig, HOME and discovery cache.
struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &ApiServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Self {
            bin: tool_or_system("kubectl"),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("cache").display()
            ))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .expect("kubectl finished in time");
        out.unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Runs kubectl, asserting success with nothing on stderr; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stderr.is_empty(),
            "kubectl {args:?} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        stdout.into_owned()
    }

    /// Writes a file into the scratch dir.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }
}

async fn fixture() -> (ApiServer, Kubectl) {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("start fixture");
    let kubectl = Kubectl::new(&server);
    (server, kubectl)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

async fn apply_crds(k: &Kubectl) {
    let out = k
        .ok(&["apply", "-f", &path(&fixtures().join("crds"))])
        .await;
    assert_eq!(out.matches(" created").count(), 10, "{out}");
}

fn get(server: &ApiServer, group: &str, version: &str, plural: &str, name: &str) -> Value {
    let reg = server.store().registry();
    let rt = reg
        .all()
        .find(|t| t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version))
        .unwrap_or_else(|| panic!("{plural}.{group} is served"));
    server
        .store()
        .get(rt, if rt.namespaced { "default" } else { "" }, name)
        .unwrap_or_else(|e| panic!("{plural}/{name}: {e}"))
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("samples").join(name)).expect("sample")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_crds_then_samples_of_every_dialect() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    for file in ["gateway-api.yaml", "istio.yaml", "gloo.yaml"] {
        let out = k
            .ok(&["apply", "-f", &path(&fixtures().join("samples").join(file))])
            .await;
        assert_eq!(out.matches(" created").count(), 2, "{out}");
    }
    for (group, version, plural, name) in [
        ("gateway.networking.k8s.io", "v1", "gateways", "meshgate"),
        ("gateway.networking.k8s.io", "v1", "httproutes", "httpbin"),
        ("networking.istio.io", "v1", "gateways", "edge"),
        ("networking.istio.io", "v1", "virtualservices", "httpbin"),
        ("gateway.solo.io", "v1", "virtualservices", "httpbin"),
        (
            "gateway.envoyproxy.io",
            "v1alpha1",
            "backendtrafficpolicies",
            "httpbin-ratelimit",
        ),
    ] {
        let obj = get(&server, group, version, plural, name);
        assert_eq!(obj["metadata"]["generation"], 1, "{plural}.{group}/{name}");
    }
    // Validation was on: kubectl asked the server to validate strictly.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.uri.contains("fieldValidation=Strict"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reapply_after_an_edit_is_a_patch_keeping_uid_and_bumping_generation() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    k.ok(&[
        "apply",
        "-f",
        &k.file("route.yaml", &sample("gateway-api.yaml")),
    ])
    .await;
    let before = get(
        &server,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httpbin",
    );
    let edited = sample("gateway-api.yaml").replace("httpbin.example.com", "edited.example.com");
    let mark = server.requests().len();
    let out = k.ok(&["apply", "-f", &k.file("route.yaml", &edited)]).await;
    assert!(
        out.contains("httproute.gateway.networking.k8s.io/httpbin configured")
            && out.contains("gateway.gateway.networking.k8s.io/meshgate unchanged"),
        "{out}"
    );
    let after = get(
        &server,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httpbin",
    );
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "same object, not a replacement"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["spec"]["hostnames"][0], "edited.example.com");
    let writes: Vec<_> = server.requests()[mark..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        (writes[0].method.as_str(), writes[0].content_type.as_str()),
        ("PATCH", "application/merge-patch+json"),
        "custom resources get a JSON merge patch"
    );

    // A built-in kind gets a strategic merge patch keyed on the list's merge key.
    k.ok(&["apply", "-f", &k.file("svc.yaml", &sample("service.yaml"))])
        .await;
    let svc_before = get(&server, "", "v1", "services", "httpbin");
    let mark = server.requests().len();
    k.ok(&[
        "apply",
        "-f",
        &k.file(
            "svc.yaml",
            &sample("service.yaml").replace("port: 9090", "port: 9091"),
        ),
    ])
    .await;
    let svc = get(&server, "", "v1", "services", "httpbin");
    assert_eq!(svc["metadata"]["uid"], svc_before["metadata"]["uid"]);
    let ports: Vec<(&str, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["port"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("http", 8000), ("metrics", 9091)]);
    let patch = server.requests()[mark..]
        .iter()
        .find(|r| r.method == "PATCH")
        .cloned()
        .expect("a PATCH");
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_yaml_shows_what_the_server_set() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    k.ok(&[
        "apply",
        "-f",
        &path(&fixtures().join("samples/gateway-api.yaml")),
    ])
    .await;
    let yaml = k
        .ok(&[
            "get",
            "httproute",
            "httpbin",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await;
    let shown: Value = serde_yaml::from_str(&yaml).expect("YAML");
    let stored = get(
        &server,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httpbin",
    );
    assert_eq!(shown["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(shown["kind"], "HTTPRoute");
    assert_eq!(shown["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(
        shown["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );
    assert!(
        shown["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(shown["metadata"]["generation"], 1);
    assert!(
        shown["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        shown["metadata"]["managedFields"][0]["manager"],
        "kubectl-client-side-apply"
    );
    assert!(
        shown["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // The older served version reads the same object.
    let beta: Value = serde_yaml::from_str(
        &k.ok(&[
            "get",
            "httproutes.v1beta1.gateway.networking.k8s.io",
            "httpbin",
            "-o",
            "yaml",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(beta["apiVersion"], "gateway.networking.k8s.io/v1beta1");
    assert_eq!(beta["metadata"]["uid"], stored["metadata"]["uid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_sees_a_change() {
    let (_server, k) = fixture().await;
    apply_crds(&k).await;
    k.ok(&[
        "apply",
        "-f",
        &path(&fixtures().join("samples/gateway-api.yaml")),
    ])
    .await;
    let mut watch = k
        .command(&[
            "get",
            "httproute",
            "httpbin",
            "--watch",
            "-o",
            "jsonpath={.metadata.resourceVersion} {.spec.hostnames[0]}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("initial line")
        .unwrap()
        .expect("a line");
    assert!(first.ends_with(" httpbin.example.com"), "{first}");
    k.ok(&[
        "patch",
        "httproute",
        "httpbin",
        "--type=merge",
        "-p",
        r#"{"spec":{"hostnames":["watched.example.com"]}}"#,
    ])
    .await;
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.ends_with(" watched.example.com") {
                return line;
            }
        }
        panic!("kubectl get -w ended without the change");
    })
    .await
    .expect("the watch showed the change in time");
    let rv = |l: &str| l.split(' ').next().unwrap().parse::<u64>().unwrap();
    assert!(rv(&seen) > rv(&first), "{first} -> {seen}");
    watch.kill().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_removes_the_object() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    k.ok(&[
        "apply",
        "-f",
        &path(&fixtures().join("samples/gateway-api.yaml")),
    ])
    .await;
    k.ok(&[
        "apply",
        "-f",
        &path(&fixtures().join("samples/service.yaml")),
    ])
    .await;
    assert_eq!(
        k.ok(&["delete", "httproute", "httpbin"]).await.trim(),
        "httproute.gateway.networking.k8s.io \"httpbin\" deleted"
    );
    assert_eq!(
        k.ok(&["delete", "service", "httpbin"]).await.trim(),
        "service \"httpbin\" deleted"
    );
    let out = k.run(&["get", "httproute", "httpbin"]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): httproutes.gateway.networking.k8s.io \"httpbin\" not found"
    );
    let gone = server
        .store()
        .registry()
        .all()
        .find(|t| t.plural == "httproutes")
        .map(|t| server.store().get(t, "default", "httpbin").is_err());
    assert_eq!(gone, Some(true));
    // Deleting the CRD stops serving the kind.
    k.ok(&["delete", "crd", "httproutes.gateway.networking.k8s.io"])
        .await;
    let out = k
        .run(&["get", "httproutes.gateway.networking.k8s.io"])
        .await;
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the server doesn't have a resource type \"httproutes\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patch_status_subresource_changes_status_only() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    k.ok(&[
        "apply",
        "-f",
        &path(&fixtures().join("samples/gateway-api.yaml")),
    ])
    .await;
    let status = r#"{"status":{"parents":[{"controllerName":"meshgate.io/gateway","parentRef":{"name":"meshgate"},"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"ok","observedGeneration":1,"lastTransitionTime":"2026-01-01T00:00:00Z"}]}]}}"#;
    let out = k
        .ok(&[
            "patch",
            "httproute",
            "httpbin",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ])
        .await;
    assert_eq!(
        out.trim(),
        "httproute.gateway.networking.k8s.io/httpbin patched"
    );
    let obj = get(
        &server,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httpbin",
    );
    assert_eq!(
        obj["status"]["parents"][0]["conditions"][0]["type"],
        "Accepted"
    );
    assert_eq!(
        obj["metadata"]["generation"], 1,
        "status writes leave generation alone"
    );
    assert_eq!(obj["spec"]["hostnames"][0], "httpbin.example.com");
    // Status sent to the main resource is ignored: nothing changes.
    let out = k
        .ok(&[
            "patch",
            "httproute",
            "httpbin",
            "--type=merge",
            "-p",
            r#"{"status":{"parents":[]}}"#,
        ])
        .await;
    assert_eq!(
        out.trim(),
        "httproute.gateway.networking.k8s.io/httpbin patched (no change)"
    );
    let shown = k
        .ok(&[
            "get",
            "httproute",
            "httpbin",
            "-o",
            "jsonpath={.status.parents[0].controllerName}",
        ])
        .await;
    assert_eq!(shown, "meshgate.io/gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_conflicts_until_forced() {
    let (server, k) = fixture().await;
    apply_crds(&k).await;
    let file = k.file("route.yaml", &sample("gateway-api.yaml"));
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=team-a",
        "-f",
        &file,
    ])
    .await;
    let file = k.file(
        "route.yaml",
        &sample("gateway-api.yaml").replace("httpbin.example.com", "b.example.com"),
    );
    let out = k
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "-f",
            &file,
        ])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("conflict with \"team-a\"")
            && stderr.contains(".spec.hostnames"),
        "{stderr}"
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=team-b",
        "--force-conflicts",
        "-f",
        &file,
    ])
    .await;
    let obj = get(
        &server,
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httpbin",
    );
    assert_eq!(obj["spec"]["hostnames"][0], "b.example.com");
    let managers: Vec<&str> = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["team-a", "team-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_rejects_unknown_fields_like_the_real_server() {
    let (_server, k) = fixture().await;
    apply_crds(&k).await;
    let bad =
        sample("gateway-api.yaml").replace("  hostnames:", "  hostnamez:\n  - x\n  hostnames:");
    let out = k.run(&["apply", "-f", &k.file("bad.yaml", &bad)]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Error from server (BadRequest)")
            && stderr.contains("strict decoding error: unknown field \"spec.hostnamez\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_api_resources_follow_installed_crds() {
    let (_server, k) = fixture().await;
    let before = k.ok(&["api-resources"]).await;
    assert!(
        before
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["leases", "coordination.k8s.io/v1", "true", "Lease"]),
        "{before}"
    );
    assert!(!before.contains("httproutes"), "{before}");
    apply_crds(&k).await;
    let after = k
        .ok(&["api-resources", "--api-group=gateway.networking.k8s.io"])
        .await;
    let rows: Vec<Vec<&str>> = after
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "gateways",
                "gtw",
                "gateway.networking.k8s.io/v1",
                "true",
                "Gateway"
            ],
            vec![
                "httproutes",
                "gateway.networking.k8s.io/v1",
                "true",
                "HTTPRoute"
            ]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_describes_a_crd_field() {
    let (_server, k) = fixture().await;
    apply_crds(&k).await;
    let out = k.ok(&["explain", "httproutes.spec.parentRefs"]).await;
    assert!(
        out.contains("GROUP:      gateway.networking.k8s.io")
            && out.contains("KIND:       HTTPRoute")
            && out.contains("VERSION:    v1"),
        "{out}"
    );
    assert!(
        out.contains("FIELD: parentRefs <[]Object>")
            && out.contains("ParentRefs references the resources"),
        "{out}"
    );
    assert!(out.contains("name\t<string> -required-"), "{out}");
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: httpbin
  labels: {app: httpbin, security.istio.io/tlsMode: istio}
spec:
  serviceAccountName: httpbin
  containers:
  - name: httpbin
    image: kennethreitz/httpbin
    ports: [{containerPort: 80}]
  - name: istio-proxy
    image: istio/proxyv2:1.28.0
    ports: [{containerPort: 15090, name: http-envoy-prom}]
";

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-abc12
  labels: {kubernetes.io/service-name: httpbin}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.2]
  conditions: {ready: true}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reapply_of_pods_and_endpointslices_merges_lists_as_the_real_server() {
    let (server, k) = fixture().await;
    k.ok(&[
        "apply",
        "-f",
        &k.file("pod.yaml", POD),
        "-f",
        &k.file("slice.yaml", SLICE),
    ])
    .await;
    // Pod: containers merge by name (one dropped, one changed), ports by containerPort.
    let edited = POD
        .replace("kennethreitz/httpbin", "mccutchen/go-httpbin")
        .replace("containerPort: 80}", "containerPort: 8080}");
    let edited = edited
        .split("  - name: istio-proxy")
        .next()
        .unwrap()
        .to_string();
    k.ok(&["apply", "-f", &k.file("pod.yaml", &edited)]).await;
    let pod = get(&server, "", "v1", "pods", "httpbin");
    assert_eq!(
        pod["spec"]["containers"],
        serde_json::json!([{"name": "httpbin", "image": "mccutchen/go-httpbin", "ports": [{"containerPort": 8080}]}])
    );
    // EndpointSlice: endpoints is an atomic list; the re-apply replaces it whole.
    k.ok(&[
        "apply",
        "-f",
        &k.file("slice.yaml", &SLICE.replace("10.0.0.1", "10.0.0.3")),
    ])
    .await;
    let slice = get(
        &server,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "httpbin-abc12",
    );
    let addresses: Vec<&str> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["10.0.0.3", "10.0.0.2"]);
    let patches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.content_type)
        .collect();
    assert_eq!(patches, ["application/strategic-merge-patch+json"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_secret_sends_protobuf_which_is_refused_by_name_and_the_apply_idiom_works() {
    let (server, k) = fixture().await;
    let plain = [
        "create",
        "secret",
        "generic",
        "web",
        "--from-literal=token=abc",
    ];
    let out = k.run(&plain).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the body of the request was in an unknown format"),
        "{stderr}"
    );
    let mut dry = plain.to_vec();
    dry.extend(["--dry-run=client", "-o", "yaml"]);
    let yaml = k.ok(&dry).await;
    k.ok(&["apply", "-f", &k.file("secret.yaml", &yaml)]).await;
    let secret = server
        .store()
        .get(
            server
                .store()
                .registry()
                .all()
                .find(|t| t.plural == "secrets")
                .expect("secrets"),
            "default",
            "web",
        )
        .expect("the applied Secret is stored");
    assert_eq!(secret["data"]["token"], "YWJj", "{secret}");
}
