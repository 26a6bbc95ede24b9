//! Istio's standard request metrics, reported by the gateway itself as the source
//! workload (`reporter="source"`), with Istio's label set, so Kiali's graph and Istio's
//! Grafana dashboards show the gateway's edges unchanged.
//!
//! Cardinality is bounded by configuration: every label value comes from the gateway's
//! own settings (source), from the route table and the endpoints' Pods (destination), or
//! from a closed set (protocol, status code, response flag, security policy). Request
//! paths, hosts and headers never become label values; a request that matches no route
//! goes to the `unknown` destination.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use hashbrown::Equivalent;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::registry::Registry;

use super::sharded::{Count, LabelKey, Observations, ShardedFamily};
use crate::ir;

/// Istio's value for a label it cannot fill.
pub const UNKNOWN: &str = "unknown";
/// Istio's default cluster id (`ISTIO_META_CLUSTER_ID` unset).
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Envoy's default histogram buckets, which Istio's proxies use for every histogram
/// (durations in ms and sizes in bytes alike) unless `statsHistogramBuckets` is set.
const ENVOY_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The workload labels of one side of an edge (the gateway, or an endpoint's Pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Workload name (the Deployment, or the Pod's owner).
    pub name: Arc<str>,
    /// Its namespace.
    pub namespace: Arc<str>,
    /// SPIFFE id it presents over mesh mTLS.
    pub principal: Arc<str>,
    /// `app` label.
    pub app: Arc<str>,
    /// `version` label.
    pub version: Arc<str>,
    /// Istio's canonical service (`service.istio.io/canonical-name`, else
    /// `app.kubernetes.io/name`, else `app`, else the workload name).
    pub canonical_service: Arc<str>,
    /// Istio's canonical revision (`service.istio.io/canonical-revision`, else
    /// `app.kubernetes.io/version`, else `version`, else `latest`).
    pub canonical_revision: Arc<str>,
    /// Cluster id (the source's; a destination reports the source's once its workload is
    /// known).
    pub cluster: Arc<str>,
}

impl Workload {
    /// A workload nothing is known about: every label `unknown` but the canonical
    /// revision, which Istio reports as `latest` then (its default revision).
    pub fn unknown() -> Workload {
        let u: Arc<str> = UNKNOWN.into();
        Workload {
            name: u.clone(),
            namespace: u.clone(),
            principal: u.clone(),
            app: u.clone(),
            version: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: "latest".into(),
            cluster: u,
        }
    }

    /// Istio's workload labels from a Pod's name, namespace, labels and principal.
    pub fn from_labels(
        name: &str,
        namespace: &str,
        principal: &str,
        labels: &BTreeMap<String, String>,
        cluster: &str,
    ) -> Workload {
        let get = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).map(String::as_str));
        let app = get(&["app", "app.kubernetes.io/name"]).unwrap_or(UNKNOWN);
        let version = get(&["version", "app.kubernetes.io/version"]).unwrap_or(UNKNOWN);
        let canonical_service = get(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or(name);
        let canonical_revision = get(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or("latest");
        Workload {
            name: name.into(),
            namespace: namespace.into(),
            principal: principal.into(),
            app: app.into(),
            version: version.into(),
            canonical_service: canonical_service.into(),
            canonical_revision: canonical_revision.into(),
            cluster: cluster.into(),
        }
    }
}

/// The destination of an edge: a Service and the workload behind the endpoint used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Service host (`name.namespace.svc.cluster.local`), or `unknown`.
    pub service: Arc<str>,
    /// Service name.
    pub service_name: Arc<str>,
    /// Service namespace.
    pub service_namespace: Arc<str>,
    /// The endpoint's workload (all `unknown` when no endpoint was picked).
    pub workload: Workload,
}

/// Every destination made so far, one `Arc` per distinct label set, so that a series key
/// compares and hashes destinations by pointer (a table rebuild hands out the same `Arc`
/// for the same labels). Bounded by configuration, like the series themselves.
static INTERNED: LazyLock<Mutex<HashSet<Arc<Destination>>>> = LazyLock::new(Default::default);

static UNKNOWN_DESTINATION: LazyLock<Arc<Destination>> = LazyLock::new(|| {
    let u: Arc<str> = UNKNOWN.into();
    Destination {
        service: u.clone(),
        service_name: u.clone(),
        service_namespace: u,
        workload: Workload::unknown(),
    }
    .interned()
});

