//! Command line and environment -> one typed [`Config`] with documented defaults.
//!
//! Every flag has an environment variable; both are listed in `gateway/README.md`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::ir::MinVersion;
use crate::observe::access_log;
use crate::observe::istio_metrics::{UNKNOWN, Workload};
use crate::observe::peer_metadata::NodeMetadata;
use crate::providers::file::DEFAULT_MAX_CONFIG_BYTES;
use crate::providers::kubernetes::{GatewayRef, Settings as KubeSettings};
use crate::proxy::Limits;
use crate::translate::{TranslateOptions, UpstreamTls};
use crate::upstream::UpstreamSettings;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/meshgate/";
/// Admin server address (loopback only by default).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:19000";

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn nonzero_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// meshgate edge proxy.
#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "meshgate edge proxy (Kubernetes Gateway API)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration offline: prints each object's conditions, and exits non-zero
    /// printing the errors a reload would log.
    Validate {
        /// YAML file or directory of YAML files.
        #[arg(long, env = "GATEWAY_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// GET an admin path; exit 0 on 200, else 1 (Kubernetes exec probe).
    Probe {
        #[arg(long, env = "ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
        admin_addr: SocketAddr,
        #[arg(long, default_value = "/ready")]
        path: String,
        #[arg(long, default_value = "2s", value_parser = duration)]
        timeout: Duration,
    },
}

