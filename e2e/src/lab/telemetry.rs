//! The lab's observability peers, as Istio's addons place them:
//!
//! - rotel, the OTLP collector, in the `istiod` pod (`istio-system`, where Istio's sample
//!   addons run) on the bridge, `10.77.0.2:4317`: the native gateway and both httpbin
//!   sidecars export their spans to it.
//! - Debian's Prometheus scraping the native gateway's `/metrics` every second. It runs in
//!   the gateway pod's network namespace because the gateway's admin port (metrics
//!   included) listens on loopback only, as the Helm chart sets it; its HTTP API is on
//!   that pod's loopback, `127.0.0.1:9090`.
//!
//! The native gateway gets its pod's identity and node metadata (namespace, service
//! account, workload, IP) from the environment, as the chart's Deployment gives them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Lab, Pod, STARTUP, Spec, gateway_admin};
use crate::sidecar::SidecarTracing;
use crate::telemetry;

/// rotel's OTLP/gRPC port (OTLP's standard port).
pub const OTLP_GRPC_PORT: u16 = 4317;
/// rotel's OTLP/HTTP port.
const OTLP_HTTP_PORT: u16 = 4318;
/// Prometheus's API inside the gateway pod.
pub const PROMETHEUS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// The native gateway's workload name (its Deployment in the chart).
pub const GATEWAY_WORKLOAD: &str = "gateway-proxy";

impl Lab {
    /// Starts rotel and Prometheus and waits until both answer.
    pub(super) async fn start_telemetry(&mut self) -> anyhow::Result<()> {
        if !std::path::Path::new(telemetry::PROMETHEUS).exists() {
            bail!(
                "{} is not installed (Debian's prometheus): run scripts/install-tools",
                telemetry::PROMETHEUS
            );
        }
        let istiod = self.istiod.clone();
        let grpc = istiod.at(OTLP_GRPC_PORT);
        let args = telemetry::rotel_args(grpc, istiod.at(OTLP_HTTP_PORT));
        self.spawn(&istiod, "rotel", spec(telemetry::rotel_bin(), args));

        let gw = self.gateway.clone();
        let admin: SocketAddr = mesh::consts::GATEWAY_ADMIN_ADDR.parse()?;
        let config = gw.dir.join("prometheus.yml");
        std::fs::write(&config, telemetry::prometheus_config("meshgate", admin))?;
        let args = telemetry::prometheus_args(&config, &gw.dir.join("prometheus"), PROMETHEUS);
        self.spawn(&gw, "prometheus", spec(telemetry::PROMETHEUS.into(), args));

        self.wait_ok(&gw, "prometheus", &format!("http://{PROMETHEUS}/-/ready"))
            .await?;
        // rotel's OTLP/HTTP receiver answers (405 to a GET) once it is listening.
        let probe = format!("http://{}/v1/traces", istiod.at(OTLP_HTTP_PORT));
        let deadline = Instant::now() + STARTUP;
        while self.curl(&istiod, &[&probe]).await?.status.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "rotel did not listen within {STARTUP:?}:\n{}",
                    self.logs(&istiod)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The OTLP endpoint every lab exporter uses.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.istiod.at(OTLP_GRPC_PORT))
    }

    /// Tracing for the sidecar of an httpbin pod (`service.name` `<app>.default`).
    pub(super) fn sidecar_tracing(&self, pod: &Pod) -> SidecarTracing {
        SidecarTracing {
            collector: self.istiod.at(OTLP_GRPC_PORT),
            service_name: format!("{}.{}", pod.service(), pod.identity.namespace()),
        }
    }

    /// The native gateway's environment: its pod's identity and node metadata, and OTLP
    /// export (Istio's default 1% sampling; exported within 100 ms).
    pub(super) fn native_gateway_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let id = &pod.identity;
        [
            ("POD_NAMESPACE", id.namespace().to_string()),
            ("SERVICE_ACCOUNT", id.service_account().to_string()),
            ("ISTIO_META_WORKLOAD_NAME", GATEWAY_WORKLOAD.to_string()),
            ("INSTANCE_IP", pod.addr.to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp_endpoint()),
            (
                "OTEL_SERVICE_NAME",
                format!("{GATEWAY_WORKLOAD}.{}", id.namespace()),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Evaluates `promql` through Prometheus's HTTP API (from inside the gateway pod).
    pub async fn promql(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!("http://{PROMETHEUS}/api/v1/query");
        let query = format!("query={promql}");
        let r = self
            .curl(&self.gateway, &["--get", "--data-urlencode", &query, &url])
            .await?;
        if r.status != Some(200) {
            bail!("Prometheus query {promql}: {r}");
        }
        telemetry::query_result(&r.body)
    }

    /// The native gateway's own `/metrics` text.
    pub async fn gateway_metrics(&self) -> anyhow::Result<String> {
        self.admin_get(&self.gateway, &gateway_admin("/metrics"))
            .await
    }

    /// Every span rotel has printed so far.
    pub fn spans(&self) -> anyhow::Result<Vec<telemetry::Span>> {
        let log = self.istiod.dir.join("rotel.log");
        let text =
            std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        Ok(telemetry::parse_spans(&text))
    }
}

fn spec(program: std::path::PathBuf, args: Vec<String>) -> Spec {
    Spec {
        program,
        args,
        env: Vec::new(),
        proxy_group: false,
    }
}
