//! Cost of a reload with a large route table: builds N HTTPRoutes (default 10,000) of
//! distinct hostnames in memory (every tenth a wildcard `*.w<i>.example.com`, four rules
//! each: Exact, PathPrefix with a header match, PathPrefix, `/`), parses them once (not
//! timed), then times translate + data-plane build + swap, several runs, and prints
//! p50/max; also the time to free the previous tables, which `TableReader::store` leaves
//! to a thread of its own. Usage: `bench_routes [routes] [runs] [catch-all]` (release
//! build: `cargo run --release -p gateway --example bench_routes`); `catch-all` adds a
//! route without hostnames, whose rules then compete with every host's (Gateway API's
//! precedence across hostnames), so every entry is ranked.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gateway::dataplane::{self, TableReader};
use gateway::providers::file;
use gateway::translate::{self, TranslateOptions};
use gateway::upstream::backend_state::BackendStates;

/// The gateway binary's allocator, counting allocations and their bytes (relaxed adds)
/// so that the report can say how many a reload makes and how much it asks for.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed through to mimalloc unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The same shape as `scripts/bench --routes N`; with `catch_all`, one more route
/// without hostnames.
fn config(routes: usize, catch_all: bool) -> String {
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
    if catch_all {
        out.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: catch-all, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: bench}}]\n  rules:\n\
             \x20   - matches: [{{path: {{type: PathPrefix, value: /fallback}}}}]\n      {backend}\n"
        ));
    }
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
    let catch_all = args.next().is_some_and(|a| a == "catch-all");
    let yaml = config(routes, catch_all);
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
    let (mut translate_t, mut build_t, mut swap_t, mut total_t, mut free_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut allocs, mut bytes) = ((0, 0), (0, 0));
    for _ in 0..runs {
        // Held here so that the old tables are freed below, timed, rather than on the
        // thread `store` hands them to.
        let previous = Arc::clone(&*reader.load());
        let (a0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let t0 = Instant::now();
        let out = translate::translate(&snap, &opts);
        assert!(out.errors.is_empty(), "{:?}", &out.errors[..1]);
        let (ir, _report) = out.accepted().expect("accepted");
        let t1 = Instant::now();
        let (a1, b1) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
        );
        let tables = dataplane::build_with(Arc::new(ir), &states);
        let t2 = Instant::now();
        allocs = (a1 - a0, ALLOCATIONS.load(Ordering::Relaxed) - a1);
        bytes = (b1 - b0, BYTES.load(Ordering::Relaxed) - b1);
        reader.store(tables);
        let t3 = Instant::now();
        // Once the release thread has let go, this is the last reference.
        while Arc::strong_count(&previous) > 1 {
            std::thread::yield_now();
        }
        let t3b = Instant::now();
        drop(previous);
        let t4 = Instant::now();
        translate_t.push(t1 - t0);
        build_t.push(t2 - t1);
        swap_t.push(t3 - t2);
        total_t.push(t3 - t0);
        free_t.push(t4 - t3b);
    }
    let vhosts: usize = reader
        .load()
        .ir
        .ports
        .values()
        .flat_map(|p| &p.listeners)
        .map(|l| l.virtual_hosts.len())
        .sum();
    assert_eq!(
        vhosts,
        routes + usize::from(catch_all),
        "one virtual host per route"
    );
    println!(
        "allocations per route (last run): translate {:.1}, data-plane build {:.1}; \
         bytes asked for per route: translate {:.1} KiB, data-plane build {:.1} KiB",
        allocs.0 as f64 / routes as f64,
        allocs.1 as f64 / routes as f64,
        bytes.0 as f64 / 1024.0 / routes as f64,
        bytes.1 as f64 / 1024.0 / routes as f64
    );
    // The process's first reload, whose memory comes fresh from the kernel (page faults),
    // as a reload after a quiet spell may (the allocator returns freed pages).
    println!(
        "first reload of the process: translate + build + swap {:.1} ms",
        ms(total_t[0])
    );
    println!("| {runs} runs | p50 (ms) | max (ms) |");
    println!("|---|---:|---:|");
    for (name, v) in [
        ("translate", &mut translate_t),
        ("data-plane build", &mut build_t),
        ("swap", &mut swap_t),
        ("total: translate + build + swap", &mut total_t),
        (
            "freeing the old tables (off the swapping thread)",
            &mut free_t,
        ),
    ] {
        v.sort();
        println!(
            "| {name} | {:.1} | {:.1} |",
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        );
    }
}