impl Destination {
    /// The one shared `Arc` for these labels.
    pub fn interned(self) -> Arc<Destination> {
        let mut set = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = set.get(&self) {
            return d.clone();
        }
        let d = Arc::new(self);
        set.insert(d.clone());
        d
    }

    /// The destination of a request that reached no backend (no route, a redirect).
    pub fn unknown() -> Arc<Destination> {
        UNKNOWN_DESTINATION.clone()
    }

    /// The same, borrowed: a request that only reads it writes no count every worker shares.
    pub fn unknown_ref() -> &'static Arc<Destination> {
        &UNKNOWN_DESTINATION
    }

    /// The destination for a backend, before any endpoint is picked (its workload is
    /// `unknown`): what Istio reports for `UH` and other failures before a connection.
    pub fn for_backend(b: &ir::Backend) -> Destination {
        let Some(host) = &b.service_host else {
            let mut d = (*Destination::unknown()).clone();
            d.service = b.name.clone();
            return d;
        };
        let mut parts = host.split('.');
        let name = parts.next().unwrap_or(UNKNOWN);
        let namespace = parts.next().unwrap_or(UNKNOWN);
        Destination {
            service: host.clone(),
            service_name: name.into(),
            service_namespace: namespace.into(),
            workload: Workload::unknown(),
        }
    }

    /// The destination of one endpoint of a backend. Its cluster is reported as the
    /// gateway's own (endpoints come from the gateway's cluster only).
    pub fn for_endpoint(base: &Destination, ep: &ir::Endpoint) -> Destination {
        let Some(w) = &ep.workload else {
            return base.clone();
        };
        let principal = match &ep.transport {
            ir::Transport::Mesh(t) => principal_of(&t.identities, &w.namespace, &w.service_account),
            ir::Transport::Plaintext | ir::Transport::Tls(_) => UNKNOWN.to_string(),
        };
        Destination {
            workload: Workload::from_labels(&w.name, &w.namespace, &principal, &ep.labels, UNKNOWN),
            ..base.clone()
        }
    }
}

/// The SPIFFE id of `ns`/`sa` among the identities a mesh upstream may present.
fn principal_of(identities: &[String], ns: &str, sa: &str) -> String {
    let suffix = format!("/ns/{ns}/sa/{sa}");
    identities
        .iter()
        .find(|id| id.ends_with(&suffix))
        .cloned()
        .unwrap_or_else(|| UNKNOWN.to_string())
}

/// One series of the Istio request metrics. Compared and hashed with the source and
/// destination by pointer: there is one source per process and destinations are
/// [interned](Destination::interned), so equal labels are the same `Arc`.
#[derive(Debug, Clone)]
pub struct IstioLabels {
    /// The gateway (one per process).
    pub source: Arc<Workload>,
    /// The Service and workload the request went to.
    pub destination: Arc<Destination>,
    /// `http` or `grpc`.
    pub request_protocol: &'static str,
    /// Status code sent to the client.
    pub response_code: u16,
    /// gRPC status of a gRPC response.
    pub grpc_response_status: Option<u8>,
    /// Envoy response flag, `-` when none.
    pub response_flags: &'static str,
    /// The gateway originated mesh mTLS to the endpoint.
    pub mutual_tls: bool,
}

impl IstioLabels {
    /// The borrowed view that hashing and comparing go through, so a [`IstioKey`] finds
    /// the series of the labels it was made from.
    fn key(&self) -> IstioKey<'_> {
        IstioKey {
            source: &self.source,
            destination: &self.destination,
            request_protocol: self.request_protocol,
            response_code: self.response_code,
            grpc_response_status: self.grpc_response_status,
            response_flags: self.response_flags,
            mutual_tls: self.mutual_tls,
        }
    }
}

impl PartialEq for IstioLabels {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}

impl Eq for IstioLabels {}

impl Hash for IstioLabels {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key().hash(h);
    }
}

/// [`IstioLabels`] borrowed: a finished request looks its series up with this, so the
/// source's and destination's `Arc`s (shared by every worker) are cloned only into a new
/// series, not on every request.
#[derive(Debug, Clone, Copy)]
pub struct IstioKey<'a> {
    source: &'a Arc<Workload>,
    destination: &'a Arc<Destination>,
    request_protocol: &'static str,
    response_code: u16,
    grpc_response_status: Option<u8>,
    response_flags: &'static str,
    mutual_tls: bool,
}

