//! Gateway API semantics for a shared gateway, with real httpbin and curl: listener
//! isolation and 421 for a host that belongs to another HTTPS listener, allowedRoutes,
//! ReferenceGrant at runtime, and the redirect status codes.

mod support;

use support::*;

fn route_in(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: {ns}}}\n{body}"
    )
}

/// A status condition list as (type, status, reason).
fn summary(conditions: &serde_json::Value) -> Vec<(&str, bool, &str)> {
    conditions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["status"].as_bool().unwrap(),
                c["reason"].as_str().unwrap(),
            )
        })
        .collect()
}

/// A rule sending to `httpbin` that tags responses with `x-route: <tag>`.
fn tagged_rule(tag: &str) -> String {
    format!(
        "  rules:\n    - filters:\n        - type: ResponseHeaderModifier\n          \
         responseHeaderModifier: {{set: [{{name: x-route, value: {tag}}}]}}\n      \
         backendRefs: [{{name: httpbin, port: 80}}]\n"
    )
}

#[test]
fn host_of_another_https_listener_on_the_same_port_gets_421_over_h1_and_h2() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf(
        "server",
        "ca",
        &["public.example.com", "secure.example.com"],
        false,
    );
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n\
             \x20   - {{name: public, port: {port}, protocol: HTTPS, hostname: public.example.com, \
             tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n\
             \x20   - {{name: secure, port: {port}, protocol: HTTPS, hostname: secure.example.com, \
             tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n"
        ),
        &route_in(
            "default",
            "public",
            &format!(
                "spec:\n  parentRefs: [{{name: edge, sectionName: public}}]\n{}",
                tagged_rule("public")
            ),
        ),
        &route_in(
            "default",
            "secure",
            &format!(
                "spec:\n  parentRefs: [{{name: edge, sectionName: secure}}]\n{}",
                tagged_rule("secure")
            ),
        ),
        &pki.tls_secret("server-cert", "server"),
        &local_service("httpbin", hb.port),
    ]));
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().unwrap();
    let get = |sni: &str, host: &str, version: &str| {
        let resolve = format!("{sni}:{port}:127.0.0.1");
        let url = format!("https://{sni}:{port}/get");
        let host = format!("Host: {host}");
        curl(&[
            version,
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-H",
            &host,
            &url,
        ])
    };
    for version in ["--http1.1", "--http2"] {
        for name in ["public", "secure"] {
            let host = format!("{name}.example.com");
            let ok = get(&host, &host, version);
            assert_eq!(ok.status, 200, "{version} {host}: {ok:?}");
            assert_eq!(ok.header("x-route").as_deref(), Some(name));
        }
        let misdirected = get("public.example.com", "secure.example.com", version);
        assert_eq!(misdirected.status, 421, "{version}: {misdirected:?}");
        assert_eq!(error_code(&misdirected), "misdirected_request");
        assert_eq!(misdirected.header("x-route"), None, "a route answered");
        let why = gw.explain(&misdirected);
        assert!(
            why["reason"].as_str().unwrap().contains(
                "belongs to listener default/edge/secure but the TLS handshake chose listener default/edge/public"
            ),
            "{why}"
        );
    }
    // Nothing reached the secure route through the public listener's handshake.
    let secure_on_public = gw
        .access_log()
        .into_iter()
        .filter(|l| l["route"] == "default/secure/0" && l["response_code"] != 200)
        .count();
    assert_eq!(secure_on_public, 0);
}

#[test]
fn a_more_specific_listener_claims_its_host_from_a_wildcard_listener() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n\
             \x20   - {{name: wild, port: {port}, protocol: HTTP, hostname: \"*.example.com\"}}\n\
             \x20   - {{name: foo, port: {port}, protocol: HTTP, hostname: foo.example.com}}\n"
        ),
        // The wildcard listener's route names foo.example.com too, but the foo listener
        // owns that host: the route must never serve it.
        &route_in(
            "default",
            "wild",
            &format!(
                "spec:\n  parentRefs: [{{name: edge, sectionName: wild}}]\n  \
                 hostnames: [foo.example.com, bar.example.com]\n{}",
                tagged_rule("wild")
            ),
        ),
        &route_in(
            "default",
            "foo",
            &format!(
                "spec:\n  parentRefs: [{{name: edge, sectionName: foo}}]\n{}",
                tagged_rule("foo")
            ),
        ),
        &local_service("httpbin", hb.port),
    ]));
    let url = format!("http://127.0.0.1:{port}/get");
    let tag = |host: &str| {
        let r = curl(&["-H", &format!("Host: {host}"), &url]);
        assert_eq!(r.status, 200, "{host}: {r:?}");
        r.header("x-route").unwrap()
    };
    assert_eq!(tag("foo.example.com"), "foo");
    assert_eq!(tag("bar.example.com"), "wild");
}

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

