//! Command line and environment, parsed once into a typed [`Config`].
//!
//! Environment names follow Istio's agent where it has one (`CA_ADDR`, `TRUST_DOMAIN`,
//! `POD_NAMESPACE`, `SERVICE_ACCOUNT`, `ISTIO_META_CLUSTER_ID`, `SECRET_TTL`, `CA_HEADER_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mesh::consts;
use mesh::identity::Identity;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
    #[error("{option} is required with --source istiod (set {env} or pass {option})")]
    Missing {
        option: &'static str,
        env: &'static str,
    },
}

/// Command line of the `sds-agent` binary.
#[derive(Debug, Parser)]
#[command(
    name = "sds-agent",
    version,
    about = "Gets the pod's workload certificate from istiod's CA (or SPIRE, or files), rotates it, and serves it over Envoy's SDS API.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands besides the default "run the agent".
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running agent's admin server for a path and exit 0 on HTTP 200 (a Kubernetes exec probe).
    Probe(ProbeArgs),
}

/// Arguments of `sds-agent probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Admin address of the agent.
    #[arg(long, env = "ADMIN_ADDR", default_value = consts::SDS_AGENT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    /// Path to request: /ready or /healthz.
    #[arg(long, default_value = "/ready")]
    pub path: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Where certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// istiod's CA (CSR + service-account token), rotated by this agent.
    Istiod,
    /// A SPIFFE Workload API socket (SPIRE agent).
    Spiffe,
    /// A directory with cert-chain.pem, key.pem, root-cert.pem (istio-proxy's OUTPUT_CERTS).
    Files,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Options of the agent itself.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Certificate source.
    #[arg(long, env = "CERT_SOURCE", value_enum, default_value = "istiod")]
    pub source: SourceKind,

    /// istiod's certificate service, host:port.
    #[arg(long, env = "CA_ADDR", default_value = consts::DEFAULT_CA_ADDR)]
    pub ca_addr: String,
    /// TLS server name to verify on the CA's certificate [default: the host part of --ca-addr].
    #[arg(long, env = "CA_TLS_SERVER_NAME")]
    pub ca_server_name: Option<String>,
    /// Mesh root certificate(s) that sign the CA's TLS certificate; watched for changes.
    #[arg(long, env = "CA_ROOT_CERT", default_value = consts::DEFAULT_ROOT_CERT_PATH)]
    pub root_cert: PathBuf,
    /// Service-account token (audience istio-ca), re-read on every CA call.
    #[arg(long, env = "CA_TOKEN_FILE", default_value = consts::DEFAULT_TOKEN_PATH)]
    pub token_file: PathBuf,
    /// Trust domain of the workload identity.
    #[arg(long, env = "TRUST_DOMAIN", default_value = consts::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Namespace of the pod (downward API metadata.namespace); required with --source istiod.
    #[arg(long = "namespace", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Service account of the pod (downward API spec.serviceAccountName); required with --source istiod.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Cluster id sent to the CA in the `clusterid` header.
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", default_value = consts::DEFAULT_CLUSTER_ID)]
    pub cluster_id: String,
    /// Requested certificate lifetime (e.g. 24h, 90m, 10s).
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub secret_ttl: Duration,
    /// Deadline of one CA request.
    #[arg(long, env = "CA_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ca_timeout: Duration,

    /// Directory with cert-chain.pem, key.pem, root-cert.pem (--source files).
    #[arg(long, env = "OUTPUT_CERTS", default_value = "/etc/istio-output-certs")]
    pub certs_dir: PathBuf,
    /// SPIFFE Workload API endpoint (--source spiffe), e.g. unix:///run/spire/agent.sock.
    #[arg(
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "unix:///tmp/spire-agent/public/api.sock"
    )]
    pub workload_api_socket: String,

    /// Unix socket the SDS server listens on (created owner-only).
    #[arg(long, env = "SDS_SOCKET", default_value = consts::DEFAULT_SDS_SOCKET)]
    pub sds_socket: PathBuf,
    /// Also serve SDS over TCP on this loopback address (non-loopback is refused).
    #[arg(long, env = "SDS_TCP_ADDR")]
    pub sds_tcp_addr: Option<SocketAddr>,
    /// Admin HTTP server (/ready, /healthz, /metrics, /certs).
    #[arg(long, env = "ADMIN_ADDR", default_value = consts::SDS_AGENT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    /// How often the root certificate file and the certs directory are checked for changes.
    #[arg(long, env = "WATCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Settings of the istiod CA client and its rotation.
