//! The Istio and Gloo samples in `manifests/samples/` pass `gateway validate` for a pod
//! labelled `istio=ingressgateway` in `istio-system`, with the Services and Secrets
//! their comments tell the user to create (certificates made by openssl).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn samples(dir: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/samples")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in {}", root.display());
    files
}

/// What the samples' comments ask the user to create: the app Services and the
/// credential Secrets.
fn cluster_objects(pki: &Pki) -> String {
    let service = |ns: &str, name: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{ports: [{{name: p, port: {port}}}]}}\n"
        )
    };
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let secret = |name: &str, ca: bool| {
        let ca = if ca {
            format!("  ca.crt: |\n{}", indent(pki.read("ca.crt")))
        } else {
            String::new()
        };
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n\
             type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}{ca}",
            indent(pki.read("server.crt")),
            indent(pki.read("server.key"))
        )
    };
    docs(&[
        &service("istioinaction", "webapp", 8080),
        &service("istioinaction", "catalog", 80),
        &service("istioinaction", "tcp-echo-service", 2701),
        &service("istioinaction", "simple-tls-service-1", 80),
        &service("default", "httpbin", 8000),
        &secret("webapp-credential", false),
        &secret("catalog-credential", false),
        &secret("webapp-credential-mtls", true),
    ])
}

fn validate(sample: &Path, extra: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample, dir.path().join("sample.yaml")).unwrap();
    std::fs::write(dir.path().join("cluster.yaml"), extra).unwrap();
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--pod-labels",
            "istio=ingressgateway",
            "--pod-namespace",
            "istio-system",
        ])
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .unwrap()
}

#[test]
fn every_istio_and_gloo_sample_validates_with_the_objects_it_names() {
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["webapp.istioinaction.io"], false);
    let extra = cluster_objects(&pki);
    // Gloo's samples go together: the VirtualService needs the listener of gateway-proxy.
    let dir = tempfile::tempdir().unwrap();
    let gloo = dir.path().join("gloo.yaml");
    let all: Vec<String> = samples("gloo")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    std::fs::write(&gloo, all.join("---\n")).unwrap();
    for sample in samples("istio").iter().chain([&gloo]) {
        let out = validate(sample, &extra);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("configuration is valid"),
            "{}:\n{stdout}\n{stderr}",
            sample.display()
        );
        assert!(
            !stderr.contains("warning"),
            "{}: {stderr}",
            sample.display()
        );
    }
}

#[test]
fn an_https_sample_without_its_secret_is_refused_naming_the_secret() {
    let sample = samples("istio")
        .into_iter()
        .find(|p| p.ends_with("webapp-https.yaml"))
        .unwrap();
    let out = validate(&sample, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Gateway.networking.istio.io istioinaction/coolstore-gateway servers[1]: \
             tls.credentialName: Secret istio-system/webapp-credential not found"
        ),
        "{stderr}"
    );
}
