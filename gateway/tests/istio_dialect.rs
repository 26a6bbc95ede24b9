//! The Istio dialect against real peers: the seed walkthroughs written as
//! `networking.istio.io` Gateway + VirtualService, served to curl (HTTP with and without
//! the Host, HTTPS SIMPLE from `credentialName`, httpsRedirect, MUTUAL, two certificates
//! by SNI, SIMPLE and MUTUAL sharing a port), a TCP echo (socat) and SNI passthrough.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::*;

/// The flags that make this gateway the pod Istio Gateways select.
const POD: [&str; 4] = [
    "--pod-labels",
    "istio=ingressgateway",
    "--pod-namespace",
    "istio-system",
];

fn istio_gateway(servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
         metadata: {{name: coolstore-gateway, namespace: istioinaction}}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

fn webapp_vs(hosts: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: webapp-vs-from-gw, namespace: istioinaction}}\nspec:\n  \
         hosts: [{hosts}]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - match: [{{uri: {{prefix: /api/}}}}]\n      rewrite: {{uri: /anything/}}\n      \
         route: [{{destination: {{host: webapp, port: {{number: 80}}}}}}]\n    \
         - route: [{{destination: {{host: webapp}}}}]\n"
    )
}

/// A Secret in istio-system (the gateway pod's namespace, where Istio reads
/// `credentialName`) with `tls.crt`/`tls.key` and, for MUTUAL, `ca.crt`.
fn credential(pki: &Pki, name: &str, leaf: &str, client_ca: Option<&str>) -> String {
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let ca = client_ca
        .map(|c| format!("  ca.crt: |\n{}", indent(pki.read(&format!("{c}.crt")))))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}{ca}",
        indent(pki.read(&format!("{leaf}.crt"))),
        indent(pki.read(&format!("{leaf}.key")))
    )
}

fn curl_host(port: u16, host: Option<&str>, path: &str) -> CurlResult {
    let url = format!("http://127.0.0.1:{port}{path}");
    match host {
        Some(h) => curl(&["-H", &format!("Host: {h}"), &url]),
        None => curl(&[&url]),
    }
}

fn https(ca: &str, host: &str, port: u16, extra: &[&str]) -> CurlResult {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/get");
    curl(&[&["--cacert", ca, "--resolve", &resolve][..], extra, &[&url]].concat())
}

#[test]
fn webapp_is_served_for_its_host_only_and_the_prefix_rewrite_is_istios() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [webapp.istioinaction.io]\n"
            )),
            &webapp_vs("webapp.istioinaction.io"),
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    let ok = curl_host(port, Some("webapp.istioinaction.io"), "/get");
    assert_eq!(ok.status, 200, "{ok:?}");
    let none = curl_host(port, None, "/get");
    assert_eq!(none.status, 404, "{none:?}");
    // Istio's prefix rewrite replaces the matched string: /api/x -> /anything/x.
    let rw = curl_host(port, Some("webapp.istioinaction.io"), "/api/x?q=1");
    assert_eq!(rw.status, 200, "{rw:?}");
    assert_eq!(
        rw.json()["url"],
        "http://webapp.istioinaction.io/anything/x?q=1"
    );
    let line = gw.wait_access_log(|l| l["path"] == "/api/x?q=1");
    assert_eq!(line["route"], "istioinaction/webapp-vs-from-gw/0", "{line}");
}

