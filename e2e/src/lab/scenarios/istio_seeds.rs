//! The Istio ingress walkthrough, step by step, on the native gateway: each step is
//! `kubectl apply -f manifests/samples/istio/<step>.yaml` (the files users copy), the
//! credentials made with `kubectl create secret` as the walkthrough makes them, and the
//! walkthrough's own checks with curl, openssl and socat from the client pod.
//!
//! The client connects to the gateway pod's address, so it uses the pod's ports (the
//! `istio-ingressgateway` Service maps 80, 443 and 31400 onto 8080, 8443 and 31400).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};

use super::{Lab, hosts, via, xfcc, xfcc_field};
use crate::curl::CurlResult;
use crate::lab::HTTPS_PORT;
use crate::lab::config::INGRESS_SERVICE_PORTS;
use crate::testing::POLL;

/// How long an applied step may take to be served (it takes milliseconds).
const CONVERGE: Duration = Duration::from_secs(30);
/// The gateway pod's port behind the Service's 31400.
const TCP_PORT: u16 = INGRESS_SERVICE_PORTS[2].1;

fn sample(step: &str) -> PathBuf {
    crate::tools::workspace_root().join(format!("manifests/samples/istio/{step}.yaml"))
}

/// `kubectl apply -f` (or `delete -f`) of a walkthrough step's sample file.
async fn kubectl_file(lab: &Lab, verb: &str, step: &str) -> anyhow::Result<()> {
    let file = sample(step).display().to_string();
    lab.kubectl_ok(&[verb, "-f", &file], "").await.map(|_| ())
}

/// `kubectl create -n <gateway pod's namespace> secret ... --dry-run=client -o yaml |
/// kubectl apply -f -`: the walkthrough's Secret, made by kubectl, applied in JSON (the
/// API server fixture does not decode the protobuf a plain `kubectl create` sends).
async fn create_secret(lab: &Lab, args: &[&str]) -> anyhow::Result<()> {
    let ns = lab.gateway.identity.namespace().to_string();
    let mut all = vec!["create", "-n", &ns, "secret"];
    all.extend_from_slice(args);
    all.extend(["--dry-run=client", "-o", "yaml"]);
    let secret = lab.kubectl_ok(&all, "").await?;
    lab.kubectl_ok(&["apply", "-f", "-"], &secret)
        .await
        .map(|_| ())
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// curl `https://host:port/headers` from the client pod, pinned to the native gateway,
/// trusting `ca`, with `extra` arguments (client certificates).
async fn https(
    lab: &Lab,
    host: &str,
    port: u16,
    ca: &str,
    extra: &[&str],
) -> anyhow::Result<CurlResult> {
    let pin = format!("{host}:{port}:{}", lab.gateway.addr);
    let url = format!("https://{host}:{port}/headers");
    let mut args = vec!["--cacert", ca, "--resolve", &pin];
    args.extend_from_slice(extra);
    args.push(&url);
    lab.curl(&lab.client, &args).await
}

/// Polls `check` until it holds, or fails naming `what`; returns how long it took.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<Duration> {
    super::poll(what, CONVERGE, POLL, async || {
        Ok(if check().await {
            Ok(())
        } else {
            Err("not yet".into())
        })
    })
    .await
}

/// The subject and issuer of the certificate the gateway's port presents for SNI `host`
/// (openssl s_client from the client pod).
async fn presented_certificate(lab: &Lab, host: &str, port: u16) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lab.client.ns, "openssl", "s_client"])
        .args([
            "-connect",
            &lab.gateway.at(port).to_string(),
            "-servername",
            host,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running openssl s_client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.trim_start_matches(prefix).trim().to_string())
    };
    let subject =
        line("subject=").with_context(|| format!("s_client saw no certificate: {text}"))?;
    let issuer = line("issuer=").unwrap_or_default();
    Ok(format!("{subject} (issuer {issuer})"))
}