impl PartialEq for IstioKey<'_> {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(self.source, o.source)
            && Arc::ptr_eq(self.destination, o.destination)
            && (
                self.request_protocol,
                self.response_code,
                self.grpc_response_status,
            ) == (o.request_protocol, o.response_code, o.grpc_response_status)
            && (self.response_flags, self.mutual_tls) == (o.response_flags, o.mutual_tls)
    }
}

impl Hash for IstioKey<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        Arc::as_ptr(self.source).hash(h);
        Arc::as_ptr(self.destination).hash(h);
        self.request_protocol.hash(h);
        self.response_code.hash(h);
        self.grpc_response_status.hash(h);
        self.response_flags.hash(h);
        self.mutual_tls.hash(h);
    }
}

impl Equivalent<IstioLabels> for IstioKey<'_> {
    fn equivalent(&self, labels: &IstioLabels) -> bool {
        *self == labels.key()
    }
}

impl LabelKey<IstioLabels> for IstioKey<'_> {
    fn to_labels(&self) -> IstioLabels {
        IstioLabels {
            source: self.source.clone(),
            destination: self.destination.clone(),
            request_protocol: self.request_protocol,
            response_code: self.response_code,
            grpc_response_status: self.grpc_response_status,
            response_flags: self.response_flags,
            mutual_tls: self.mutual_tls,
        }
    }
}

impl EncodeLabelSet for IstioLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        let (s, d, w) = (&self.source, &self.destination, &self.destination.workload);
        let (source_principal, destination_principal, policy) = if self.mutual_tls {
            (&*s.principal, &*w.principal, "mutual_tls")
        } else {
            (UNKNOWN, UNKNOWN, "none")
        };
        let destination_cluster = if &*w.name == UNKNOWN {
            UNKNOWN
        } else {
            &*s.cluster
        };
        let grpc = self.grpc_response_status.map(|g| g.to_string());
        let code = self.response_code.to_string();
        let tcp = self.request_protocol == "tcp";
        let labels: [(&str, &str); ISTIO_LABELS] = [
            ("reporter", "source"),
            ("source_workload", &s.name),
            ("source_workload_namespace", &s.namespace),
            ("source_principal", source_principal),
            ("source_app", &s.app),
            ("source_version", &s.version),
            ("source_canonical_service", &s.canonical_service),
            ("source_canonical_revision", &s.canonical_revision),
            ("source_cluster", &s.cluster),
            ("destination_service", &d.service),
            ("destination_service_name", &d.service_name),
            ("destination_service_namespace", &d.service_namespace),
            ("destination_workload", &w.name),
            ("destination_workload_namespace", &w.namespace),
            ("destination_principal", destination_principal),
            ("destination_app", &w.app),
            ("destination_version", &w.version),
            ("destination_canonical_service", &w.canonical_service),
            ("destination_canonical_revision", &w.canonical_revision),
            ("destination_cluster", destination_cluster),
            ("request_protocol", self.request_protocol),
            ("response_code", &code),
            ("grpc_response_status", grpc.as_deref().unwrap_or("")),
            ("response_flags", self.response_flags),
            ("connection_security_policy", policy),
        ];
        // Istio's TCP series have no response code (there is no response).
        let skip = |name: &str| tcp && matches!(name, "response_code" | "grpc_response_status");
        for l in labels.iter().filter(|(name, _)| !skip(name)) {
            l.encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// What one finished connection of a connection route contributes.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    /// Where it went ([`Destination::unknown`] when nowhere).
    pub destination: Arc<Destination>,
    /// Envoy response flag or `-`.
    pub response_flags: &'static str,
    /// Mesh mTLS to the endpoint.
    pub mutual_tls: bool,
    /// Bytes from the client to the upstream.
    pub received_bytes: u64,
    /// Bytes from the upstream to the client.
    pub sent_bytes: u64,
    /// Counts the connection as opened (with its first report).
    pub opened: bool,
    /// Counts it as closed (with its last report).
    pub closed: bool,
}

/// How many labels an Istio request series carries (`reporter` included).
pub const ISTIO_LABELS: usize = 25;