#[test]
fn the_gateway_listens_on_the_gateway_services_target_port_for_a_server_port() {
    let hb = Httpbin::start();
    let target = free_port();
    let gw_service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: istio-ingressgateway, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  ports: [{{name: http2, port: 80, targetPort: {target}}}]\n"
    );
    let _gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(
                "    - port: {number: 80, name: http, protocol: HTTP}\n      \
                 hosts: [webapp.istioinaction.io]\n",
            ),
            &webapp_vs("webapp.istioinaction.io"),
            &gw_service,
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    let ok = curl_host(target, Some("webapp.istioinaction.io"), "/get");
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn https_simple_mutual_redirect_and_two_certificates_by_sni() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.ca("client-ca");
    pki.leaf("webapp", "ca", &["webapp.istioinaction.io"], false);
    pki.leaf("catalog", "ca", &["catalog.istioinaction.io"], false);
    pki.leaf("client", "client-ca", &[], true);
    let (http_port, port, mtls) = (free_port(), free_port(), free_port());
    let _gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {http_port}, name: http, protocol: HTTP}}\n      \
                 hosts: [webapp.istioinaction.io]\n      tls: {{httpsRedirect: true}}\n    \
                 - port: {{number: {port}, name: https-webapp, protocol: HTTPS}}\n      \
                 hosts: [webapp.istioinaction.io]\n      \
                 tls: {{mode: SIMPLE, credentialName: webapp-credential}}\n    \
                 - port: {{number: {port}, name: https-catalog, protocol: HTTPS}}\n      \
                 hosts: [catalog.istioinaction.io]\n      \
                 tls: {{mode: SIMPLE, credentialName: catalog-credential}}\n    \
                 - port: {{number: {mtls}, name: https-mtls, protocol: HTTPS}}\n      \
                 hosts: [webapp.istioinaction.io]\n      \
                 tls: {{mode: MUTUAL, credentialName: webapp-mtls}}\n"
            )),
            &webapp_vs("webapp.istioinaction.io, catalog.istioinaction.io"),
            &credential(&pki, "webapp-credential", "webapp", None),
            &credential(&pki, "catalog-credential", "catalog", None),
            &credential(&pki, "webapp-mtls", "webapp", Some("client-ca")),
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().unwrap();
    let redirect = curl_host(http_port, Some("webapp.istioinaction.io"), "/get?x=1");
    assert_eq!(redirect.status, 301, "{redirect:?}");
    assert_eq!(
        redirect.header("location").as_deref(),
        Some("https://webapp.istioinaction.io/get?x=1")
    );
    for host in ["webapp.istioinaction.io", "catalog.istioinaction.io"] {
        let ok = https(ca, host, port, &[]);
        assert_eq!(ok.status, 200, "{host}: {ok:?}");
    }
    let no_cert = https(ca, "webapp.istioinaction.io", mtls, &["--tls-max", "1.2"]);
    assert_eq!(no_cert.status, 0, "{no_cert:?}");
    assert!(
        no_cert
            .stderr
            .to_ascii_lowercase()
            .contains("certificate required"),
        "{no_cert:?}"
    );
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let with_cert = https(
        ca,
        "webapp.istioinaction.io",
        mtls,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(with_cert.status, 200, "{with_cert:?}");
}

#[test]
fn sni_public_with_host_secure_never_reaches_the_mutual_server_over_h1_and_h2() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.ca("client-ca");
    pki.leaf("public", "ca", &["public.example.com"], false);
    pki.leaf("secure", "ca", &["secure.example.com"], false);
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: https-public, protocol: HTTPS}}\n      \
                 hosts: [public.example.com]\n      \
                 tls: {{mode: SIMPLE, credentialName: public}}\n    \
                 - port: {{number: {port}, name: https-secure, protocol: HTTPS}}\n      \
                 hosts: [secure.example.com]\n      \
                 tls: {{mode: MUTUAL, credentialName: secure}}\n"
            )),
            &webapp_vs("public.example.com, secure.example.com"),
            &credential(&pki, "public", "public", None),
            &credential(&pki, "secure", "secure", Some("client-ca")),
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    let ca = pki.path("ca.crt");
    for version in ["--http1.1", "--http2"] {
        let r = https(
            ca.to_str().unwrap(),
            "public.example.com",
            port,
            &[version, "-H", "Host: secure.example.com"],
        );
        assert_eq!(r.status, 421, "{version}: {r:?}");
        assert_eq!(error_code(&r), "misdirected_request");
    }
    assert!(
        gw.access_log().iter().all(|l| l["response_code"] != 200),
        "a request reached httpbin: {:?}",
        gw.access_log()
    );
}