/// Step 1: a Gateway on port 80 for webapp.istioinaction.io and a VirtualService to the
/// webapp Service on 8080; routed by Host, 404 without it.
pub(super) async fn webapp_on_80(lab: &mut Lab) -> anyhow::Result<String> {
    kubectl_file(lab, "apply", "webapp-gateway").await?;
    let served = until("webapp.istioinaction.io -> 200", async || {
        let r = via(lab, &lab.gateway, hosts::WEBAPP, "/headers", &[]).await;
        r.is_ok_and(|r| r.status == Some(200))
    })
    .await?;
    let r = via(lab, &lab.gateway, hosts::WEBAPP, "/headers", &[]).await?;
    let x = xfcc(&r)?;
    let by = xfcc_field(&x, "By").unwrap_or_default();
    ensure!(
        by == lab.webapp.identity.to_string(),
        "served by {by}, expected the webapp pod ({})",
        lab.webapp.identity
    );
    let url = format!("http://{}/headers", lab.gateway.at(crate::lab::HTTP_PORT));
    let bare = lab.curl(&lab.client, &[&url]).await?;
    ensure!(bare.status == Some(404), "without the Host header: {bare}");
    Ok(format!(
        "apply -> Host {} 200 after {} ms, served by {by} over mTLS; without Host 404",
        hosts::WEBAPP,
        served.as_millis()
    ))
}

/// Step 2: HTTPS SIMPLE from the `webapp-credential` Secret, and port 80 redirecting.
pub(super) async fn webapp_https(lab: &mut Lab) -> anyhow::Result<String> {
    let certs = lab.certs.clone();
    let (cert, key) = (path(&certs.webapp_cert), path(&certs.webapp_key));
    create_secret(
        lab,
        &["tls", "webapp-credential", "--cert", &cert, "--key", &key],
    )
    .await?;
    kubectl_file(lab, "apply", "webapp-https").await?;
    let ca = path(&certs.server_ca);
    let served = until("HTTPS webapp.istioinaction.io -> 200", async || {
        let r = https(lab, hosts::WEBAPP, HTTPS_PORT, &ca, &[]).await;
        r.is_ok_and(|r| r.status == Some(200))
    })
    .await?;
    let other_ca = path(&certs.upstream_ca);
    let untrusted = https(lab, hosts::WEBAPP, HTTPS_PORT, &other_ca, &[]).await?;
    ensure!(
        untrusted.exit == 60,
        "trusting another CA, curl should refuse the certificate (exit 60): {untrusted}"
    );
    let redirect = via(lab, &lab.gateway, hosts::WEBAPP, "/api/catalog", &[]).await?;
    let location = redirect.header("location").unwrap_or_default().to_string();
    let expected = format!("https://{}/api/catalog", hosts::WEBAPP);
    ensure!(
        redirect.status == Some(301) && location == expected,
        "HTTP got {redirect} Location {location:?}, expected 301 to {expected}"
    );
    Ok(format!(
        "kubectl create secret tls + apply -> HTTPS 200 (--cacert --resolve) after {} ms; \
         other CA: exit 60; HTTP 301 -> {location}",
        served.as_millis()
    ))
}