#[test]
fn allowed_routes_same_refuses_another_namespace_and_a_selector_admits_labelled_ones() {
    let hb = Httpbin::start();
    let port = free_port();
    let config = |team_a_labels: &str| {
        docs(&[
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                 metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n\
                 \x20   - {{name: same, port: {port}, protocol: HTTP, hostname: same.example.com}}\n\
                 \x20   - name: sel\n      port: {port}\n      protocol: HTTP\n      hostname: sel.example.com\n\
                 \x20     allowedRoutes: {{namespaces: {{from: Selector, selector: {{matchLabels: {{gateway: shared}}}}}}}}\n"
            ),
            &namespace("team-a", team_a_labels),
            &namespace("team-b", ""),
            &route_in(
                "team-a",
                "app",
                "spec:\n  parentRefs: [{name: edge, namespace: default}]\n  \
                 hostnames: [sel.example.com]\n  rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
            ),
            &route_in(
                "team-b",
                "intruder",
                "spec:\n  parentRefs: [{name: edge, namespace: default, sectionName: same}]\n  \
                 hostnames: [same.example.com]\n  rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
            ),
            &local_service_in("team-a", "httpbin", hb.port),
            &local_service_in("team-b", "httpbin", hb.port),
        ])
    };
    let gw = Gateway::start(&config("gateway: shared"));
    let url = format!("http://127.0.0.1:{port}/get");
    let get = |host: &str| curl(&["-H", &format!("Host: {host}"), &url]);
    assert_eq!(get("sel.example.com").status, 200);
    let refused = get("same.example.com");
    assert_eq!((refused.status, error_code(&refused).as_str()), (404, "NR"));
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let parent =
        &dump["status"]["objects"]["HTTPRoute team-b/intruder"]["parents"]["default/edge/same"];
    assert_eq!(parent[0]["reason"], "NotAllowedByListeners", "{parent}");
    // The namespace loses its label: its route is refused too.
    gw.write_config(&config(""));
    eventually("team-a's route refused", || {
        get("sel.example.com").status == 404
    });
}

#[test]
fn reference_grant_admits_a_cross_namespace_backend_and_its_removal_takes_it_away() {
    let hb = Httpbin::start();
    let port = free_port();
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: from-default, namespace: apps}\nspec:\n  \
                 from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  \
                 to: [{group: \"\", kind: Service, name: httpbin}]\n";
    let config = |with_grant: bool| {
        let mut parts = vec![
            http_gateway(port),
            route_in(
                "default",
                "cross",
                "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    \
                 - backendRefs: [{name: httpbin, namespace: apps, port: 80}]\n",
            ),
            local_service_in("apps", "httpbin", hb.port),
        ];
        if with_grant {
            parts.push(grant.to_string());
        }
        docs(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let gw = Gateway::start(&config(false));
    let url = format!("http://127.0.0.1:{port}/get");
    let r = curl(&[&url]);
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (500, "backend_unresolvable")
    );
    assert!(
        gw.explain(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("no ReferenceGrant in apps allows it")
    );
    gw.write_config(&config(true));
    eventually("the grant admits the backend", || {
        curl(&[&url]).status == 200
    });
    gw.write_config(&config(false));
    eventually("the backend refused again", || curl(&[&url]).status == 500);
}

#[test]
fn request_redirect_answers_each_status_code_the_spec_allows() {
    let port = free_port();
    let rules: String = [301, 302, 303, 307, 308]
        .iter()
        .map(|c| {
            format!(
                "    - matches: [{{path: {{type: PathPrefix, value: /r{c}}}}}]\n      \
                 filters: [{{type: RequestRedirect, requestRedirect: {{hostname: elsewhere.example.com, statusCode: {c}}}}}]\n"
            )
        })
        .collect();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "redirects",
            &format!("spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n{rules}"),
        ),
    ]));
    for code in [301, 302, 303, 307, 308] {
        let r = curl(&[&format!("http://127.0.0.1:{port}/r{code}?q=1")]);
        assert_eq!(r.status, code, "{r:?}");
        assert_eq!(
            r.header("location").as_deref(),
            Some(format!("http://elsewhere.example.com:{port}/r{code}?q=1").as_str())
        );
    }
}

