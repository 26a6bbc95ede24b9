//! The mesh lab's generated configuration, checked by the real programs without root:
//! the gateway's own `validate` for the Gateway API files, Envoy's `--mode validate` for
//! the sidecar and istio-proxy bootstraps, and shellcheck for the lab's scripts (and
//! `scripts/bench-tcp`, `scripts/bench-tracing`, `scripts/bench-kube`).

use std::path::Path;
use std::process::Command;

use e2e::lab::config::{EdgeCerts, gateway_resources, hosts};
use e2e::lab::{HTTPBIN_PORT, Pod, proxy};
use e2e::sidecar::{
    InboundPolicy, SidecarTracing, capture_bootstrap_yaml, traced_capture_bootstrap_yaml,
};
use e2e::tools::{tool, tool_or_system, workspace_bin, workspace_root};

fn pods(dir: &Path) -> (Pod, Pod, Pod) {
    let gw = Pod::new(
        dir,
        "gateway-sidecar",
        "veth-gws",
        11,
        "gateway-system",
        "gateway-sidecar",
    );
    let v1 = Pod::new(dir, "httpbin", "veth-hb1", 20, "default", "httpbin");
    let v2 = Pod::new(dir, "httpbin-v2", "veth-hb2", 21, "default", "httpbin-v2");
    (gw, v1, v2)
}

fn ok(out: std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn lab_gateway_resources_pass_gateway_validate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = EdgeCerts::make(&dir.path().join("certs")).expect("openssl certificates");
    let (_, v1, v2) = pods(dir.path());
    let yaml = gateway_resources(&certs, &v1, &v2).unwrap();
    // The sidecar-layout gateway's file: the Gateway API objects, Istio's and Gloo's.
    let client = std::net::Ipv4Addr::new(10, 77, 0, 100);
    let yaml = format!("{yaml}---\n{}", e2e::lab::config::sidecar_extras(client));
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = Command::new(workspace_bin("gateway"))
        .args(["--pod-labels", e2e::lab::config::GATEWAY_POD_LABELS])
        .args(["validate", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    ok(out, "gateway validate");
    for needle in [
        hosts::SECURE,
        hosts::MTLS,
        hosts::PUBLIC,
        hosts::ECHO,
        "weight: 10",
        "10.77.0.21",
    ] {
        assert!(yaml.contains(needle), "{needle} missing from:\n{yaml}");
    }
}

#[test]
fn lab_edge_certificates_verify_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let c = EdgeCerts::make(dir.path()).expect("openssl certificates");
    for (ca, cert, purpose) in [
        (&c.server_ca, &c.server_cert, "sslserver"),
        (&c.client_ca, &c.client_cert, "sslclient"),
    ] {
        let out = Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(ca)
            .arg(cert)
            .output()
            .unwrap();
        ok(out, &format!("openssl verify -purpose {purpose}"));
    }
    // The two CAs are distinct: the client certificate does not chain to the server CA.
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&c.server_ca)
        .arg(&c.client_cert)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "client cert verified against the server CA"
    );
}

#[test]
fn lab_envoy_bootstraps_pass_envoy_validate() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, v1, v2) = pods(dir.path());
    let socket = dir.path().join("sds.sock");
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], HTTPBIN_PORT));
    let bootstraps = [
        (
            "sidecar",
            capture_bootstrap_yaml(&v1.identity, InboundPolicy::Strict, app, &socket),
        ),
        (
            "traced sidecar",
            traced_capture_bootstrap_yaml(
                &v1.identity,
                InboundPolicy::Strict,
                app,
                &socket,
                &SidecarTracing {
                    collector: std::net::SocketAddr::from(([10, 77, 0, 2], 4317)),
                    service_name: "httpbin.default".into(),
                },
            ),
        ),
        (
            "istio-proxy",
            proxy::gateway_proxy_bootstrap(
                &gw.identity,
                "httpbin.default.svc.cluster.local",
                HTTPBIN_PORT,
                &[v1.identity.clone(), v2.identity.clone()],
                &socket,
            ),
        ),
    ];
    for (name, yaml) in bootstraps {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let out = Command::new(tool("envoy"))
            .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let text = ok(out, &format!("envoy --mode validate ({name})"));
        assert!(
            text.contains("configuration") && text.contains("OK"),
            "{name}: {text}"
        );
    }
}

#[test]
fn lab_scripts_pass_bash_n_and_shellcheck() {
    for name in [
        "demo",
        "e2e",
        "test",
        "bench",
        "bench-tcp",
        "bench-tracing",
        "bench-kube",
        "bench-compare",
        "bench-device",
        "order-functions",
    ] {
        let script = workspace_root().join("scripts").join(name);
        ok(
            Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .unwrap(),
            &format!("bash -n {name}"),
        );
        let shellcheck = tool_or_system("shellcheck");
        ok(
            Command::new(shellcheck).arg(&script).output().unwrap(),
            &format!("shellcheck {name}"),
        );
    }
}