#[test]
fn tcp_echo_on_31400_style_server_and_sni_passthrough_from_virtual_services() {
    let echo = Echo::start();
    let echo_port = echo.port;
    let pki = Pki::new();
    pki.ca("upstream-ca");
    pki.leaf(
        "sni",
        "upstream-ca",
        &["simple-sni-1.istioinaction.io"],
        false,
    );
    let tls_up = Httpbin::start_tls(&pki.path("sni.crt"), &pki.path("sni.key"));
    let (tcp, pass) = (free_port(), free_port());
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: tcp-echo, namespace: istioinaction}}\nspec:\n  hosts: [\"*\"]\n  \
         gateways: [coolstore-gateway]\n  tcp:\n    - match: [{{port: {tcp}}}]\n      \
         route: [{{destination: {{host: tcp-echo, port: {{number: 80}}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: simple-sni-1, namespace: istioinaction}}\nspec:\n  \
         hosts: [simple-sni-1.istioinaction.io]\n  gateways: [coolstore-gateway]\n  tls:\n    \
         - match: [{{port: {pass}, sniHosts: [simple-sni-1.istioinaction.io]}}]\n      \
         route: [{{destination: {{host: simple-tls-service-1, port: {{number: 80}}}}}}]\n"
    );
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {tcp}, name: tcp-echo, protocol: TCP}}\n      hosts: [\"*\"]\n    \
                 - port: {{number: {pass}, name: tls, protocol: TLS}}\n      \
                 hosts: [simple-sni-1.istioinaction.io]\n      tls: {{mode: PASSTHROUGH}}\n"
            )),
            &vs,
            &local_service_in("istioinaction", "tcp-echo", echo_port),
            &local_service_in("istioinaction", "simple-tls-service-1", tls_up.port),
        ]),
        &POD,
    );
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"hello istio tcp").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello istio tcp");
    let r = https(
        pki.path("upstream-ca.crt").to_str().unwrap(),
        "simple-sni-1.istioinaction.io",
        pass,
        &[],
    );
    assert_eq!(
        r.status, 200,
        "the client verified the upstream's own certificate: {r:?}"
    );
    let line = gw.wait_access_log(|l| l["route"] == "VirtualService istioinaction/simple-sni-1");
    assert_eq!(
        line["requested_server_name"],
        "simple-sni-1.istioinaction.io"
    );
}

#[test]
fn a_virtual_service_with_an_unsupported_field_is_refused_alone_by_name() {
    let hb = Httpbin::start();
    let port = free_port();
    let fault = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: faulty, namespace: istioinaction}\nspec:\n  \
         hosts: [faulty.istioinaction.io]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - fault: {abort: {httpStatus: 500, percentage: {value: 100}}}\n      \
         route: [{destination: {host: webapp, port: {number: 80}}}]\n";
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [\"*\"]\n"
            )),
            &webapp_vs("webapp.istioinaction.io"),
            fault,
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    assert_eq!(
        curl_host(port, Some("webapp.istioinaction.io"), "/get").status,
        200
    );
    assert_eq!(
        curl_host(port, Some("faulty.istioinaction.io"), "/get").status,
        404
    );
    gw.wait_log(
        "VirtualService istioinaction/faulty http[0]: field \"fault\" is not supported by meshgate",
    );
}

/// A Service whose two endpoints (one per httpbin) are Pods labelled `version`.
fn versioned_catalog(v1: u16, v2: u16) -> String {
    let slice = |version: &str, port: u16| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: catalog-{version}, namespace: istioinaction, \
             labels: {{kubernetes.io/service-name: catalog}}}}\naddressType: IPv4\n\
             ports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [127.0.0.1], targetRef: {{kind: Pod, name: catalog-{version}}}}}]\n---\n\
             apiVersion: v1\nkind: Pod\n\
             metadata: {{name: catalog-{version}, namespace: istioinaction, \
             labels: {{app: catalog, version: {version}}}}}\nspec: {{serviceAccountName: catalog}}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: catalog, namespace: istioinaction}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n{}---\n{}",
        slice("v1", v1),
        slice("v2", v2)
    )
}

