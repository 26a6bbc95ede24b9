//! The Gloo Edge dialect against real httpbin and curl: a `gateway.solo.io` Gateway on a
//! port, an Upstream named as Gloo's discovery names it, VirtualService routes with
//! Gloo's string-prefix rewrite, a static Upstream, and a VirtualService with an option
//! meshgate does not implement refused alone, by name.

mod support;

use support::*;

#[test]
fn gloo_virtual_service_routes_to_the_discovered_upstream_and_rewrites_like_envoy() {
    let hb = Httpbin::start();
    let legacy = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &format!(
            "apiVersion: gateway.solo.io/v1\nkind: Gateway\n\
             metadata: {{name: gateway-proxy, namespace: gloo-system}}\n\
             spec: {{bindPort: {port}, httpGateway: {{}}}}\n"
        ),
        "apiVersion: gloo.solo.io/v1\nkind: Upstream\n\
         metadata: {name: default-httpbin-80, namespace: gloo-system}\n\
         spec: {kube: {serviceName: httpbin, serviceNamespace: default, servicePort: 80}}\n",
        &format!(
            "apiVersion: gloo.solo.io/v1\nkind: Upstream\n\
             metadata: {{name: legacy, namespace: gloo-system}}\n\
             spec: {{static: {{hosts: [{{addr: 127.0.0.1, port: {}}}, {{addr: 127.0.0.1, port: {}}}]}}}}\n",
            legacy.port, legacy.port
        ),
        "apiVersion: gateway.solo.io/v1\nkind: VirtualService\n\
         metadata: {name: default, namespace: gloo-system}\nspec:\n  virtualHost:\n    \
         domains: [\"*\"]\n    routes:\n      \
         - matchers: [{prefix: /api}]\n        \
         routeAction: {single: {upstream: {name: default-httpbin-80}}}\n        \
         options: {prefixRewrite: /anything, hostRewrite: rewritten.example.com}\n      \
         - matchers: [{prefix: /legacy/}]\n        \
         routeAction: {single: {upstream: {name: legacy}}}\n        \
         options: {prefixRewrite: /}\n      \
         - matchers: [{prefix: /}]\n        \
         routeAction: {single: {upstream: {name: default-httpbin-80}}}\n",
        "apiVersion: gateway.solo.io/v1\nkind: VirtualService\n\
         metadata: {name: with-extauth, namespace: gloo-system}\nspec:\n  virtualHost:\n    \
         domains: [secure.example.com]\n    routes:\n      \
         - matchers: [{prefix: /}]\n        \
         routeAction: {single: {upstream: {name: default-httpbin-80}}}\n        \
         options: {extauth: {configRef: {name: auth}}}\n",
        &local_service("httpbin", hb.port),
    ]));
    let base = format!("http://127.0.0.1:{port}");
    let ok = curl(&[&format!("{base}/get")]);
    assert_eq!(ok.status, 200, "{ok:?}");
    // Envoy's prefix_rewrite is a string replacement: /api/x -> /anything/x, /apix ->
    // /anythingx.
    let rw = curl(&[&format!("{base}/api/x")]);
    assert_eq!(rw.status, 200, "{rw:?}");
    assert_eq!(rw.json()["url"], "http://rewritten.example.com/anything/x");
    assert_eq!(rw.json()["headers"]["Host"], "rewritten.example.com");
    let st = curl(&[&format!("{base}/legacy/status/418")]);
    assert_eq!(st.status, 418, "the static Upstream answered: {st:?}");
    // The VirtualService with an unimplemented option is left out; its host falls back
    // to the catch-all route of the valid one.
    let other = curl(&["-H", "Host: secure.example.com", &format!("{base}/get")]);
    assert_eq!(other.status, 200, "{other:?}");
    gw.wait_log(
        "VirtualService.gateway.solo.io gloo-system/with-extauth virtualHost.routes[0].options: \
         field \"extauth\" is not supported by meshgate",
    );
}