/// What one finished request contributes to the Istio metrics.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    /// Where it went.
    pub destination: &'a Arc<Destination>,
    /// gRPC request?
    pub grpc: bool,
    /// Status code sent.
    pub response_code: u16,
    /// gRPC status, when the response carried one.
    pub grpc_status: Option<u8>,
    /// Envoy response flag or `-`.
    pub response_flags: &'static str,
    /// Mesh mTLS to the endpoint.
    pub mutual_tls: bool,
    /// Milliseconds until the response ended.
    pub duration_ms: f64,
    /// Request headers and body bytes.
    pub request_bytes: u64,
    /// Response headers and body bytes.
    pub response_bytes: u64,
}

/// `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
/// `istio_response_bytes`, and for connection routes `istio_tcp_connections_opened_total`,
/// `istio_tcp_connections_closed_total`, `istio_tcp_received_bytes_total`,
/// `istio_tcp_sent_bytes_total`.
pub struct IstioMetrics {
    /// Off (`--istio-metrics off`): nothing is recorded or registered.
    enabled: bool,
    source: Arc<Workload>,
    tcp_opened: ShardedFamily<IstioLabels, Count>,
    tcp_closed: ShardedFamily<IstioLabels, Count>,
    tcp_received: ShardedFamily<IstioLabels, Count>,
    tcp_sent: ShardedFamily<IstioLabels, Count>,
    requests: ShardedFamily<IstioLabels, Count>,
    duration: ShardedFamily<IstioLabels, Observations>,
    request_bytes: ShardedFamily<IstioLabels, Observations>,
    response_bytes: ShardedFamily<IstioLabels, Observations>,
}

impl IstioMetrics {
    /// Metrics reported with `source` as the source workload; `enabled` false records
    /// nothing.
    pub fn new(source: Workload, enabled: bool) -> IstioMetrics {
        IstioMetrics {
            enabled,
            source: Arc::new(source),
            tcp_opened: ShardedFamily::counters(),
            tcp_closed: ShardedFamily::counters(),
            tcp_received: ShardedFamily::counters(),
            tcp_sent: ShardedFamily::counters(),
            requests: ShardedFamily::counters(),
            duration: ShardedFamily::histograms(ENVOY_BUCKETS),
            request_bytes: ShardedFamily::histograms(ENVOY_BUCKETS),
            response_bytes: ShardedFamily::histograms(ENVOY_BUCKETS),
        }
    }

    /// Registers the four metrics (unprefixed, Istio's names).
    pub fn register(&self, reg: &mut Registry) {
        reg.register("istio_requests", "Requests", self.requests.clone());
        reg.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            self.duration.clone(),
        );
        reg.register(
            "istio_request_bytes",
            "Request size (headers and body)",
            self.request_bytes.clone(),
        );
        reg.register(
            "istio_response_bytes",
            "Response size (headers and body)",
            self.response_bytes.clone(),
        );
        let tcp = [
            (
                "istio_tcp_connections_opened",
                "TCP connections opened",
                &self.tcp_opened,
            ),
            (
                "istio_tcp_connections_closed",
                "TCP connections closed",
                &self.tcp_closed,
            ),
            (
                "istio_tcp_received_bytes",
                "Bytes received from clients",
                &self.tcp_received,
            ),
            (
                "istio_tcp_sent_bytes",
                "Bytes sent to clients",
                &self.tcp_sent,
            ),
        ];
        for (name, help, family) in tcp {
            reg.register(name, help, family.clone());
        }
    }

    /// Reports a connection of a connection route as Istio's stats filter does: opened
    /// when its upstream connects, the bytes moved since the last report every
    /// `tcp_reporting_duration` and at the end, closed at the end; a refused connection
    /// in one report. Its labels (flags included) stay the same throughout.
    pub fn record_connection(&self, r: &ConnectionRecord) {
        if !self.enabled {
            return;
        }
        let labels = IstioKey {
            source: &self.source,
            destination: &r.destination,
            request_protocol: "tcp",
            response_code: 0,
            grpc_response_status: None,
            response_flags: r.response_flags,
            mutual_tls: r.mutual_tls,
        };
        if r.opened {
            self.tcp_opened.inc(&labels);
        }
        self.tcp_received.inc_by(&labels, r.received_bytes);
        self.tcp_sent.inc_by(&labels, r.sent_bytes);
        if r.closed {
            self.tcp_closed.inc(&labels);
        }
    }

    /// Records one finished request.
    pub fn record(&self, r: &RequestRecord) {
        if !self.enabled {
            return;
        }
        let labels = IstioKey {
            source: &self.source,
            destination: r.destination,
            request_protocol: if r.grpc { "grpc" } else { "http" },
            response_code: r.response_code,
            grpc_response_status: r.grpc_status,
            response_flags: r.response_flags,
            mutual_tls: r.mutual_tls,
        };
        self.requests.inc(&labels);
        self.duration.observe(&labels, r.duration_ms);
        self.request_bytes.observe(&labels, r.request_bytes as f64);
        self.response_bytes
            .observe(&labels, r.response_bytes as f64);
    }
}