#[test]
fn request_mirror_copies_to_a_second_backend_without_touching_the_answer() {
    let primary = Httpbin::start();
    let shadow = Httpbin::start_logged();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "mirrored",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    - filters:\n        \
             - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}}}\n        \
             - type: RequestMirror\n          requestMirror: {backendRef: {name: absent, port: 80}}\n      \
             backendRefs: [{name: primary, port: 80}]\n",
        ),
        &local_service("primary", primary.port),
        &local_service("shadow", shadow.port),
    ]));
    let base = format!("http://127.0.0.1:{port}");
    let get = curl(&["-H", "Host: app.example.com", &format!("{base}/get?copy=1")]);
    assert_eq!(get.status, 200);
    assert_eq!(get.json()["args"]["copy"], "1", "the primary answered");
    let post = curl(&[
        "-H",
        "Host: app.example.com",
        "-d",
        "k=v",
        &format!("{base}/post?copy=2"),
    ]);
    assert_eq!(post.status, 200);
    assert_eq!(post.json()["form"]["k"], "v");
    // Both copies reach the shadow with Envoy's -shadow host; a mirror whose Service does
    // not exist changes nothing for the client.
    let expected = [
        "GET /get copy=1 app.example.com-shadow 200",
        "POST /post copy=2 app.example.com-shadow 200",
    ];
    eventually("both copies at the shadow", || {
        let seen = shadow.requests();
        expected.iter().all(|e| seen.iter().any(|l| l == e))
    });
}

#[test]
fn request_mirror_percent_zero_sends_nothing() {
    let primary = Httpbin::start();
    let shadow = Httpbin::start_logged();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "mirrored",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    - filters:\n        \
             - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 0}}\n        \
             - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 1}}}\n      \
             backendRefs: [{name: primary, port: 80}]\n",
        ),
        &local_service("primary", primary.port),
        &local_service("shadow", shadow.port),
    ]));
    for i in 0..10 {
        let r = curl(&[&format!("http://127.0.0.1:{port}/get?n={i}")]);
        assert_eq!(r.status, 200);
    }
    // Only the second mirror (fraction 1/1) copies: exactly one copy per request.
    let copies = || {
        shadow
            .requests()
            .iter()
            .filter(|l| l.starts_with("GET /get "))
            .count()
    };
    eventually("ten copies", || copies() >= 10);
    for i in 0..10 {
        let copies = shadow
            .requests()
            .iter()
            .filter(|l| l.starts_with(&format!("GET /get n={i} ")))
            .count();
        assert_eq!(copies, 1, "request {i}: {:?}", shadow.requests());
    }
}

#[test]
fn cors_preflight_is_answered_by_the_gateway_and_answers_carry_cors_headers() {
    let hb = Httpbin::start_logged();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "cors",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    - filters:\n        - type: CORS\n          \
             cors:\n            allowOrigins: [\"https://*.example.com\", \"https://app.test\"]\n            \
             allowMethods: [GET, PUT]\n            allowHeaders: [x-token]\n            \
             exposeHeaders: [x-served-by]\n            maxAge: 600\n            allowCredentials: true\n      \
             backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    let url = format!("http://127.0.0.1:{port}/anything");
    let preflight = |origin: &str| {
        curl(&[
            "-X",
            "OPTIONS",
            "-H",
            &format!("Origin: {origin}"),
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: x-token",
            &url,
        ])
    };
    let ok = preflight("https://web.example.com");
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("https://web.example.com")
    );
    assert_eq!(
        ok.header("access-control-allow-methods").as_deref(),
        Some("GET, PUT")
    );
    assert_eq!(
        ok.header("access-control-allow-headers").as_deref(),
        Some("x-token")
    );
    assert_eq!(ok.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(
        ok.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let refused = preflight("https://evil.org");
    assert_eq!(refused.status, 200);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        None,
        "{refused:?}"
    );
    // Preflights never reach the backend.
    assert!(
        hb.requests().iter().all(|l| !l.starts_with("OPTIONS")),
        "{:?}",
        hb.requests()
    );

    let actual = curl(&["-H", "Origin: https://app.test", &url]);
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.header("access-control-allow-origin").as_deref(),
        Some("https://app.test")
    );
    assert_eq!(
        actual.header("access-control-expose-headers").as_deref(),
        Some("x-served-by")
    );
    // httpbin itself echoes any Origin; the route's CORS policy is the one in force.
    let other = curl(&["-H", "Origin: https://evil.org", &url]);
    assert_eq!(other.status, 200);
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{other:?}"
    );
}