#[derive(Debug, Clone)]
pub struct IstiodConfig {
    /// host:port of the CA.
    pub ca_addr: String,
    /// Name verified on the CA's TLS certificate.
    pub ca_server_name: String,
    /// Mesh root file, also the trust anchor for the CA's TLS.
    pub root_cert: PathBuf,
    /// Token file, re-read on every call.
    pub token_file: PathBuf,
    /// The identity we ask for.
    pub identity: Identity,
    /// Value of the `clusterid` header.
    pub cluster_id: String,
    /// Requested lifetime.
    pub secret_ttl: Duration,
    /// Deadline of one CA request.
    pub request_timeout: Duration,
    /// Extra headers from `CA_HEADER_*` (lower-cased names).
    pub extra_headers: Vec<(String, String)>,
}

/// The certificate source and its settings.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// istiod's CA.
    Istiod(Box<IstiodConfig>),
    /// SPIFFE Workload API endpoint.
    Spiffe { endpoint: String },
    /// OUTPUT_CERTS directory.
    Files { dir: PathBuf },
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where certificates come from.
    pub source: SourceConfig,
    /// SDS unix socket path.
    pub sds_socket: PathBuf,
    /// Optional loopback TCP address for SDS.
    pub sds_tcp_addr: Option<SocketAddr>,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// Poll interval for watched files.
    pub watch_interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl RunArgs {
    /// Validates the arguments; `env` supplies the `CA_HEADER_*` variables.
    pub fn into_config(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        if let Some(addr) = self.sds_tcp_addr
            && !addr.ip().is_loopback()
        {
            return Err(ConfigError::Invalid {
                option: "--sds-tcp-addr",
                reason: format!(
                    "{addr} is not a loopback address; SDS hands out private keys and is served on loopback only"
                ),
            });
        }
        if self.watch_interval.is_zero() {
            return Err(ConfigError::Invalid {
                option: "--watch-interval",
                reason: "must be greater than zero".into(),
            });
        }
        let source = match self.source {
            SourceKind::Istiod => SourceConfig::Istiod(Box::new(self.istiod(env)?)),
            SourceKind::Spiffe => SourceConfig::Spiffe {
                endpoint: self.workload_api_socket.clone(),
            },
            SourceKind::Files => SourceConfig::Files {
                dir: self.certs_dir.clone(),
            },
        };
        Ok(Config {
            source,
            sds_socket: self.sds_socket,
            sds_tcp_addr: self.sds_tcp_addr,
            admin_addr: self.admin_addr,
            watch_interval: self.watch_interval,
            log_format: self.log_format,
        })
    }

    fn istiod(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<IstiodConfig, ConfigError> {
        let namespace = self.namespace.as_deref().ok_or(ConfigError::Missing {
            option: "--namespace",
            env: "POD_NAMESPACE",
        })?;
        let service_account = self
            .service_account
            .as_deref()
            .ok_or(ConfigError::Missing {
                option: "--service-account",
                env: "SERVICE_ACCOUNT",
            })?;
        let identity =
            Identity::new(&self.trust_domain, namespace, service_account).map_err(|e| {
                ConfigError::Invalid {
                    option: "--trust-domain/--namespace/--service-account",
                    reason: e.to_string(),
                }
            })?;
        let host = ca_host(&self.ca_addr).ok_or_else(|| ConfigError::Invalid {
            option: "--ca-addr",
            reason: format!("{:?} is not host:port", self.ca_addr),
        })?;
        if self.secret_ttl < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                option: "--secret-ttl",
                reason: "must be at least 1s".into(),
            });
        }
        let extra_headers = env
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(consts::CA_HEADER_ENV_PREFIX)
                    .filter(|name| !name.is_empty())
                    .map(|name| (name.to_ascii_lowercase(), v))
            })
            .collect();
        Ok(IstiodConfig {
            ca_addr: self.ca_addr.clone(),
            ca_server_name: self.ca_server_name.clone().unwrap_or(host),
            root_cert: self.root_cert.clone(),
            token_file: self.token_file.clone(),
            identity,
            cluster_id: self.cluster_id.clone(),
            secret_ttl: self.secret_ttl,
            request_timeout: self.ca_timeout,
            extra_headers,
        })
    }
}