#[test]
fn destination_rule_subsets_split_one_service_by_pod_labels() {
    let (v1, v2) = (Httpbin::start_logged(), Httpbin::start_logged());
    let port = free_port();
    let vs_and_dr = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: catalog, namespace: istioinaction}\nspec:\n  \
         hosts: [catalog.istioinaction.io]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - match: [{headers: {x-version: {exact: v2}}}]\n      \
         route: [{destination: {host: catalog, subset: version-v2}}]\n    \
         - route: [{destination: {host: catalog, subset: version-v1}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: catalog, namespace: istioinaction}\nspec:\n  host: catalog\n  \
         subsets:\n    - {name: version-v1, labels: {version: v1}}\n    \
         - {name: version-v2, labels: {version: v2}}\n";
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [catalog.istioinaction.io]\n"
            )),
            vs_and_dr,
            &versioned_catalog(v1.port, v2.port),
        ]),
        &POD,
    );
    let url = format!("http://127.0.0.1:{port}");
    for i in 0..10 {
        let plain = curl(&[
            "-H",
            "Host: catalog.istioinaction.io",
            &format!("{url}/anything/plain{i}"),
        ]);
        assert_eq!(plain.status, 200, "{plain:?}");
        let canary = curl(&[
            "-H",
            "Host: catalog.istioinaction.io",
            "-H",
            "x-version: v2",
            &format!("{url}/anything/canary{i}"),
        ]);
        assert_eq!(canary.status, 200, "{canary:?}");
    }
    let routed = |hb: &Httpbin| -> Vec<String> {
        hb.requests()
            .into_iter()
            .filter(|l| l.contains("/anything/"))
            .collect()
    };
    let done = e2e::testing::eventually_blocking(Duration::from_secs(10), || {
        (routed(&v1).len() == 10 && routed(&v2).len() == 10).then_some(())
    });
    assert!(
        done.is_some(),
        "v1: {:?}\nv2: {:?}",
        v1.requests(),
        v2.requests()
    );
    assert!(routed(&v1).iter().all(|l| l.contains("/anything/plain")));
    assert!(routed(&v2).iter().all(|l| l.contains("/anything/canary")));
    // Istio's cluster of a subset carries its name.
    for (path, subset) in [
        ("/anything/plain0", "version-v1"),
        ("/anything/canary0", "version-v2"),
    ] {
        let line = gw.wait_access_log(|l| l["path"] == path);
        assert_eq!(
            line["upstream_cluster"],
            format!("outbound|80|{subset}|catalog.istioinaction.svc.cluster.local"),
            "{line}"
        );
    }
}