fn backend_tls_policy(name: &str, service: &str, validation: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  validation:\n{validation}"
    )
}

#[test]
fn backend_tls_policy_reaches_a_tls_backend_verified_by_hostname_or_san() {
    let pki = Pki::new();
    pki.ca("backend-ca");
    pki.leaf("backend", "backend-ca", &["httpbin.backend.test"], false);
    let tls_hb = Httpbin::start_tls(&pki.path("backend.crt"), &pki.path("backend.key"));
    let port = free_port();
    let ca = "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: backend-ca}]\n";
    let rules: String = ["by-host", "by-san", "wrong-name", "missing-ca", "no-policy"]
        .iter()
        .map(|svc| {
            format!(
                "    - matches: [{{path: {{type: PathPrefix, value: /{svc}}}}}]\n      \
                 filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}]\n      \
                 backendRefs: [{{name: {svc}, port: 80}}]\n"
            )
        })
        .collect();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "tls",
            &format!("spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n{rules}"),
        ),
        &pki.ca_config_map("backend-ca", "backend-ca"),
        &local_service("by-host", tls_hb.port),
        &local_service("by-san", tls_hb.port),
        &local_service("wrong-name", tls_hb.port),
        &local_service("missing-ca", tls_hb.port),
        &local_service("no-policy", tls_hb.port),
        &backend_tls_policy(
            "by-host",
            "by-host",
            &format!("{ca}    hostname: httpbin.backend.test\n"),
        ),
        &backend_tls_policy(
            "by-san",
            "by-san",
            &format!(
                "{ca}    hostname: sni-only.test\n    \
                 subjectAltNames: [{{type: Hostname, hostname: httpbin.backend.test}}]\n"
            ),
        ),
        &backend_tls_policy(
            "wrong-name",
            "wrong-name",
            &format!("{ca}    hostname: other.backend.test\n"),
        ),
        &backend_tls_policy(
            "missing-ca",
            "missing-ca",
            "    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: nope}]\n    hostname: httpbin.backend.test\n",
        ),
    ]));
    let get = |svc: &str| curl(&[&format!("http://127.0.0.1:{port}/{svc}/get")]);
    // httpbin here serves TLS only (the no-policy case below shows plaintext fails).
    for svc in ["by-host", "by-san"] {
        let r = get(svc);
        assert_eq!(r.status, 200, "{svc}: {r:?}");
        assert_eq!(r.json()["headers"]["Host"], format!("127.0.0.1:{port}"));
    }
    let wrong = get("wrong-name");
    assert_eq!((wrong.status, error_code(&wrong).as_str()), (503, "UF"));
    let why = gw.explain(&wrong)["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("certificate not valid for name \"other.backend.test\""),
        "{why}"
    );
    let missing = get("missing-ca");
    assert_eq!(
        (missing.status, error_code(&missing).as_str()),
        (500, "backend_unresolvable")
    );
    assert!(
        gw.explain(&missing)["reason"]
            .as_str()
            .unwrap()
            .contains("ConfigMap default/nope with ca.crt not found")
    );
    // Without a policy the gateway speaks plaintext, which a TLS server cannot answer.
    let plain = get("no-policy");
    assert_eq!(plain.status, 503, "{plain:?}");
    assert_eq!(error_code(&plain), "UC");
}

#[test]
fn repeated_header_names_count_once_and_rule_and_backend_rewrites_both_apply() {
    let hb = Httpbin::start_logged();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route_in(
            "default",
            "edits",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /rw}}]\n      filters:\n\
             \x20       - type: RequestHeaderModifier\n          requestHeaderModifier:\n\
             \x20           set: [{name: X-Dup, value: one}, {name: x-dup, value: two}]\n\
             \x20           add: [{name: X-Add, value: a}, {name: x-add, value: b}]\n\
             \x20       - type: URLRewrite\n          urlRewrite: {hostname: rule.example}\n      \
             backendRefs:\n        - name: httpbin\n          port: 80\n          filters:\n\
             \x20           - type: URLRewrite\n              \
             urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /anything}}\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    let got = curl(&[
        "-H",
        "Host: app.example.com",
        &format!("http://127.0.0.1:{port}/rw/x?q=1"),
    ]);
    assert_eq!(got.status, 200, "{}", got.body);
    let headers = &got.json()["headers"];
    // HTTPHeader.name: of equivalent names only the first entry counts.
    assert_eq!(headers["X-Dup"], "one");
    assert_eq!(headers["X-Add"], "a");
    // The rule's hostname and the backendRef's path, each from its own filter.
    let expected = "GET /anything/x q=1 rule.example 200";
    eventually("the rewritten request at httpbin", || {
        hb.requests().iter().any(|l| l == expected)
    });
}