/// Step 3: MUTUAL from `webapp-credential-mtls` (tls.crt, tls.key and ca.crt).
pub(super) async fn webapp_mutual(lab: &mut Lab) -> anyhow::Result<String> {
    let c = lab.certs.clone();
    let files = [
        format!("--from-file=tls.crt={}", path(&c.webapp_cert)),
        format!("--from-file=tls.key={}", path(&c.webapp_key)),
        format!("--from-file=ca.crt={}", path(&c.client_ca)),
    ];
    let mut args = vec!["generic", "webapp-credential-mtls"];
    args.extend(files.iter().map(String::as_str));
    create_secret(lab, &args).await?;
    kubectl_file(lab, "apply", "webapp-mtls").await?;
    let ca = path(&c.server_ca);
    let client = [
        "--cert".to_string(),
        path(&c.client_cert),
        "--key".to_string(),
        path(&c.client_key),
    ];
    let client: Vec<&str> = client.iter().map(String::as_str).collect();
    // The SIMPLE server of the previous step answers without a certificate until the
    // MUTUAL one replaces it.
    let switched = until("MUTUAL: refused without a client certificate", async || {
        let r = https(lab, hosts::WEBAPP, HTTPS_PORT, &ca, &[]).await;
        r.is_ok_and(|r| r.status.is_none())
    })
    .await?;
    let without = https(lab, hosts::WEBAPP, HTTPS_PORT, &ca, &[]).await?;
    let with = https(lab, hosts::WEBAPP, HTTPS_PORT, &ca, &client).await?;
    xfcc(&with).context("with the client certificate")?;
    let rogue = [
        "--cert".to_string(),
        path(&c.rogue_cert),
        "--key".to_string(),
        path(&c.rogue_key),
    ];
    let rogue: Vec<&str> = rogue.iter().map(String::as_str).collect();
    let wrong = https(lab, hosts::WEBAPP, HTTPS_PORT, &ca, &rogue).await?;
    ensure!(
        wrong.status.is_none(),
        "a client certificate from a CA not in ca.crt was accepted: {wrong}"
    );
    Ok(format!(
        "MUTUAL served after {} ms: no cert: curl exit {}; other CA's cert: exit {}; \
         client cert: HTTP 200",
        switched.as_millis(),
        without.exit,
        wrong.exit
    ))
}

/// Step 4: webapp and catalog on one port, each with its own certificate, chosen by SNI.
pub(super) async fn two_hosts_by_sni(lab: &mut Lab) -> anyhow::Result<String> {
    let c = lab.certs.clone();
    let (cert, key) = (path(&c.catalog_cert), path(&c.catalog_key));
    create_secret(
        lab,
        &["tls", "catalog-credential", "--cert", &cert, "--key", &key],
    )
    .await?;
    kubectl_file(lab, "apply", "multiple-hosts-sni").await?;
    let ca = path(&c.server_ca);
    let served = until("both hosts -> 200 over HTTPS", async || {
        let mut ok = true;
        for host in [hosts::WEBAPP, hosts::CATALOG] {
            let r = https(lab, host, HTTPS_PORT, &ca, &[]).await;
            ok &= r.is_ok_and(|r| r.status == Some(200));
        }
        ok
    })
    .await?;
    let mut seen = Vec::new();
    for host in [hosts::WEBAPP, hosts::CATALOG] {
        let cert = presented_certificate(lab, host, HTTPS_PORT).await?;
        ensure!(
            cert.contains(&format!("CN={host}")) || cert.contains(&format!("CN = {host}")),
            "SNI {host}: the gateway presented {cert}"
        );
        seen.push(format!("SNI {host} -> {cert}"));
    }
    kubectl_file(lab, "delete", "multiple-hosts-sni").await?;
    Ok(format!(
        "both 200 after {} ms; {}",
        served.as_millis(),
        seen.join("; ")
    ))
}

