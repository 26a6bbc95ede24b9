//! Request-path cost of the metrics: time per finished request spent recording the Istio
//! metrics (four families, one label set of 25 labels) and the `gateway_*` request
//! metrics, for a hot series. First on one thread; then on 2, 4 and 8 threads (up to the
//! CPU count, or `bench_istio_metrics MAX_THREADS`) recording at once, into one shared
//! `Metrics` (as the gateway's workers do: its per-request families are sharded by
//! thread) and into one `Metrics` per thread (nothing shared at all), so any price of
//! sharing them across workers shows. Run by `scripts/bench-metrics` (release).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use gateway::ir;
use gateway::observe::istio_metrics::{Destination, RequestRecord, Workload};
use gateway::observe::metrics::Metrics;

const N: u32 = 1_000_000;

fn metrics() -> Metrics {
    let labels = BTreeMap::from([
        ("app".to_string(), "meshgate".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]);
    let source = Workload::from_labels(
        "meshgate",
        "istio-ingress",
        "spiffe://cluster.local/ns/istio-ingress/sa/meshgate",
        &labels,
        "Kubernetes",
    );
    Metrics::with_source(source, true)
}

fn destination() -> Arc<Destination> {
    let backend = ir::Backend {
        name: "Service default/httpbin:80".into(),
        weight: 1,
        http2: false,
        target: ir::BackendTarget::Unresolvable(String::new()),
        filters: Default::default(),
        policy: None,
        service_host: Some("httpbin.default.svc.cluster.local".into()),
        subset: None,
    };
    Destination::for_backend(&backend).interned()
}

fn record(destination: &Arc<Destination>) -> RequestRecord<'_> {
    RequestRecord {
        destination,
        grpc: false,
        response_code: 200,
        grpc_status: None,
        response_flags: "-",
        mutual_tls: false,
        duration_ms: 1.7,
        request_bytes: 120,
        response_bytes: 480,
    }
}

/// What the request path records when a request finishes, `n` times: the Istio metrics,
/// then the `gateway_*` ones (by the rule's id, the tables' `Arc<str>`).
fn finish_requests(
    m: &Metrics,
    rec: &RequestRecord<'_>,
    id: &Arc<str>,
    n: u32,
) -> (Duration, Duration) {
    let t = Instant::now();
    for _ in 0..n {
        m.istio.record(black_box(rec));
    }
    let istio = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        m.request_finished(black_box(id), 200, 0.0017);
    }
    (istio, t.elapsed())
}

/// Nanoseconds per request per thread (both kinds of metrics), `threads` threads at once,
/// into one shared `Metrics` or one each.
fn concurrent(threads: usize, shared: bool) -> f64 {
    let one = Arc::new(metrics());
    // The rule's id is the tables' `Arc<str>`, which every worker shares.
    let shared_id: Arc<str> = Arc::from("default/httpbin/0");
    let start = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (one, start, shared_id) = (one.clone(), &start, &shared_id);
                s.spawn(move || {
                    let own = (!shared).then(metrics);
                    let m = own.as_ref().unwrap_or(&one);
                    let id = match shared {
                        true => shared_id.clone(),
                        false => Arc::from("default/httpbin/0"),
                    };
                    let dest = destination();
                    let rec = record(&dest);
                    start.wait();
                    let (a, b) = finish_requests(m, &rec, &id, N);
                    a + b
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    total.as_nanos() as f64 / threads as f64 / f64::from(N)
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(cpus.min(8));
    let dest = destination();
    let (istio, ops) = finish_requests(
        &metrics(),
        &record(&dest),
        &Arc::from("default/httpbin/0"),
        N,
    );
    let per = |d: Duration| d.as_nanos() as f64 / f64::from(N);
    println!("istio_* metrics per request:   {:.0} ns", per(istio));
    println!("gateway_* metrics per request: {:.0} ns", per(ops));
    println!();
    println!("threads recording at once ({cpus} CPUs): ns per request per thread, both kinds");
    println!(
        "| threads | one shared Metrics (as the workers) | one Metrics per thread | shared / per thread |"
    );
    println!("|---:|---:|---:|---:|");
    let mut threads = 1;
    while threads <= max {
        let (a, b) = (concurrent(threads, true), concurrent(threads, false));
        println!("| {threads} | {a:.0} | {b:.0} | {:.2} |", a / b);
        threads *= 2;
    }
}
