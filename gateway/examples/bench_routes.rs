//! Cost of a reload with a large route table: builds N HTTPRoutes (default 10,000) of
//! distinct hostnames in memory (every tenth a wildcard `*.w<i>.example.com`, four rules
//! each: Exact, PathPrefix with a header match, PathPrefix, `/`), parses them once (not
//! timed), then times translate + data-plane build + swap, several runs, and prints
//! p50/max. Usage: `bench_routes [routes] [runs]` (release build: `cargo run --release -p
//! gateway --example bench_routes`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::dataplane::{self, TableReader};
use gateway::providers::file;
use gateway::translate::{self, TranslateOptions};
use gateway::upstream::backend_state::BackendStates;

/// The same shape as `scripts/bench --routes N`.
fn config(routes: usize) -> String {
    let mut out = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: bench, namespace: default}\n\
         spec:\n  listeners: [{name: http, port: 8080, protocol: HTTP}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: upstream, namespace: default}\n\
         spec: {ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: upstream-1, namespace: default, labels: {kubernetes.io/service-name: upstream}}\n\
         addressType: IPv4\nports: [{name: http, port: 8000}]\n\
         endpoints: [{addresses: [127.0.0.1]}]\n",
    );
    let backend = "backendRefs: [{name: upstream, port: 80}]";
    for i in 0..routes {
        let host = if i % 10 == 5 {
            format!("*.w{i}.example.com")
        } else {
            format!("h{i}.bench.example.com")
        };
        out.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: r{i}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [\"{host}\"]\n  rules:\n\
             \x20   - matches: [{{path: {{type: Exact, value: /exact/{i}}}}}]\n      {backend}\n\
             \x20   - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-variant, value: canary}}]}}]\n      {backend}\n\
             \x20   - matches: [{{path: {{type: PathPrefix, value: /static}}}}]\n      {backend}\n\
             \x20   - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n      {backend}\n"
        ));
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let routes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let yaml = config(routes);
    let t = Instant::now();
    let snap = file::parse_str(&yaml).expect("the generated config parses");
    println!(
        "{routes} HTTPRoutes, {} KiB of YAML; parse (not counted below): {:.1} ms",
        yaml.len() / 1024,
        ms(t.elapsed())
    );
    let opts = TranslateOptions::default();
    let states = BackendStates::default();
    let reader = TableReader::default();
    let (mut translate_t, mut build_t, mut total_t) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = translate::translate(&snap, &opts);
        assert!(out.errors.is_empty(), "{:?}", &out.errors[..1]);
        let (ir, _report) = out.accepted().expect("accepted");
        let t1 = Instant::now();
        let tables = dataplane::build_with(Arc::new(ir), &states);
        reader.store(tables);
        let t2 = Instant::now();
        translate_t.push(t1 - t0);
        build_t.push(t2 - t1);
        total_t.push(t2 - t0);
    }
    let vhosts: usize = reader
        .load()
        .ir
        .ports
        .values()
        .flat_map(|p| &p.listeners)
        .map(|l| l.virtual_hosts.len())
        .sum();
    assert_eq!(vhosts, routes, "one virtual host per route");
    println!("| {runs} runs | p50 (ms) | max (ms) |");
    println!("|---|---:|---:|");
    for (name, v) in [
        ("translate", &mut translate_t),
        ("data-plane build + swap", &mut build_t),
        ("total (parse excluded)", &mut total_t),
    ] {
        v.sort();
        println!(
            "| {name} | {:.1} | {:.1} |",
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        );
    }
}