/// The host part of `host:port` (IPv6 in brackets allowed).
fn ca_host(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("sds-agent").chain(args.iter().copied()))
            .expect("clap parse");
        cli.run.into_config(vec![
            ("CA_HEADER_X-Tenant".to_string(), "blue".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ])
    }

    #[test]
    fn istiod_defaults_match_istio() {
        let cfg = parse(&[
            "--namespace",
            "gateway-system",
            "--service-account",
            "gateway-proxy",
        ])
        .unwrap();
        let SourceConfig::Istiod(ca) = cfg.source else {
            panic!("istiod is the default source")
        };
        assert_eq!(ca.ca_addr, "istiod.istio-system.svc:15012");
        assert_eq!(ca.ca_server_name, "istiod.istio-system.svc");
        assert_eq!(
            ca.identity.to_string(),
            "spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"
        );
        assert_eq!(ca.cluster_id, "Kubernetes");
        assert_eq!(ca.secret_ttl, Duration::from_secs(86400));
        assert_eq!(
            ca.extra_headers,
            vec![("x-tenant".to_string(), "blue".to_string())]
        );
        assert_eq!(
            cfg.sds_socket,
            PathBuf::from("/var/run/secrets/workload-spiffe-uds/socket")
        );
        assert_eq!(cfg.admin_addr.to_string(), "127.0.0.1:15030");
    }

    #[test]
    fn istiod_source_requires_namespace_and_service_account() {
        let err = parse(&["--service-account", "sa"]).unwrap_err();
        assert!(err.to_string().contains("POD_NAMESPACE"), "{err}");
        let err = parse(&["--namespace", "ns"]).unwrap_err();
        assert!(err.to_string().contains("SERVICE_ACCOUNT"), "{err}");
    }

    #[test]
    fn sds_tcp_refuses_non_loopback_addresses() {
        let err = parse(&["--source", "files", "--sds-tcp-addr", "0.0.0.0:15010"]).unwrap_err();
        assert!(err.to_string().contains("--sds-tcp-addr"), "{err}");
        assert!(parse(&["--source", "files", "--sds-tcp-addr", "127.0.0.1:15010"]).is_ok());
        assert!(parse(&["--source", "files", "--sds-tcp-addr", "[::1]:15010"]).is_ok());
    }

    #[test]
    fn ca_server_name_override_and_bad_ca_addr() {
        let cfg = parse(&[
            "--namespace",
            "ns",
            "--service-account",
            "sa",
            "--ca-addr",
            "127.0.0.1:1234",
            "--ca-server-name",
            "istiod.istio-system.svc",
        ])
        .unwrap();
        let SourceConfig::Istiod(ca) = cfg.source else {
            unreachable!()
        };
        assert_eq!(ca.ca_server_name, "istiod.istio-system.svc");
        let err = parse(&[
            "--namespace",
            "ns",
            "--service-account",
            "sa",
            "--ca-addr",
            "nohostport",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--ca-addr"), "{err}");
    }
}