/// Istio's Envoy answers a destination whose cluster does not exist (a subset no
/// DestinationRule defines, a Service that does not exist) with 503 `NC`, not Gateway
/// API's 500; the rest of the VirtualService keeps serving.
#[test]
fn a_destination_without_a_cluster_is_503_nc_while_its_neighbours_serve() {
    let (v1, v2) = (Httpbin::start(), Httpbin::start());
    let port = free_port();
    let vs_and_dr = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: catalog, namespace: istioinaction}\nspec:\n  \
         hosts: [catalog.istioinaction.io]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - match: [{uri: {prefix: /v3}}]\n      \
         route: [{destination: {host: catalog, subset: version-v3}}]\n    \
         - match: [{uri: {prefix: /gone}}]\n      \
         route: [{destination: {host: gone, port: {number: 80}}}]\n    \
         - route: [{destination: {host: catalog, subset: version-v1}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {name: catalog, namespace: istioinaction}\nspec:\n  host: catalog\n  \
         subsets:\n    - {name: version-v1, labels: {version: v1}}\n";
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [catalog.istioinaction.io]\n"
            )),
            vs_and_dr,
            &versioned_catalog(v1.port, v2.port),
        ]),
        &POD,
    );
    let get = |path: &str| curl_host(port, Some("catalog.istioinaction.io"), path);
    let reason = |r: &CurlResult| gw.explain(r)["reason"].as_str().unwrap().to_string();
    let r = get("/v3/anything");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "NC"), "{r:?}");
    assert!(
        reason(&r).contains("subset \"version-v3\" of catalog is not defined"),
        "{}",
        reason(&r)
    );
    // Envoy records no cluster for it.
    let line = gw.wait_access_log(|l| l["path"] == "/v3/anything");
    assert_eq!(line["response_flags"], "NC", "{line}");
    assert_eq!(line["response_code_details"], "cluster_not_found", "{line}");
    assert_eq!(
        line.get("upstream_cluster"),
        Some(&serde_json::Value::Null),
        "{line}"
    );
    let r = get("/gone/anything");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "NC"), "{r:?}");
    assert!(reason(&r).contains("istioinaction/gone"), "{}", reason(&r));
    let r = get("/anything/v1");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_destination_without_port_takes_the_servers_port_as_istio_names_its_cluster() {
    let (a, b) = (Httpbin::start(), Httpbin::start());
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let servers: String = [p1, p2, p3]
        .iter()
        .map(|p| {
            format!(
                "    - port: {{number: {p}, name: http-{p}, protocol: HTTP}}\n      \
                 hosts: [multi.istioinaction.io]\n"
            )
        })
        .collect();
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: multi, namespace: istioinaction}\nspec:\n  \
         hosts: [multi.istioinaction.io]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - match: [{uri: {prefix: /missing}}]\n      \
         route: [{destination: {host: missing}}]\n    \
         - route: [{destination: {host: multi}}]\n";
    // Two ports, each the number of one of the gateway's servers; none for the third.
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: multi, namespace: istioinaction}}\n\
         spec: {{ports: [{{name: a, port: {p1}}}, {{name: b, port: {p2}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: multi-1, namespace: istioinaction, \
         labels: {{kubernetes.io/service-name: multi}}}}\naddressType: IPv4\n\
         ports: [{{name: a, port: {}}}, {{name: b, port: {}}}]\n\
         endpoints: [{{addresses: [127.0.0.1]}}]\n",
        a.port, b.port
    );
    let gw = Gateway::start_with(&docs(&[&istio_gateway(&servers), vs, &service]), &POD);
    let get = |port: u16, path: &str| curl_host(port, Some("multi.istioinaction.io"), path);
    // Istio's cluster is outbound|<server port>||multi...: each server reaches its port.
    for (port, upstream) in [(p1, a.port), (p2, b.port)] {
        let path = format!("/anything/{port}");
        let r = get(port, &path);
        assert_eq!(r.status, 200, "{r:?}");
        let line = gw.wait_access_log(|l| l["path"] == path.as_str());
        assert_eq!(
            line["upstream_cluster"],
            format!("outbound|{port}||multi.istioinaction.svc.cluster.local"),
            "{line}"
        );
        assert_eq!(
            line["upstream_host"],
            format!("127.0.0.1:{upstream}"),
            "{line}"
        );
    }
    // The third server's port is not the Service's: no cluster, 503 NC.
    let r = get(p3, "/anything/3");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "NC"), "{r:?}");
    let reason = |r: &CurlResult| gw.explain(r)["reason"].as_str().unwrap().to_string();
    assert!(reason(&r).contains(&format!("{p3}")), "{}", reason(&r));
    // An unknown Service without a port answers 503 NC; its neighbours keep serving.
    let r = get(p1, "/missing");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "NC"), "{r:?}");
    assert!(
        reason(&r).contains("istioinaction/missing"),
        "{}",
        reason(&r)
    );
}

#[test]
fn pod_labels_from_a_downward_api_file_select_the_istio_gateway() {
    let hb = Httpbin::start();
    let port = free_port();
    let labels = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        labels.path(),
        "app=\"istio-ingressgateway\"\nistio=\"ingressgateway\"\n",
    )
    .unwrap();
    let config = |port: u16| {
        docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [webapp.istioinaction.io]\n"
            )),
            &webapp_vs("webapp.istioinaction.io"),
            &local_service_in("istioinaction", "webapp", hb.port),
        ])
    };
    let file = labels.path().to_str().unwrap();
    let _gw = Gateway::start_with(&config(port), &["--pod-labels-file", file]);
    let ok = curl_host(port, Some("webapp.istioinaction.io"), "/get");
    assert_eq!(ok.status, 200, "{ok:?}");
    // Another pod's labels: the Gateway does not select it, so nothing listens there.
    std::fs::write(labels.path(), "istio=\"eastwestgateway\"\n").unwrap();
    let other = free_port();
    let config = config(other);
    let gw = Gateway::start_waiting_for(&config, &["--pod-labels-file", file], "/healthz");
    assert_eq!(
        curl_host(other, Some("webapp.istioinaction.io"), "/get").status,
        0
    );
    gw.wait_log("does not match this pod's labels");
}

/// An AuthorizationPolicy in `ns` selecting the Istio ingress pod (YAML `rules` body).
fn ingress_policy(ns: &str, name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         selector: {{matchLabels: {{istio: ingressgateway}}}}\n  action: {action}\n  \
         rules:\n{rules}"
    )
}