#[test]
fn conflicting_https_and_tls_listeners_are_both_refused_and_neither_serves() {
    // The shape of the conformance test GatewayListenerProtocolAndRouteKindConflicts: an
    // HTTPS and a TLS Passthrough listener on one port, neither with a hostname.
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["https.example.org"], false);
    let (http, tls) = (free_port(), free_port());
    let gw = Gateway::start(&docs(&[
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n\
             \x20   - {{name: http, port: {http}, protocol: HTTP}}\n\
             \x20   - {{name: conflicted-https, port: {tls}, protocol: HTTPS, \
             tls: {{certificateRefs: [{{name: server-cert}}]}}}}\n\
             \x20   - {{name: conflicted-tls, port: {tls}, protocol: TLS, tls: {{mode: Passthrough}}}}\n"
        ),
        &route_in(
            "default",
            "app",
            &format!(
                "spec:\n  parentRefs: [{{name: edge}}]\n{}",
                tagged_rule("app")
            ),
        ),
        &pki.tls_secret("server-cert", "server"),
        &local_service("httpbin", hb.port),
    ]));
    let served = curl(&[&format!("http://127.0.0.1:{http}/get")]);
    assert_eq!(served.status, 200, "the distinct listener is served");
    let ca = pki.path("ca.crt");
    let resolve = format!("https.example.org:{tls}:127.0.0.1");
    let refused = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &format!("https://https.example.org:{tls}/get"),
    ]);
    assert_eq!(refused.status, 0, "no TLS handshake on the conflicted port");
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let listeners = &dump["status"]["objects"]["Gateway default/edge"]["listeners"];
    for name in ["conflicted-https", "conflicted-tls"] {
        let expected = [
            ("Conflicted", true, "ProtocolConflict"),
            ("Accepted", false, "Invalid"),
            ("Programmed", false, "Invalid"),
        ];
        assert_eq!(summary(&listeners[name]["conditions"]), expected, "{name}");
        assert_eq!(listeners[name]["attachedRoutes"], 0, "{name}");
    }
}

#[test]
fn an_unresolvable_extension_ref_answers_500_and_an_invalid_rule_is_dropped_alone() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        // The filter must not be skipped: without the ExtensionRef rule's 500, /auth
        // would fall through to this catch-all and reach httpbin unauthenticated.
        &route_in(
            "default",
            "catch-all",
            &format!(
                "spec:\n  parentRefs: [{{name: edge}}]\n{}",
                tagged_rule("catch-all")
            ),
        ),
        &route_in(
            "default",
            "extension",
            "spec:\n  parentRefs: [{name: edge}]\n  hostnames: [app.example.com]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /anything/ok}}]\n      \
             backendRefs: [{name: httpbin, port: 80}]\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /anything/auth}}]\n      \
             filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: AuthFilter, name: sso}}]\n      \
             backendRefs: [{name: httpbin, port: 80}]\n\
             \x20   - matches: [{path: {type: RegularExpression, value: \"/(unclosed\"}}]\n      \
             backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    let get = |path: &str| {
        curl(&[
            "-H",
            "Host: app.example.com",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
    };
    let ok = get("/anything/ok");
    assert_eq!(ok.status, 200, "the valid rule is served: {ok:?}");
    assert!(ok.header("x-route").is_none(), "not the catch-all");
    let auth = get("/anything/auth");
    assert_eq!(
        (auth.status, error_code(&auth).as_str()),
        (500, "backend_unresolvable")
    );
    assert!(
        gw.explain(&auth)["reason"]
            .as_str()
            .unwrap()
            .contains("ExtensionRef example.com/AuthFilter sso"),
        "{}",
        gw.explain(&auth)
    );
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let parent =
        &dump["status"]["objects"]["HTTPRoute default/extension"]["parents"]["default/edge"];
    assert_eq!(
        summary(parent),
        [
            ("Accepted", true, "Accepted"),
            ("ResolvedRefs", false, "InvalidKind"),
            ("PartiallyInvalid", true, "UnsupportedValue"),
        ]
    );
    assert!(
        parent[2]["message"]
            .as_str()
            .unwrap()
            .starts_with("Dropped Rule 2: "),
        "{parent}"
    );
}