/// Flags of the proxy itself (`gateway [flags]`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// YAML file or directory of YAML files (Gateway, HTTPRoute, Secret, ConfigMap,
    /// Service, EndpointSlice, Pod); watched for changes.
    #[arg(long, env = "GATEWAY_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Admin server address (/ready, /healthz, /config_dump, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    /// Address of a metrics-only server for Prometheus (`/metrics`, and
    /// `/stats/prometheus` as Istio's proxies name it), e.g. `0.0.0.0:8081` as Gloo's
    /// gateway-proxy exposes its stats; nothing else of the admin API is served there
    /// [default: off].
    #[arg(long, env = "GATEWAY_STATS_ADDR")]
    pub stats_addr: Option<SocketAddr>,
    /// Worker threads serving connections, each with its own runtime, listening socket
    /// per port (SO_REUSEPORT) and upstream pools (default: number of CPUs). 1 serves on
    /// the control plane's single thread.
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// Address the Gateway listener ports bind to.
    #[arg(long, env = "GATEWAY_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// How often the config path is checked for changes.
    #[arg(long, env = "GATEWAY_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// Largest configuration read (all files together, bytes); a larger one is rejected.
    #[arg(long, env = "GATEWAY_MAX_CONFIG_BYTES", default_value_t = DEFAULT_MAX_CONFIG_BYTES)]
    pub max_config_bytes: u64,
    /// Minimum TLS version for HTTPS listeners (1.2 or 1.3); a listener's
    /// `tls.options["meshgate.io/min-tls-version"]` overrides it.
    #[arg(long, env = "GATEWAY_MIN_TLS_VERSION", default_value = "1.2")]
    pub min_tls_version: MinVersion,
    /// Access log: `stdout` (JSON lines) or `off`.
    #[arg(long, env = "GATEWAY_ACCESS_LOG", default_value = "stdout",
          value_parser = ["stdout", "off"])]
    pub access_log: String,
    /// Percent of the requests the access-log filter selects that are logged, picked at
    /// random (Envoy's runtime filter percent), for busy gateways.
    #[arg(long, env = "GATEWAY_ACCESS_LOG_SAMPLE", default_value_t = 100.0,
          value_parser = percent)]
    pub access_log_sample: f64,
    /// Also export the access log as OTLP log records (gRPC, to
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`), with or
    /// without `--access-log stdout`.
    #[arg(long, env = "GATEWAY_ACCESS_LOG_OTLP")]
    pub access_log_otlp: bool,
    /// Which requests the access log records: `all`, or `errors` (status 400 and above,
    /// or any response flag).
    #[arg(long, env = "GATEWAY_ACCESS_LOG_FILTER", default_value = "all",
          value_parser = ["all", "errors"])]
    pub access_log_filter: String,
    /// This pod's namespace: `source_workload_namespace` of the Istio metrics, the
    /// namespace of the gateway's SPIFFE identity, and where Istio Gateways'
    /// `credentialName` Secrets are read from (as Istio reads them).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// This pod's service account (the gateway's SPIFFE identity: `source_principal`).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// The gateway's workload name in the Istio metrics (`source_workload`) [default:
    /// the canonical service from --pod-labels, else `unknown`].
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// Cluster id for `source_cluster` / `destination_cluster` (Istio's
    /// `ISTIO_META_CLUSTER_ID`).
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", default_value = crate::observe::istio_metrics::DEFAULT_CLUSTER_ID)]
    pub cluster_id: String,
    /// Istio mesh id, sent to mesh upstreams in the peer metadata (`MESH_ID`) [default:
    /// the trust domain, as Istio defaults it].
    #[arg(long, env = "ISTIO_META_MESH_ID")]
    pub mesh_id: Option<String>,
    /// This pod's IP (Istio's `INSTANCE_IP`), part of the gateway's Istio node id in the
    /// peer metadata [default: `unknown`].
    #[arg(long, env = "INSTANCE_IP")]
    pub instance_ip: Option<IpAddr>,
    /// Largest request header block accepted (bytes); larger gets 431.
    #[arg(long, env = "GATEWAY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Longest request URI accepted (bytes); longer gets 414.
    #[arg(long, env = "GATEWAY_MAX_URI_BYTES", default_value_t = 8 * 1024)]
    pub max_uri_bytes: usize,
    /// Time from accept until a connection's first request is complete (TLS handshake,
    /// HTTP/2 preface and request headers included); silent or trickling connections are
    /// closed then. Also the time allowed for each later HTTP/1 request's headers.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// HTTP/2 connections that send nothing for this long get a PING.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub http2_keepalive_interval: Duration,
    /// An HTTP/2 connection whose PING is not acknowledged within this is closed.
    #[arg(long, env = "GATEWAY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http2_keepalive_timeout: Duration,
    /// Merge repeated slashes in request paths before routing (Istio's MERGE_SLASHES);
    /// dot segments and encoded unreserved characters are always normalized.
    #[arg(long, env = "GATEWAY_MERGE_SLASHES")]
    pub merge_slashes: bool,
    /// Keep an edge client's `x-request-id` (Envoy's `preserve_external_request_id`). By
    /// default it is replaced by a new one, as Envoy and Istio do at the edge, unless the
    /// hop in front is trusted (`--num-trusted-proxies` > 0): a client must not pick the
    /// id that keys its `/debug/requests` entry and its log lines.
    #[arg(long, env = "GATEWAY_PRESERVE_EXTERNAL_REQUEST_ID")]
    pub preserve_external_request_id: bool,
    /// Listen backlog of the Gateway listener ports (connections the kernel queues
    /// before accept; capped by net.core.somaxconn).
    #[arg(long, env = "GATEWAY_LISTEN_BACKLOG", default_value_t = 1024)]
    pub listen_backlog: u32,
    /// A downstream connection with no traffic for this long is closed (HTTP and
    /// upgraded tunnels: no bytes either way).
    #[arg(long, env = "GATEWAY_IDLE_TIMEOUT", default_value = "300s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// A TCP/TLS connection route's connection with no bytes either way for this long is
    /// closed (Envoy's tcp_proxy `idle_timeout`, 1 hour unless set, which Istio keeps:
    /// a quiet database or broker connection is not cut after minutes).
    #[arg(long, env = "GATEWAY_TCP_IDLE_TIMEOUT", default_value = "1h", value_parser = duration)]
    pub tcp_idle_timeout: Duration,
    /// How often an open TCP/TLS connection's bytes are added to the `istio_tcp_*`
    /// counters (Istio's `tcp_reporting_duration`); it is counted opened when its
    /// upstream connects and closed when it ends.
    #[arg(long, env = "GATEWAY_TCP_REPORTING_INTERVAL", default_value = "15s", value_parser = nonzero_duration)]
    pub tcp_reporting_interval: Duration,
    /// An HTTP/1 connection with a request in flight and no bytes either way for this long
    /// is closed (Envoy's `stream_idle_timeout`, 5 minutes by default): a client that
    /// stops sending its body, or an upstream that never answers, no longer holds a
    /// connection and an upstream slot forever. `0s` turns it off.
    #[arg(long, env = "GATEWAY_STREAM_IDLE_TIMEOUT", default_value = "300s", value_parser = duration)]
    pub stream_idle_timeout: Duration,
    /// Open downstream connections (upgraded tunnels included) above which new ones are
    /// closed at once and upgrades are refused with 503.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// On SIGTERM, how long open connections may take to finish.
    #[arg(long, env = "GATEWAY_DRAIN_TIMEOUT", default_value = "25s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// How often each runtime thread (every worker and the main one) hands the memory it
    /// freed back to the OS (Envoy's `memory_release_interval`): after a burst of
    /// connections or a reload the gateway's RSS falls back over a few intervals instead of
    /// staying at the peak until the next traffic. `0s` turns it off.
    #[arg(long, env = "GATEWAY_MEMORY_RELEASE_INTERVAL", default_value = "1s", value_parser = duration)]
    pub memory_release_interval: Duration,
    /// The gateway pod's labels (`k=v,k=v`): Istio Gateway and AuthorizationPolicy
    /// selectors, and the `source_*` labels of the Istio metrics (`app`, `version`, Istio's canonical
    /// service and revision labels) by Istio's rules.
    #[arg(long, env = "POD_LABELS", value_delimiter = ',', value_parser = label)]
    pub pod_labels: Vec<(String, String)>,
    /// The pod's labels as a Kubernetes downward-API `labels` file (`key="value"` per
    /// line), read at start; `--pod-labels` entries win over it.
    #[arg(long, env = "POD_LABELS_FILE", value_parser = labels_file)]
    pub pod_labels_file: Option<LabelsFile>,
    /// Istio's standard metrics (`istio_requests_total` and the rest, reporter `source`):
    /// `on`, or `off` to keep only the gateway's own `gateway_*` metrics.
    #[arg(long, env = "GATEWAY_ISTIO_METRICS", default_value = "on",
          value_parser = ["on", "off"])]
    pub istio_metrics: String,
    /// Share of requests carrying `x-client-trace-id` that are traced whatever the sampling
    /// ratio (Envoy's `client_sampling`, which Istio leaves at 100), in percent.
    #[arg(long, env = "GATEWAY_TRACE_CLIENT_SAMPLING", default_value_t = 100.0,
          value_parser = percent)]
    pub trace_client_sampling: f64,
    /// Proxies in front of the gateway trusted to append X-Forwarded-For (Istio's
    /// `numTrustedProxies`); 0 uses the connection's peer as the client.
    #[arg(long, env = "NUM_TRUSTED_PROXIES", default_value_t = 0)]
    pub num_trusted_proxies: u32,
    /// Serve HTTP/1.0 requests on every port (Istio's `ISTIO_META_HTTP10` proxy
    /// metadata); otherwise they get 426, as Envoy answers them, except on ports a
    /// ClientTrafficPolicy `http1.http10` opens.
    #[arg(long, env = "ISTIO_META_HTTP10", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub accept_http10: bool,
    /// Upstream TCP connect timeout (Istio's mesh default `connectTimeout`, 10s).
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Kubernetes cluster domain, for Service DNS names.
    #[arg(long, env = "GATEWAY_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The sds-agent's SDS socket; turns on mesh integration (the gateway's SPIFFE
    /// identity for mTLS to mesh upstreams) [default: off].
    #[arg(long, env = "SDS_SOCKET")]
    pub sds_socket: Option<PathBuf>,
    /// Upstream TLS mode for Services without the `meshgate.io/upstream-tls` annotation
    /// [default: auto with --sds-socket, else disable].
    #[arg(long, env = "UPSTREAM_TLS", value_enum)]
    pub upstream_tls: Option<UpstreamTls>,
    /// Trust domain of upstream SPIFFE identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = mesh::consts::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Where objects come from: `file` (`--config`, standalone) or `kubernetes` (watches
    /// the API server; serves the Gateway named by `--gateway`).
    #[arg(long, env = "GATEWAY_PROVIDER", default_value = "file",
          value_parser = ["file", "kubernetes"])]
    pub provider: String,
    /// The Gateway this pod serves, as `namespace/name` (kubernetes provider).
    #[arg(long, env = "GATEWAY_NAME", required_if_eq("provider", "kubernetes"))]
    pub gateway: Option<GatewayRef>,
    /// Kubeconfig file [default: in-cluster config, else `$KUBECONFIG`, else
    /// `~/.kube/config`, as kube-rs infers it].
    #[arg(long, env = "GATEWAY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces whose Secrets and ConfigMaps are watched (listener certificates, client
    /// CAs), comma-separated [default: the Gateway's namespace].
    #[arg(long, env = "GATEWAY_SECRET_NAMESPACES", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// This pod's name: this replica's name in the status Lease, and `NAME` in the peer
    /// metadata sent to mesh upstreams [default: `$POD_NAME`, else the hostname].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Addresses written to the Gateway's `status.addresses` (IPs or hostnames),
    /// comma-separated [default: none].
    #[arg(long, env = "GATEWAY_STATUS_ADDRESS", value_delimiter = ',')]
    pub status_address: Vec<String>,
    /// How long a status Lease lasts without renewal before another replica takes over.
    #[arg(long, env = "GATEWAY_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// Quiet time after a Kubernetes change before re-translating (changes arriving
    /// together are translated once).
    #[arg(long, env = "GATEWAY_DEBOUNCE", default_value = "100ms", value_parser = duration)]
    pub debounce: Duration,
    /// Log format for the gateway's own logs (stderr): `json` or `text`.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", default_value = "json",
          value_parser = ["json", "text"])]
    pub log_format: String,
}

/// Where the gateway's objects come from.
#[derive(Debug, Clone)]
pub enum Provider {
    /// YAML files under [`Config::config_path`], polled.
    File,
    /// The Kubernetes API server.
    Kubernetes(KubeSettings),
}

/// Everything the running gateway needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where objects come from.
    pub provider: Provider,
    /// Config file or directory (file provider).
    pub config_path: PathBuf,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// Metrics-only server address, if any.
    pub stats_addr: Option<SocketAddr>,
    /// Worker threads.
    pub workers: usize,
    /// Listener bind address.
    pub bind_address: IpAddr,
    /// Listen backlog of the listener ports.
    pub listen_backlog: u32,
    /// Config poll interval.
    pub poll_interval: Duration,
    /// Size cap of the configuration.
    pub max_config_bytes: u64,
    /// Access log to stdout.
    pub access_log: bool,
    /// Which requests the access log records.
    pub access_log_filter: access_log::Filter,
    /// Export the access log as OTLP log records too.
    pub access_log_otlp: bool,
    /// Percent of the selected requests logged.
    pub access_log_sample: f64,
    /// The gateway's own workload in the Istio metrics.
    pub source_workload: Workload,
    /// The gateway's Istio node metadata, sent to mesh upstreams as peer metadata.
    pub node_metadata: NodeMetadata,
    /// Downstream limits.
    pub limits: Limits,
    /// Drain time on SIGTERM.
    pub drain_timeout: Duration,
    /// How often each thread returns freed memory to the OS (zero: never).
    pub memory_release_interval: Duration,
    /// Upstream client settings.
    pub upstream: UpstreamSettings,
    /// Options for translating resources.
    pub translate: TranslateOptions,
    /// JSON logs.
    pub log_json: bool,
    /// SDS socket of the sds-agent (mesh integration on when set).
    pub sds_socket: Option<PathBuf>,
    /// Percent of requests with `x-client-trace-id` traced whatever the ratio.
    pub trace_client_sampling: f64,
    /// Record and expose Istio's standard metrics.
    pub istio_metrics: bool,
    /// Who the gateway is in its traces.
    pub trace_resource: crate::observe::traces::TraceResource,
}

impl From<RunArgs> for Config {
    fn from(a: RunArgs) -> Config {
        let source_workload = source_workload(&a);
        let trace_resource = trace_resource(&a, &source_workload);
        let node_metadata = node_metadata(&a, &source_workload);
        let labels = pod_labels(&a);
        let provider = match (a.provider.as_str(), a.gateway.clone()) {
            ("kubernetes", Some(gateway)) => Provider::Kubernetes(kube_settings(&a, gateway)),
            _ => Provider::File,
        };
        Config {
            provider,
            config_path: a.config,
            admin_addr: a.admin_addr,
            stats_addr: a.stats_addr,
            workers: a.workers.filter(|w| *w > 0).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
            bind_address: a.bind_address,
            listen_backlog: a.listen_backlog,
            poll_interval: a.poll_interval,
            max_config_bytes: a.max_config_bytes,
            access_log: a.access_log == "stdout",
            trace_client_sampling: a.trace_client_sampling,
            istio_metrics: a.istio_metrics == "on",
            trace_resource,
            access_log_filter: access_log::Filter::parse(&a.access_log_filter).unwrap_or_default(),
            access_log_otlp: a.access_log_otlp,
            access_log_sample: a.access_log_sample,
            source_workload,
            node_metadata,
            limits: Limits {
                max_header_bytes: a.max_header_bytes,
                max_uri_bytes: a.max_uri_bytes,
                header_read_timeout: a.header_read_timeout,
                idle_timeout: a.idle_timeout,
                tcp_idle_timeout: a.tcp_idle_timeout,
                tcp_report_interval: a.tcp_reporting_interval,
                stream_idle_timeout: a.stream_idle_timeout,
                max_connections: a.max_connections,
                http2_keepalive_interval: a.http2_keepalive_interval,
                http2_keepalive_timeout: a.http2_keepalive_timeout,
                merge_slashes: a.merge_slashes,
                keep_request_id: a.preserve_external_request_id || a.num_trusted_proxies > 0,
                num_trusted_proxies: a.num_trusted_proxies,
                accept_http10: a.accept_http10,
            },
            drain_timeout: a.drain_timeout,
            memory_release_interval: a.memory_release_interval,
            upstream: UpstreamSettings {
                connect_timeout: a.connect_timeout,
                pool_idle_timeout: Duration::from_secs(90),
                pool_max_idle_per_host: 256,
            },
            translate: TranslateOptions {
                default_min_tls_version: a.min_tls_version,
                cluster_domain: a.cluster_domain,
                upstream_tls: a.upstream_tls.unwrap_or(if a.sds_socket.is_some() {
                    UpstreamTls::Auto
                } else {
                    UpstreamTls::Disable
                }),
                trust_domain: a.trust_domain,
                pod_labels: labels,
                pod_namespace: a.pod_namespace.clone(),
                num_trusted_proxies: a.num_trusted_proxies,
            },
            log_json: a.log_format == "json",
            sds_socket: a.sds_socket,
        }
    }
}

/// The trace resource's defaults: `<workload>.<namespace>` (Istio's name for a proxy's
/// service) when both are known, and the pod.
fn trace_resource(a: &RunArgs, w: &Workload) -> crate::observe::traces::TraceResource {
    let known = |v: &str| (v != UNKNOWN).then(|| v.to_string());
    crate::observe::traces::TraceResource {
        service: known(&w.name)
            .zip(known(&w.namespace))
            .map(|(n, ns)| format!("{n}.{ns}")),
        pod: a.pod_name.clone(),
        namespace: a.pod_namespace.clone(),
    }
}

/// A percentage between 0 and 100.
fn percent(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{v:?} is not a percentage between 0 and 100")),
    }
}

/// The pod's labels: the downward-API file's, then `--pod-labels` over them.
fn pod_labels(a: &RunArgs) -> BTreeMap<String, String> {
    let file = a.pod_labels_file.iter().flat_map(|f| &f.0);
    file.chain(&a.pod_labels).cloned().collect()
}

/// The gateway as Istio's metrics name the source workload.
fn source_workload(a: &RunArgs) -> Workload {
    let labels = pod_labels(a);
    let ns = a.pod_namespace.as_deref().unwrap_or(UNKNOWN);
    let principal = match (&a.pod_namespace, &a.service_account) {
        (Some(ns), Some(sa)) => format!("spiffe://{}/ns/{ns}/sa/{sa}", a.trust_domain),
        _ => UNKNOWN.to_string(),
    };
    let canonical = Workload::from_labels(UNKNOWN, ns, &principal, &labels, &a.cluster_id);
    let name = a
        .workload_name
        .clone()
        .unwrap_or_else(|| canonical.canonical_service.to_string());
    Workload::from_labels(&name, ns, &principal, &labels, &a.cluster_id)
}

/// The gateway's node metadata for Istio's peer-metadata headers.
fn node_metadata(a: &RunArgs, workload: &Workload) -> NodeMetadata {
    NodeMetadata {
        pod_name: pod_name(a).unwrap_or_else(|| UNKNOWN.to_string()),
        instance_ip: a
            .instance_ip
            .map_or_else(|| UNKNOWN.to_string(), |ip| ip.to_string()),
        cluster_domain: a.cluster_domain.clone(),
        mesh_id: a.mesh_id.clone().unwrap_or_else(|| a.trust_domain.clone()),
        workload: workload.clone(),
    }
}

/// This pod's name: `--pod-name`, else the hostname (a pod's hostname is its name).
fn pod_name(a: &RunArgs) -> Option<String> {
    a.pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|n| !n.is_empty())
}

fn kube_settings(a: &RunArgs, gateway: GatewayRef) -> KubeSettings {
    let secret_namespaces = if a.secret_namespaces.is_empty() {
        // Istio reads credentialName Secrets from the gateway pod's namespace.
        let mut ns = vec![gateway.namespace.clone()];
        ns.extend(a.pod_namespace.clone().filter(|p| *p != gateway.namespace));
        ns
    } else {
        a.secret_namespaces.clone()
    };
    let identity = pod_name(a).unwrap_or_else(|| format!("meshgate-{}", std::process::id()));
    KubeSettings {
        gateway,
        kubeconfig: a.kubeconfig.clone(),
        secret_namespaces,
        pod_namespace: a.pod_namespace.clone(),
        identity,
        status_addresses: a.status_address.clone(),
        lease_duration: a.lease_duration,
        debounce: a.debounce,
    }
}

/// Parses `key=value`.
/// The labels read from a downward-API labels file.
#[derive(Debug, Clone)]
pub struct LabelsFile(pub Vec<(String, String)>);

/// Reads a downward-API labels file: `key="value"` lines, values quoted and escaped as
/// Go's `%q` writes them.
fn labels_file(path: &str) -> Result<LabelsFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("{path}: {l:?} is not key=\"value\""))?;
            let v: String = serde_json::from_str(v.trim())
                .map_err(|e| format!("{path}: value of {k:?} is not a quoted string: {e}"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect::<Result<_, String>>()
        .map(LabelsFile)
}

fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(["gateway"].iter().chain(args)).unwrap();
        Config::from(cli.run)
    }

    #[test]
    fn node_metadata_comes_from_the_flags_with_istios_defaults() {
        let c = config(&[
            "--pod-name",
            "gw-1",
            "--pod-namespace",
            "istio-ingress",
            "--instance-ip",
            "10.0.0.7",
            "--trust-domain",
            "example.org",
        ]);
        let n = &c.node_metadata;
        assert_eq!(n.pod_name, "gw-1");
        assert_eq!(n.instance_ip, "10.0.0.7");
        // Istio's mesh id defaults to the trust domain.
        assert_eq!(n.mesh_id, "example.org");
        assert_eq!(&*n.workload.namespace, "istio-ingress");
        let c = config(&["--pod-name", "gw-1", "--mesh-id", "mesh-east"]);
        assert_eq!(c.node_metadata.mesh_id, "mesh-east");
        assert_eq!(c.node_metadata.instance_ip, UNKNOWN);
    }
}
