//! Edge TLS with certificates made by openssl, checked with curl (`--cacert --resolve`)
//! against a real httpbin behind the gateway.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn https_gateway(port: u16, listeners: &str) -> String {
    https_gateway_with_tls(port, "", listeners)
}

/// A Gateway whose `spec.tls` is `tls` (YAML indented under `spec:`), e.g. client
/// validation in `frontend`.
fn https_gateway_with_tls(port: u16, tls: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\nspec:\n{tls}  listeners:\n{listeners}"
    )
    .replace("PORT", &port.to_string())
}

/// `spec.tls.frontend` requiring client certificates from the `client-ca` ConfigMap.
const CLIENT_VALIDATION: &str = "  tls:\n    frontend:\n      default:\n        validation:\n          \
     caCertificateRefs: [{kind: ConfigMap, name: client-ca}]\n";

/// curl's report of the TLS alert a server sends when a required client certificate is
/// missing (TLS 1.3 `certificate_required`) or not trusted (`unknown_ca`).
fn refused_by_alert(r: &CurlResult, alert: &str) {
    assert_eq!(r.status, 0, "got an HTTP response: {r:?}");
    assert!(
        r.stderr.to_ascii_lowercase().contains(alert),
        "expected TLS alert {alert:?}: {r:?}"
    );
}

fn httpbin_route() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
     metadata: {name: httpbin, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n\
     \x20 rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n"
        .to_string()
}

fn https_url(host: &str, port: u16, path: &str) -> (String, String) {
    (
        format!("{host}:{port}:127.0.0.1"),
        format!("https://{host}:{port}{path}"),
    )
}

#[test]
fn tls_termination_with_openssl_certificates_is_verified_by_curl() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["httpbin.example.com"], false);
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &https_gateway(
            port,
            "    - name: https\n      port: PORT\n      protocol: HTTPS\n      \
             tls: {certificateRefs: [{name: server-cert}]}\n",
        ),
        &httpbin_route(),
        &pki.tls_secret("server-cert", "server"),
        &local_service("httpbin", hb.port),
    ]));
    let ca = pki.path("ca.crt");
    let (resolve, url) = https_url("httpbin.example.com", port, "/headers?show_env=1");
    let r = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["X-Forwarded-Proto"], "https");
    // The access log names the SNI, as Envoy's %REQUESTED_SERVER_NAME%.
    let line = gw.wait_access_log(|l| l["path"] == "/headers?show_env=1");
    assert_eq!(
        line["requested_server_name"], "httpbin.example.com",
        "{line}"
    );
    // Over TLS, ALPN negotiates HTTP/2 end to end to the client.
    let r = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    assert!(r.headers.starts_with("HTTP/2 200"), "{r:?}");
    // A client that does not trust the CA refuses the connection (curl's exit 60: the
    // peer certificate cannot be verified).
    let r = curl(&["--resolve", &resolve, &url]);
    assert_eq!(r.exit_code, 60, "{r:?}");
}

#[test]
fn two_hostnames_get_their_own_certificates_by_sni() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca-a");
    pki.ca("ca-b");
    pki.leaf("a", "ca-a", &["a.example.com"], false);
    pki.leaf("b", "ca-b", &["b.example.com"], false);
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &https_gateway(
            port,
            "    - name: a\n      port: PORT\n      protocol: HTTPS\n      hostname: a.example.com\n      \
             tls: {certificateRefs: [{name: cert-a}]}\n\
             \x20   - name: b\n      port: PORT\n      protocol: HTTPS\n      hostname: b.example.com\n      \
             tls: {certificateRefs: [{name: cert-b}]}\n",
        ),
        &httpbin_route(),
        &pki.tls_secret("cert-a", "a"),
        &pki.tls_secret("cert-b", "b"),
        &local_service("httpbin", hb.port),
    ]));
    let ca_a = pki.path("ca-a.crt");
    let ca_b = pki.path("ca-b.crt");
    for (host, good, bad) in [
        ("a.example.com", &ca_a, &ca_b),
        ("b.example.com", &ca_b, &ca_a),
    ] {
        let (resolve, url) = https_url(host, port, "/get");
        let ok = curl(&[
            "--cacert",
            good.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ]);
        assert_eq!(ok.status, 200, "{host}: {ok:?}");
        assert_eq!(ok.json()["headers"]["Host"], format!("{host}:{port}"));
        let wrong = curl(&[
            "--cacert",
            bad.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ]);
        assert_eq!(
            wrong.exit_code, 60,
            "{host} served the other certificate: {wrong:?}"
        );
    }
}

#[test]
fn mutual_tls_rejects_a_client_without_certificate_and_accepts_one_with() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.ca("client-ca");
    pki.ca("rogue-ca");
    pki.leaf("server", "ca", &["secure.example.com"], false);
    pki.leaf("client", "client-ca", &[], true);
    pki.leaf("rogue", "rogue-ca", &[], true);
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &https_gateway_with_tls(
            port,
            CLIENT_VALIDATION,
            "    - name: https\n      port: PORT\n      protocol: HTTPS\n      tls:\n        \
             certificateRefs: [{name: server-cert}]\n",
        ),
        &httpbin_route(),
        &pki.tls_secret("server-cert", "server"),
        &pki.ca_config_map("client-ca", "client-ca"),
        &local_service("httpbin", hb.port),
    ]));
    let ca = pki.path("ca.crt");
    let (resolve, url) = https_url("secure.example.com", port, "/get");
    let base = ["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    // Over TLS 1.2 the refusal is part of the handshake, so curl always reports the alert
    // (over TLS 1.3 it may arrive after curl has already sent the request).
    let tls12 = [&base[..], &["--tls-max", "1.2"]].concat();

    let no_cert = curl(&[&tls12[..], &[url.as_str()]].concat());
    refused_by_alert(&no_cert, "certificate required");

    let (cert, key) = (pki.path("rogue.crt"), pki.path("rogue.key"));
    let rogue = curl(
        &[
            &tls12[..],
            &[
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                &url,
            ],
        ]
        .concat(),
    );
    refused_by_alert(&rogue, "unknown ca");

    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let with_cert = curl(
        &[
            &base[..],
            &[
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                &url,
            ],
        ]
        .concat(),
    );
    assert_eq!(with_cert.status, 200, "{with_cert:?}");
}