#[test]
fn authorization_policies_apply_to_a_pod_serving_only_istio_gateways_with_path_templates() {
    let hb = Httpbin::start();
    let port = free_port();
    let config = |policy: &str| {
        docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [\"*\"]\n"
            )),
            &webapp_vs("\"*\""),
            &local_service_in("istioinaction", "webapp", hb.port),
            // In the pod's namespace (--pod-namespace istio-system, also Istio's root).
            &ingress_policy(
                "istio-system",
                "deny-templates",
                "DENY",
                &format!("  - to: [{{operation: {{paths: [{policy}]}}}}]"),
            ),
        ])
    };
    let gw = Gateway::start_with(
        &config("\"/anything/{*}/admin/{**}\", \"/status/{*}\""),
        &POD,
    );
    let status = |path: &str| curl_host(port, Some("webapp.istioinaction.io"), path).status;
    for (path, expected) in [
        ("/anything/a/admin/x/y", 403),
        ("/anything/a/admin/", 403),
        ("/status/418", 403),
        ("/anything/a/admin", 200),
        ("/anything/a/b/admin/x", 200),
        ("/anything/status/418", 200),
        ("/get", 200),
    ] {
        assert_eq!(status(path), expected, "{path}");
    }
    let denied = curl_host(port, Some("webapp.istioinaction.io"), "/status/418");
    assert_eq!(denied.body, "RBAC: access denied");
    assert!(
        gw.explain(&denied)["reason"]
            .as_str()
            .unwrap()
            .contains("istio-system/deny-templates"),
        "{denied:?}"
    );
    // A template Envoy cannot read: the DENY policy fails closed, reported by name.
    gw.write_config(&config("\"/a/{**}/{*}\""));
    gw.wait_log(
        "AuthorizationPolicy istio-system/deny-templates rules[0].to[0].operation: paths \
         \"/a/{**}/{*}\" is not a valid path template: \"{*}\": no operator may follow {**}",
    );
    gw.wait_log("AuthorizationPolicy istio-system/deny-templates: this DENY policy fails closed");
    eventually("the failed-closed policy to deny /get", || {
        status("/get") == 403
    });
}

#[test]
fn case_insensitive_prefix_rewrites_per_try_timeouts_and_retriable_status_codes_are_istios() {
    let hb = Httpbin::start();
    let port = free_port();
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: webapp, namespace: istioinaction}\nspec:\n  \
         hosts: [\"*\"]\n  gateways: [coolstore-gateway]\n  http:\n    \
         - match: [{uri: {prefix: /api/}, ignoreUriCase: true}]\n      \
         rewrite: {uri: /anything/}\n      route: [{destination: {host: webapp}}]\n    \
         - match: [{uri: {prefix: /delay/}}]\n      \
         retries: {attempts: 1, perTryTimeout: 300ms, retryOn: 5xx}\n      \
         route: [{destination: {host: webapp}}]\n    \
         - match: [{uri: {prefix: /status/}}]\n      \
         retries: {attempts: 1, retryOn: \"retriable-status-codes,503\"}\n      \
         route: [{destination: {host: webapp}}]\n";
    let gw = Gateway::start_with(
        &docs(&[
            &istio_gateway(&format!(
                "    - port: {{number: {port}, name: http, protocol: HTTP}}\n      \
                 hosts: [\"*\"]\n"
            )),
            vs,
            &local_service_in("istioinaction", "webapp", hb.port),
        ]),
        &POD,
    );
    // Istio's rewrite replaces the prefix matched, whatever its case.
    for path in ["/api/x", "/API/x", "/Api/foo/bar"] {
        let r = curl_host(port, Some("a.example"), path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let rest = &path["/api/".len()..];
        assert_eq!(
            r.json()["url"],
            format!("http://a.example/anything/{rest}"),
            "{path}"
        );
    }
    // perTryTimeout bounds each attempt without a route timeout.
    let slow = curl_host(port, Some("a.example"), "/delay/2");
    assert_eq!((slow.status, error_code(&slow).as_str()), (504, "URX,UT"));
    assert_eq!(gw.explain(&slow)["attempts"], 2);
    // retriable-status-codes with its number: accepted, and 503 retried.
    let r = curl_host(port, Some("a.example"), "/status/503");
    assert_eq!(r.status, 503);
    let line = gw.wait_access_log(|l| l["path"] == "/status/503");
    assert_eq!(
        (&line["attempts"], &line["response_flags"]),
        (&2.into(), &"URX".into())
    );
}
