//! Request-path cost of the metrics: time per finished request spent recording the Istio
//! metrics (four families, one label set of 25 labels) and the `gateway_*` request
//! metrics, on one thread, for a hot series. Run by `scripts/bench-metrics` (release).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use gateway::ir;
use gateway::observe::istio_metrics::{Destination, RequestRecord, Workload};
use gateway::observe::metrics::{Metrics, RequestLabels, RouteLabels};

const N: u32 = 1_000_000;

fn main() {
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
    let m = Metrics::with_source(source, true);
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
    let dest = Destination::for_backend(&backend).interned();
    let rec = RequestRecord {
        destination: dest,
        grpc: false,
        response_code: 200,
        grpc_status: None,
        response_flags: "-",
        mutual_tls: false,
        duration_ms: 1.7,
        request_bytes: 120,
        response_bytes: 480,
    };
    let t = Instant::now();
    for _ in 0..N {
        m.istio.record(black_box(&rec));
    }
    let istio = t.elapsed().as_nanos() as f64 / f64::from(N);
    // The request path clones the rule's shared id (an `Arc<str>`) into the labels.
    let id: std::sync::Arc<str> = std::sync::Arc::from("default/httpbin/0");
    let t = Instant::now();
    for _ in 0..N {
        let route = black_box(&id).clone();
        m.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                code: 200,
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(0.0017);
    }
    let ops = t.elapsed().as_nanos() as f64 / f64::from(N);
    println!("istio_* metrics per request:   {istio:.0} ns");
    println!("gateway_* metrics per request: {ops:.0} ns");
}