/// Istio's workload name for a Pod: the Deployment behind a ReplicaSet (the owner's name
/// less the `pod-template-hash`), the CronJob behind a Job, else the owner, else the Pod.
pub fn workload_name(
    pod_name: &str,
    owner: Option<(&str, &str)>,
    labels: &BTreeMap<String, String>,
) -> String {
    match owner {
        Some(("ReplicaSet", rs)) => match labels.get("pod-template-hash") {
            Some(hash) => rs
                .strip_suffix(hash.as_str())
                .and_then(|s| s.strip_suffix('-'))
                .unwrap_or(rs)
                .to_string(),
            None => rs.to_string(),
        },
        Some(("Job", job)) => match job.rsplit_once('-') {
            // CronJob jobs are named `<cronjob>-<scheduled time in minutes>`.
            Some((cron, t)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                cron.to_string()
            }
            _ => job.to_string(),
        },
        Some((_, owner)) => owner.to_string(),
        None => pod_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh_endpoint(sa: &str) -> ir::Endpoint {
        ir::Endpoint {
            address: "10.0.0.7:8080".parse().unwrap(),
            labels: BTreeMap::from([
                ("app".to_string(), "httpbin".to_string()),
                ("version".to_string(), "v1".to_string()),
            ]),
            transport: ir::Transport::Mesh(Arc::new(ir::MeshTarget {
                sni: "outbound_.8000_._.httpbin.default.svc.cluster.local".into(),
                identities: vec!["spiffe://cluster.local/ns/default/sa/httpbin".into()],
                http2: false,
                tcp: false,
            })),
            workload: Some(ir::Workload {
                name: "httpbin".into(),
                namespace: "default".into(),
                service_account: sa.into(),
            }),
        }
    }

    fn render(m: &IstioMetrics) -> String {
        let mut reg = Registry::default();
        m.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    fn source() -> Workload {
        Workload::from_labels(
            "meshgate",
            "istio-ingress",
            "spiffe://cluster.local/ns/istio-ingress/sa/meshgate",
            &BTreeMap::new(),
            DEFAULT_CLUSTER_ID,
        )
    }

    fn record(dest: &Arc<Destination>, mutual_tls: bool) -> RequestRecord<'_> {
        RequestRecord {
            destination: dest,
            grpc: false,
            response_code: 200,
            grpc_status: None,
            response_flags: "-",
            mutual_tls,
            duration_ms: 3.0,
            request_bytes: 100,
            response_bytes: 200,
        }
    }

    #[test]
    fn mesh_mtls_edge_reports_mutual_tls_with_both_principals() {
        let backend = ir::Backend {
            name: "Service default/httpbin:8000".into(),
            weight: 1,
            http2: false,
            target: ir::BackendTarget::Unresolvable(String::new()),
            filters: Default::default(),
            policy: None,
            service_host: Some("httpbin.default.svc.cluster.local".into()),
            subset: None,
        };
        let base = Destination::for_backend(&backend);
        let dest = Destination::for_endpoint(&base, &mesh_endpoint("httpbin"));
        let m = IstioMetrics::new(source(), true);
        m.record(&record(&dest.interned(), true));
        let out = render(&m);
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap();
        for want in [
            r#"reporter="source""#,
            r#"source_workload="meshgate""#,
            r#"source_principal="spiffe://cluster.local/ns/istio-ingress/sa/meshgate""#,
            r#"destination_service="httpbin.default.svc.cluster.local""#,
            r#"destination_service_name="httpbin""#,
            r#"destination_service_namespace="default""#,
            r#"destination_workload="httpbin""#,
            r#"destination_principal="spiffe://cluster.local/ns/default/sa/httpbin""#,
            r#"destination_app="httpbin""#,
            r#"destination_version="v1""#,
            r#"destination_canonical_service="httpbin""#,
            r#"destination_canonical_revision="v1""#,
            r#"connection_security_policy="mutual_tls""#,
            r#"response_flags="-""#,
            r#"grpc_response_status="""#,
        ] {
            assert!(line.contains(want), "{want} missing in {line}");
        }
        assert_eq!(line.matches("=\"").count(), ISTIO_LABELS, "{line}");
    }

    #[test]
    fn plaintext_edge_reports_none_and_unknown_principals() {
        let m = IstioMetrics::new(source(), true);
        m.record(&record(&Destination::unknown(), false));
        let out = render(&m);
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap();
        assert!(
            line.contains(r#"connection_security_policy="none""#),
            "{line}"
        );
        assert!(line.contains(r#"source_principal="unknown""#), "{line}");
        assert!(
            line.contains(r#"destination_principal="unknown""#),
            "{line}"
        );
        assert!(line.contains(r#"destination_service="unknown""#), "{line}");
    }

    /// The borrowed key must hash as its labels do, or every request would miss its
    /// series and clone the labels again.
    #[test]
    fn a_borrowed_key_hashes_and_compares_as_its_labels() {
        use std::hash::{BuildHasher, RandomState};
        let (source, dest) = (Arc::new(source()), Destination::unknown());
        let key = IstioKey {
            source: &source,
            destination: &dest,
            request_protocol: "http",
            response_code: 200,
            grpc_response_status: None,
            response_flags: "-",
            mutual_tls: false,
        };
        let h = RandomState::new();
        assert_eq!(h.hash_one(key), h.hash_one(key.to_labels()));
        assert!(key.equivalent(&key.to_labels()));
        let other = IstioKey {
            mutual_tls: true,
            ..key
        };
        assert!(!other.equivalent(&key.to_labels()));
    }

    #[test]
    fn requests_with_equal_labels_count_into_one_series() {
        let m = IstioMetrics::new(source(), true);
        let unknown = Destination::unknown();
        for _ in 0..3 {
            m.record(&record(&unknown, false));
        }
        m.record(&RequestRecord {
            response_code: 503,
            ..record(&unknown, false)
        });
        let out = render(&m);
        let series: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .collect();
        assert_eq!(series.len(), 2, "{out}");
        let count = |code: &str| {
            let wanted = format!("response_code=\"{code}\"");
            let line = series.iter().find(|l| l.contains(&wanted)).unwrap();
            line.rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!((count("200"), count("503")), ("3".into(), "1".into()));
    }

    #[test]
    fn a_principal_outside_the_expected_identities_is_unknown() {
        let base = Destination::unknown();
        let d = Destination::for_endpoint(&base, &mesh_endpoint("other"));
        assert_eq!(&*d.workload.principal, UNKNOWN);
    }

    #[test]
    fn workload_name_follows_istio_owner_rules() {
        let labels = BTreeMap::from([("pod-template-hash".to_string(), "5d8f9c".to_string())]);
        let name = workload_name(
            "httpbin-5d8f9c-abcde",
            Some(("ReplicaSet", "httpbin-5d8f9c")),
            &labels,
        );
        assert_eq!(name, "httpbin");
        let none = BTreeMap::new();
        assert_eq!(
            workload_name("j-1", Some(("Job", "backup-29000000")), &none),
            "backup"
        );
        assert_eq!(
            workload_name("db-0", Some(("StatefulSet", "db")), &none),
            "db"
        );
        assert_eq!(workload_name("bare", None, &none), "bare");
    }

    #[test]
    fn duration_and_size_buckets_are_envoys_defaults_as_istio_exports_them() {
        let m = IstioMetrics::new(source(), true);
        m.record(&record(&Destination::unknown(), false));
        let out = render(&m);
        for family in [
            "istio_request_duration_milliseconds",
            "istio_request_bytes",
            "istio_response_bytes",
        ] {
            let les: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with(&format!("{family}_bucket{{")))
                .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
                .collect();
            assert_eq!(les.len(), ENVOY_BUCKETS.len() + 1, "{family}: {les:?}");
            assert_eq!(les[0], "0.5");
            assert_eq!(les[1], "1.0");
            assert_eq!(les[18], "3600000.0");
            assert_eq!(les[19], "+Inf");
        }
    }
}

#[cfg(test)]
mod interning {
    use super::*;

    #[test]
    fn equal_destinations_share_one_arc_so_a_rebuild_keeps_the_series() {
        let make = || Destination {
            service: "a.b.svc.cluster.local".into(),
            service_name: "a".into(),
            service_namespace: "b".into(),
            workload: Workload::unknown(),
        };
        assert!(Arc::ptr_eq(&make().interned(), &make().interned()));
    }
}