/// Bytes through socat from the client pod to the gateway's TCP port; what came back.
async fn socat_round_trip(lab: &Lab, port: u16, message: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let target = format!("TCP:{}", lab.gateway.at(port));
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lab.client.ns])
        .arg(crate::tools::tool_or_system("socat"))
        .args(["-t", "2", "-", &target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running socat")?;
    let mut stdin = child.stdin.take().context("socat stdin")?;
    stdin.write_all(message.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("socat did not finish within 10 s")??;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The TCP echo on 31400: bytes go to socat's echo in the echo pod and come back.
pub(super) async fn tcp_echo(lab: &mut Lab) -> anyhow::Result<String> {
    kubectl_file(lab, "apply", "tcp-echo").await?;
    let message = "hello from the client pod\n".repeat(100);
    let served = until("the TCP echo on 31400", async || {
        let back = socat_round_trip(lab, TCP_PORT, &message).await;
        back.is_ok_and(|b| b == message)
    })
    .await?;
    kubectl_file(lab, "delete", "tcp-echo").await?;
    Ok(format!(
        "{} bytes sent through port {TCP_PORT}, the same {} bytes echoed back (after {} ms)",
        message.len(),
        message.len(),
        served.as_millis()
    ))
}

/// SNI passthrough on 31400: the client completes TLS with the upstream itself.
pub(super) async fn sni_passthrough(lab: &mut Lab) -> anyhow::Result<String> {
    kubectl_file(lab, "apply", "sni-passthrough").await?;
    let upstream_ca = path(&lab.certs.upstream_ca);
    let host = hosts::SNI_PASSTHROUGH;
    let served = until("HTTPS through the passthrough", async || {
        let r = https(lab, host, TCP_PORT, &upstream_ca, &[]).await;
        r.is_ok_and(|r| r.status == Some(200))
    })
    .await?;
    let cert = presented_certificate(lab, host, TCP_PORT).await?;
    ensure!(
        cert.contains("meshlab upstream CA"),
        "the client saw {cert}, not the upstream's own certificate"
    );
    let edge_ca = path(&lab.certs.server_ca);
    let edge = https(lab, host, TCP_PORT, &edge_ca, &[]).await?;
    ensure!(
        edge.exit == 60,
        "trusting only the gateway's edge CA should fail (exit 60): {edge}"
    );
    kubectl_file(lab, "delete", "sni-passthrough").await?;
    Ok(format!(
        "HTTPS 200 from openssl s_server after {} ms; the client saw {cert}; edge CA: exit 60",
        served.as_millis()
    ))
}

/// The Gloo Edge + Istio walkthrough on the native gateway: `kubectl apply -f
/// manifests/samples/gloo/httpbin-upstream.yaml` (the Upstream Gloo's discovery names
/// `default-httpbin-8000` and a VirtualService for every host, served on the pod's Gateway
/// API HTTP listener): `curl /headers` reaches httpbin over mTLS and XFCC names the gateway.
pub(super) async fn gloo_walkthrough(lab: &mut Lab) -> anyhow::Result<String> {
    let file = crate::tools::workspace_root()
        .join("manifests/samples/gloo/httpbin-upstream.yaml")
        .display()
        .to_string();
    lab.kubectl_ok(&["apply", "-f", &file], "").await?;
    let url = format!("http://{}/headers", lab.gateway.at(crate::lab::HTTP_PORT));
    let served = until(
        "curl /headers without a Host of any route -> 200",
        async || {
            let r = lab.curl(&lab.client, &[&url]).await;
            r.is_ok_and(|r| r.status == Some(200))
        },
    )
    .await?;
    let r = lab.curl(&lab.client, &[&url]).await?;
    let x = xfcc(&r)?;
    let (uri, by) = (
        xfcc_field(&x, "URI").unwrap_or_default(),
        xfcc_field(&x, "By").unwrap_or_default(),
    );
    ensure!(
        uri == lab.gateway.identity.to_string() && by == lab.httpbin.identity.to_string(),
        "XFCC URI={uri} By={by}, expected the gateway's {} and httpbin's {}",
        lab.gateway.identity,
        lab.httpbin.identity
    );
    let routed = via(lab, &lab.gateway, hosts::ECHO, "/headers", &[]).await?;
    let by_echo = xfcc_field(&xfcc(&routed)?, "By").unwrap_or_default();
    ensure!(
        by_echo == lab.httpbin_v2.identity.to_string(),
        "an HTTPRoute's own host must still win over the catch-all domain: served by {by_echo}"
    );
    lab.kubectl_ok(&["delete", "-f", &file], "").await?;
    until(
        "deleted: no route for the bare address -> 404",
        async || {
            let r = lab.curl(&lab.client, &[&url]).await;
            r.is_ok_and(|r| r.status == Some(404))
        },
    )
    .await?;
    Ok(format!(
        "apply -> 200 after {} ms, httpbin over mTLS, XFCC URI={uri}; HTTPRoute hosts keep \
         their routes",
        served.as_millis()
    ))
}
