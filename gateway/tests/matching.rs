//! Request matching on a compiled table: which rule a request selects, following Gateway
//! API precedence (uses the golden inputs).

use std::path::PathBuf;
use std::sync::Arc;

use gateway::dataplane::{self, RequestView, Tables};
use gateway::providers::file::{SourceFile, parse};
use gateway::translate::{TranslateOptions, translate};
use http::{HeaderMap, Method};

fn table(name: &str) -> Tables {
    gateway::install_crypto_provider();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.yaml"));
    let source = SourceFile {
        content: std::fs::read_to_string(&path).unwrap(),
        path,
    };
    let snap = parse(&[source]).unwrap();
    let (ir, _) = translate(&snap, &TranslateOptions::default())
        .accepted()
        .unwrap();
    dataplane::build(Arc::new(ir))
}

/// `rule id` and the IR match (as JSON) selected for a request, if any.
fn select(
    t: &Tables,
    port: u16,
    host: &str,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (path, query) = uri
        .split_once('?')
        .map_or((uri, None), |(p, q)| (p, Some(q)));
    let pt = t.ports.get(&port)?;
    let li = pt.listener_for_host(host)?;
    let listener = &pt.listeners[li];
    let view = RequestView {
        method: &method,
        path,
        query,
        headers: &h,
    };
    let (vi, ri) = listener.find_at(host, &view)?;
    // The runtime tables keep the IR's order: describe the match from the IR.
    let entry = &t.ir.ports[&port].listeners[li].virtual_hosts[vi].routes[ri];
    Some(format!(
        "{} {}",
        entry.rule.id,
        serde_json::to_string(&entry.matcher).unwrap()
    ))
}

#[test]
fn requests_select_rules_by_gateway_api_precedence() {
    let t = table("path_header_query_method_precedence");
    let get = |uri: &str, headers: &[(&str, &str)]| {
        select(&t, 8080, "app.example.com", Method::GET, uri, headers).unwrap()
    };
    assert!(get("/api/health", &[]).contains("Exact"));
    assert!(get("/api/v2/things", &[]).contains("RegularExpression"));
    // RegularExpression ranks above any PathPrefix (the spec leaves regex precedence to
    // implementations), so it shadows the longer /api/v1/users prefix.
    assert!(get("/api/v1/users/7", &[]).contains("RegularExpression"));
    assert!(get("/api/x", &[("x-canary", "true"), ("x-user", "bob")]).contains("x-canary"));
    // Header regex must match the whole value.
    assert!(!get("/api/x", &[("x-canary", "true"), ("x-user", "bobby")]).contains("x-canary"));
    assert!(get("/api/x?debug=1", &[]).contains("debug"));
    assert!(!get("/api/x?debug=10", &[]).contains("debug"));
    // Equal matches: the older route wins.
    assert!(get("/api/x", &[]).starts_with("default/older/0"));
    let post = select(&t, 8080, "app.example.com", Method::POST, "/api/x", &[]).unwrap();
    assert!(
        post.starts_with("default/newer/0") && post.contains("POST"),
        "{post}"
    );
    // Other hosts have no route here; paths outside /api neither.
    assert!(select(&t, 8080, "other.example.com", Method::GET, "/api", &[]).is_none());
    assert!(select(&t, 8080, "app.example.com", Method::GET, "/apix", &[]).is_none());
}

#[test]
fn most_specific_hostname_wins_across_listeners_on_a_port() {
    let t = table("host_routing");
    let rule = |host: &str| {
        select(&t, 8080, host, Method::GET, "/", &[])
            .map(|s| s.split(' ').next().unwrap().to_string())
    };
    assert_eq!(
        rule("foo.example.com").as_deref(),
        Some("default/exact-host/0")
    );
    assert_eq!(
        rule("x.a.example.com").as_deref(),
        Some("default/wildcard-host/0")
    );
    assert_eq!(
        rule("bar.example.com").as_deref(),
        Some("default/no-hostnames/0")
    );
    assert_eq!(
        rule("anything.else").as_deref(),
        Some("default/no-hostnames/0")
    );
    // bar.other.com does not intersect the *.example.com listener it attached to.
    assert_eq!(
        rule("bar.other.com").as_deref(),
        Some("default/no-hostnames/0")
    );
    assert!(select(&t, 9090, "other.example.org", Method::GET, "/", &[]).is_none());
    assert!(select(&t, 9090, "api.example.org", Method::GET, "/", &[]).is_some());
}

/// The conformance test HTTPRouteMatchingAcrossRoutes, request by request, and a host
/// whose own routes match nothing served by the route without hostnames.
#[test]
fn rules_of_every_matching_hostname_compete_in_one_precedence_order() {
    let t = table("matching_across_routes");
    let rule = |host: &str, path: &str, headers: &[(&str, &str)]| {
        select(&t, 8080, host, Method::GET, path, headers)
            .map(|s| s.split(' ').next().unwrap().to_string())
    };
    let part1 = Some("infra/matching-part1/0".to_string());
    let part2 = Some("infra/matching-part2/0".to_string());
    assert_eq!(rule("example.com", "/", &[]), part1);
    assert_eq!(rule("example.com", "/example", &[]), part1);
    assert_eq!(rule("example.net", "/example", &[]), part1);
    assert_eq!(
        rule("example.com", "/example", &[("version", "one")]),
        part1
    );
    assert_eq!(rule("example.com", "/v2", &[]), part2);
    assert_eq!(
        rule("example.net", "/v2", &[]),
        part1,
        "*.com does not cover .net"
    );
    assert_eq!(rule("example.com", "/v2/example", &[]), part2);
    assert_eq!(rule("example.com", "/", &[("version", "two")]), part2);
    // The catch-all ties with matching-part1's `/` for example.com: the more specific
    // hostname wins; for a host no other route names, it serves.
    let catch_all = Some("infra/catch-all/0".to_string());
    assert_eq!(rule("other.org", "/", &[]), catch_all);
    assert_eq!(rule("www.host.org", "/get", &[]), catch_all);
    assert_eq!(
        rule("www.host.org", "/pathmatch/x", &[]),
        Some("infra/path-only/0".to_string())
    );
    assert_eq!(rule("a.example.com", "/", &[]), catch_all);
    assert_eq!(rule("a.example.com", "/v2", &[]), part2);
}