#[test]
fn changed_certificate_secret_is_served_without_restart() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("old-ca");
    pki.ca("new-ca");
    pki.leaf("old", "old-ca", &["rotate.example.com"], false);
    pki.leaf("new", "new-ca", &["rotate.example.com"], false);
    let port = free_port();
    let config = |leaf: &str| {
        docs(&[
            &https_gateway(
                port,
                "    - name: https\n      port: PORT\n      protocol: HTTPS\n      \
                 tls: {certificateRefs: [{name: cert}]}\n",
            ),
            &httpbin_route(),
            &pki.tls_secret("cert", leaf),
            &local_service("httpbin", hb.port),
        ])
    };
    let gw = Gateway::start(&config("old"));
    let (resolve, url) = https_url("rotate.example.com", port, "/get");
    let with_ca = |ca: &str| {
        let ca = pki.path(ca);
        curl(&[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ])
    };
    assert_eq!(with_ca("old-ca.crt").status, 200);
    gw.write_config(&config("new"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_ca("new-ca.crt").status != 200 {
        assert!(
            Instant::now() < deadline,
            "new certificate not served: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let old = with_ca("old-ca.crt");
    assert_eq!(
        old.exit_code, 60,
        "the old certificate is still served: {old:?}"
    );
}

#[test]
fn http_to_https_redirect_then_https_request_succeeds() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["www.example.com"], false);
    let (http, https) = (free_port(), free_port());
    let _gw = Gateway::start(&docs(&[
        &https_gateway(
            https,
            &format!(
                "    - {{name: http, port: {http}, protocol: HTTP}}\n\
                 \x20   - name: https\n      port: PORT\n      protocol: HTTPS\n      \
                 tls: {{certificateRefs: [{{name: server-cert}}]}}\n"
            ),
        ),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: to-https, namespace: default}}\nspec:\n  \
             parentRefs: [{{name: edge, sectionName: http}}]\n  rules:\n    - filters:\n      \
             - type: RequestRedirect\n        \
             requestRedirect: {{scheme: https, port: {https}, statusCode: 301}}\n"
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
          metadata: {name: app, namespace: default}\nspec:\n  \
          parentRefs: [{name: edge, sectionName: https}]\n  \
          rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
        &pki.tls_secret("server-cert", "server"),
        &local_service("httpbin", hb.port),
    ]));
    let ca = pki.path("ca.crt");
    let r = curl(&[
        "-L",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("www.example.com:{http}:127.0.0.1"),
        "--resolve",
        &format!("www.example.com:{https}:127.0.0.1"),
        &format!("http://www.example.com:{http}/get"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.headers.contains("301"), "{}", r.headers);
    assert_eq!(
        r.json()["url"],
        format!("https://www.example.com:{https}/get")
    );
}

#[test]
fn allow_insecure_fallback_accepts_any_client_and_the_gateway_says_so() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.ca("client-ca");
    pki.ca("rogue-ca");
    pki.leaf("server", "ca", &["fallback.example.com"], false);
    pki.leaf("client", "client-ca", &[], true);
    pki.leaf("rogue", "rogue-ca", &[], true);
    let port = free_port();
    let fallback = "  tls:\n    frontend:\n      default:\n        validation:\n          \
                    mode: AllowInsecureFallback\n          \
                    caCertificateRefs: [{kind: ConfigMap, name: client-ca}]\n";
    let gw = Gateway::start(&docs(&[
        &https_gateway_with_tls(
            port,
            fallback,
            "    - name: https\n      port: PORT\n      protocol: HTTPS\n      tls:\n        \
             certificateRefs: [{name: server-cert}]\n",
        ),
        &httpbin_route(),
        &pki.tls_secret("server-cert", "server"),
        &pki.ca_config_map("client-ca", "client-ca"),
        &local_service("httpbin", hb.port),
    ]));
    let ca = pki.path("ca.crt");
    let (resolve, url) = https_url("fallback.example.com", port, "/get");
    let base = [
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ];
    let with = |name: &str| {
        let (cert, key) = (
            pki.path(&format!("{name}.crt")),
            pki.path(&format!("{name}.key")),
        );
        let args = [
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        curl(&[&base[..], &args[..]].concat())
    };
    assert_eq!(curl(&base).status, 200, "no certificate");
    assert_eq!(with("client").status, 200, "a valid certificate");
    assert_eq!(with("rogue").status, 200, "a certificate from another CA");
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let conditions = &dump["status"]["objects"]["Gateway default/edge"]["conditions"];
    let insecure = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "InsecureFrontendValidationMode")
        .unwrap_or_else(|| panic!("{conditions}"));
    assert_eq!(insecure["status"], true);
    assert_eq!(insecure["reason"], "ConfigurationChanged");
}
