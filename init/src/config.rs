//! The command line (and environment), the pod's annotation overrides, and their
//! validation into a typed [`Config`]: the only input of the planner.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, ValueEnum};

use crate::annotations::{Annotations, AnnotationsError};
use crate::istio::{self, annotation};

/// How the gateway pod meets the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The gateway does mTLS itself (sds-agent): no redirection, admin ports loopback-only.
    Native,
    /// An istio-proxy runs in the pod: Istio's capture, edge ports excluded.
    Sidecar,
}

/// Whether to program IPv6 (ip6tables) as well as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Choice {
    /// IPv6 rules when the kernel has IPv6 in this namespace (`/proc/net/if_inet6` exists).
    Auto,
    /// Always program IPv6 too; fails when ip6tables is missing.
    True,
    /// IPv4 only.
    False,
}

/// Which iptables backend to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The backend that already holds rules in this namespace (legacy if only it has any),
    /// otherwise nft.
    Auto,
    /// iptables-nft (nf_tables).
    Nft,
    /// iptables-legacy (x_tables).
    Legacy,
}

/// What this run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Program the rules (the default).
    Apply,
    /// Print the rules, change nothing.
    DryRun,
    /// Remove every rule and chain gateway-init added.
    Cleanup,
    /// Compare the live rules with the plan; exit 3 on a difference.
    Verify,
}

/// `gateway-init`: programs iptables for the meshgate gateway pod, once, then exits.
///
/// Sidecar mode follows Istio's istio-iptables: inbound TCP is captured to the sidecar's
/// inbound port, outbound TCP to its outbound port, except the proxy's own traffic
/// (uid/gid), loopback and excluded ports and CIDRs; the gateway's edge ports are never
/// captured. Native mode redirects nothing. In both modes the loopback-only ports refuse
/// connections that do not come over loopback.
///
/// Every option can also be set through the environment variable named in its help.
/// Port lists are comma-separated ports or `low:high` ranges; CIDR lists are
/// comma-separated IPv4/IPv6 prefixes.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway-init", version)]
pub struct Options {
    /// `native` (no redirection; admin ports loopback-only) or `sidecar` (Istio capture to
    /// an istio-proxy in the pod).
    #[arg(long, value_enum, default_value_t = Mode::Native, env = "GATEWAY_INIT_MODE")]
    pub mode: Mode,

    /// The gateway's edge ports, never captured inbound (so edge clients reach the gateway
    /// directly). Empty: none.
    #[arg(long, default_value = istio::EDGE_PORTS, env = "GATEWAY_INIT_EDGE_PORTS")]
    pub edge_ports: String,

    /// User id of the istio-proxy; its traffic is never captured.
    #[arg(long, default_value_t = istio::PROXY_UID, env = "GATEWAY_INIT_PROXY_UID")]
    pub proxy_uid: u32,

    /// Group id of the istio-proxy; its traffic is never captured.
    #[arg(long, default_value_t = istio::PROXY_GID, env = "GATEWAY_INIT_PROXY_GID")]
    pub proxy_gid: u32,

    /// Port inbound connections are redirected to (the sidecar's inbound listener).
    #[arg(long, default_value_t = istio::INBOUND_CAPTURE_PORT,
          value_parser = clap::value_parser!(u16).range(1..),
          env = "GATEWAY_INIT_INBOUND_CAPTURE_PORT")]
    pub inbound_capture_port: u16,

    /// Port outbound connections are redirected to (the sidecar's outbound listener).
    #[arg(long, default_value_t = istio::OUTBOUND_CAPTURE_PORT,
          value_parser = clap::value_parser!(u16).range(1..),
          env = "GATEWAY_INIT_OUTBOUND_CAPTURE_PORT")]
    pub outbound_capture_port: u16,

    /// Inbound ports to capture: `*` (all), a list, or empty (capture nothing). Edge ports,
    /// loopback-only ports and 15008 are never captured.
    #[arg(long, default_value = "*", env = "GATEWAY_INIT_INCLUDE_INBOUND_PORTS")]
    pub include_inbound_ports: String,

    /// Inbound ports not to capture; used when --include-inbound-ports is `*`.
    #[arg(long, default_value = "", env = "GATEWAY_INIT_EXCLUDE_INBOUND_PORTS")]
    pub exclude_inbound_ports: String,

    /// Outbound destinations to capture: `*` (all), a CIDR list, or empty (none by range).
    #[arg(
        long,
        default_value = "*",
        env = "GATEWAY_INIT_INCLUDE_OUTBOUND_IP_RANGES"
    )]
    pub include_outbound_ip_ranges: String,

    /// Outbound destinations never captured (CIDR list).
    #[arg(
        long,
        default_value = "",
        env = "GATEWAY_INIT_EXCLUDE_OUTBOUND_IP_RANGES"
    )]
    pub exclude_outbound_ip_ranges: String,

    /// Outbound ports captured whatever the destination range.
    #[arg(long, default_value = "", env = "GATEWAY_INIT_INCLUDE_OUTBOUND_PORTS")]
    pub include_outbound_ports: String,

    /// Outbound ports never captured.
    #[arg(long, default_value = "", env = "GATEWAY_INIT_EXCLUDE_OUTBOUND_PORTS")]
    pub exclude_outbound_ports: String,

    /// TCP ports that accept only loopback connections (others are reset): the gateway's
    /// admin port and the sds-agent's admin port. Also never captured inbound. Empty: none.
    #[arg(long, default_value = istio::LOOPBACK_ONLY_PORTS, env = "GATEWAY_INIT_LOOPBACK_ONLY_PORTS")]
    pub loopback_only_ports: String,

    /// Downward-API annotations file (`key="value"` lines). These pod annotations override
    /// the options of the same meaning: traffic.sidecar.istio.io/includeInboundPorts,
    /// excludeInboundPorts, includeOutboundIPRanges, excludeOutboundIPRanges,
    /// includeOutboundPorts, excludeOutboundPorts.
    #[arg(long, env = "GATEWAY_INIT_ANNOTATIONS_FILE")]
    pub annotations_file: Option<PathBuf>,

    /// Print the iptables-restore input for IPv4 and IPv6 and change nothing.
    #[arg(long, conflicts_with_all = ["cleanup", "verify"])]
    pub dry_run: bool,

    /// Remove every chain and jump gateway-init added, leaving other rules as they are.
    #[arg(long, conflicts_with = "verify")]
    pub cleanup: bool,

    /// Compare the live rules (iptables-save) with the plan; exit 3 on a difference.
    #[arg(long)]
    pub verify: bool,

    /// Program IPv6 too: `auto` (when the kernel has IPv6 in this namespace), `true`, `false`.
    #[arg(long, value_enum, default_value_t = Ipv6Choice::Auto, env = "GATEWAY_INIT_IPV6")]
    pub ipv6: Ipv6Choice,

    /// iptables backend: `auto` (the one already holding rules, else nft), `nft`, `legacy`.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, env = "GATEWAY_INIT_BACKEND")]
    pub backend: BackendChoice,
}

impl Options {
    /// What this run does.
    pub fn action(&self) -> Action {
        match (self.dry_run, self.cleanup, self.verify) {
            (true, _, _) => Action::DryRun,
            (_, true, _) => Action::Cleanup,
            (_, _, true) => Action::Verify,
            _ => Action::Apply,
        }
    }

    /// Validates the options, with the annotations file's overrides if one is given.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let annotations = match &self.annotations_file {
            Some(path) => Annotations::read(path)?,
            None => Annotations::default(),
        };
        self.config_with(&annotations)
    }

    /// Validates the options with these annotation overrides.
    pub fn config_with(&self, annotations: &Annotations) -> Result<Config, ConfigError> {
        let pick = |option: &'static str, key: &'static str, value: &str| -> (Setting, String) {
            match annotations.get(key) {
                Some(v) => (
                    Setting::Annotation {
                        key,
                        file: annotations.source.clone(),
                    },
                    v.to_owned(),
                ),
                None => (Setting::Option(option), value.to_owned()),
            }
        };
        let (s, v) = pick(
            "--include-inbound-ports",
            annotation::INCLUDE_INBOUND_PORTS,
            &self.include_inbound_ports,
        );
        let include_inbound_ports = PortSelection::parse(&s, &v)?;
        let (s, v) = pick(
            "--exclude-inbound-ports",
            annotation::EXCLUDE_INBOUND_PORTS,
            &self.exclude_inbound_ports,
        );
        let exclude_inbound_ports = parse_ports(&s, &v)?;
        let (s, v) = pick(
            "--include-outbound-ip-ranges",
            annotation::INCLUDE_OUTBOUND_IP_RANGES,
            &self.include_outbound_ip_ranges,
        );
        let include_outbound_ip_ranges = RangeSelection::parse(&s, &v)?;
        let (s, v) = pick(
            "--exclude-outbound-ip-ranges",
            annotation::EXCLUDE_OUTBOUND_IP_RANGES,
            &self.exclude_outbound_ip_ranges,
        );
        if v.trim() == "*" {
            return Err(ConfigError::WildcardNotAllowed { setting: s });
        }
        let exclude_outbound_ip_ranges = parse_cidrs(&s, &v)?;
        let (s, v) = pick(
            "--include-outbound-ports",
            annotation::INCLUDE_OUTBOUND_PORTS,
            &self.include_outbound_ports,
        );
        let include_outbound_ports = parse_ports(&s, &v)?;
        let (s, v) = pick(
            "--exclude-outbound-ports",
            annotation::EXCLUDE_OUTBOUND_PORTS,
            &self.exclude_outbound_ports,
        );
        let exclude_outbound_ports = parse_ports(&s, &v)?;

        Ok(Config {
            mode: self.mode,
            edge_ports: parse_ports(&Setting::Option("--edge-ports"), &self.edge_ports)?,
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            inbound_capture_port: self.inbound_capture_port,
            outbound_capture_port: self.outbound_capture_port,
            include_inbound_ports,
            exclude_inbound_ports,
            include_outbound_ip_ranges,
            exclude_outbound_ip_ranges,
            include_outbound_ports,
            exclude_outbound_ports,
            loopback_only_ports: parse_ports(
                &Setting::Option("--loopback-only-ports"),
                &self.loopback_only_ports,
            )?,
        })
    }
}

/// The validated input of the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Native (no redirection) or sidecar (Istio capture).
    pub mode: Mode,
    /// Never captured inbound.
    pub edge_ports: Vec<PortSpec>,
    /// The istio-proxy's uid; its traffic is never captured.
    pub proxy_uid: u32,
    /// The istio-proxy's gid; its traffic is never captured.
    pub proxy_gid: u32,
    /// Where captured inbound connections go.
    pub inbound_capture_port: u16,
    /// Where captured outbound connections go.
    pub outbound_capture_port: u16,
    /// Which inbound ports are captured.
    pub include_inbound_ports: PortSelection,
    /// Inbound ports not captured when all are (`*`).
    pub exclude_inbound_ports: Vec<PortSpec>,
    /// Which outbound destinations are captured.
    pub include_outbound_ip_ranges: RangeSelection,
    /// Outbound destinations never captured.
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    /// Outbound ports captured whatever the destination.
    pub include_outbound_ports: Vec<PortSpec>,
    /// Outbound ports never captured.
    pub exclude_outbound_ports: Vec<PortSpec>,
    /// Ports that accept loopback connections only.
    pub loopback_only_ports: Vec<PortSpec>,
}

impl Config {
    /// The configuration the options' defaults give, in a mode.
    pub fn defaults(mode: Mode) -> Self {
        let mode_arg = match mode {
            Mode::Native => "native",
            Mode::Sidecar => "sidecar",
        };
        Options::parse_from(["gateway-init", "--mode", mode_arg])
            .config_with(&Annotations::default())
            .expect("the defaults are valid")
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A command-line option (or its environment variable).
    Option(&'static str),
    /// A pod annotation read from the annotations file.
    Annotation { key: &'static str, file: PathBuf },
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Option(name) => write!(f, "option {name}"),
            Setting::Annotation { key, file } => {
                write!(f, "annotation {key} (in {})", file.display())
            }
        }
    }
}

/// A value that does not validate; each names the value and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: `{value}` is not a port or port range (1-65535, `low:high`): {reason}")]
    InvalidPort {
        setting: Setting,
        value: String,
        reason: String,
    },
    #[error("{setting}: `{value}` is not an IPv4 or IPv6 CIDR: {reason}")]
    InvalidCidr {
        setting: Setting,
        value: String,
        reason: String,
    },
    #[error("{setting}: `*` is not allowed here (list the CIDRs to exclude)")]
    WildcardNotAllowed { setting: Setting },
    #[error(transparent)]
    Annotations(#[from] AnnotationsError),
}

/// One TCP port or an inclusive range of them, as iptables' `--dport` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Single(u16),
    Range(u16, u16),
}

impl PortSpec {
    fn parse(setting: &Setting, text: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidPort {
            setting: setting.clone(),
            value: text.to_owned(),
            reason,
        };
        let port = |s: &str| -> Result<u16, ConfigError> {
            match s.trim().parse::<u16>() {
                Ok(0) => Err(invalid("port 0 is not a port".into())),
                Ok(p) => Ok(p),
                Err(e) => Err(invalid(e.to_string())),
            }
        };
        match text.split_once([':', '-']) {
            None => Ok(PortSpec::Single(port(text)?)),
            Some((low, high)) => {
                let (low, high) = (port(low)?, port(high)?);
                if low > high {
                    return Err(invalid(format!("{low} is above {high}")));
                }
                Ok(PortSpec::Range(low, high))
            }
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Single(p) => write!(f, "{p}"),
            PortSpec::Range(low, high) => write!(f, "{low}:{high}"),
        }
    }
}

/// Which ports are captured: all (`*`) or those listed (an empty list: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSelection {
    All,
    Only(Vec<PortSpec>),
}

impl PortSelection {
    fn parse(setting: &Setting, text: &str) -> Result<Self, ConfigError> {
        if text.trim() == "*" {
            Ok(PortSelection::All)
        } else {
            Ok(PortSelection::Only(parse_ports(setting, text)?))
        }
    }
}

/// Which destinations are captured: all (`*`) or those listed (an empty list: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSelection {
    All,
    Only(Vec<Cidr>),
}

impl RangeSelection {
    fn parse(setting: &Setting, text: &str) -> Result<Self, ConfigError> {
        if text.trim() == "*" {
            Ok(RangeSelection::All)
        } else {
            Ok(RangeSelection::Only(parse_cidrs(setting, text)?))
        }
    }
}

/// An IPv4 or IPv6 prefix, held in canonical form (host bits cleared), as iptables-save
/// prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Cidr {
    /// Whether this is an IPv4 prefix.
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether this prefix lies in the loopback range.
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `addr/len` (host bits are cleared) or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|e| format!("{e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length `{l}` is not 0-{max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_ports(setting: &Setting, text: &str) -> Result<Vec<PortSpec>, ConfigError> {
    let mut ports = Vec::new();
    for item in list_items(text) {
        let port = PortSpec::parse(setting, item)?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

fn parse_cidrs(setting: &Setting, text: &str) -> Result<Vec<Cidr>, ConfigError> {
    let mut cidrs = Vec::new();
    for item in list_items(text) {
        let cidr = item
            .parse::<Cidr>()
            .map_err(|reason| ConfigError::InvalidCidr {
                setting: setting.clone(),
                value: item.to_owned(),
                reason,
            })?;
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(args: &[&str]) -> Options {
        let mut all = vec!["gateway-init"];
        all.extend_from_slice(args);
        Options::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_istios() {
        let c = Config::defaults(Mode::Sidecar);
        assert_eq!(c.proxy_uid, 1337);
        assert_eq!(c.proxy_gid, 1337);
        assert_eq!(c.inbound_capture_port, 15006);
        assert_eq!(c.outbound_capture_port, 15001);
        assert_eq!(
            c.edge_ports,
            [PortSpec::Single(8080), PortSpec::Single(8443)]
        );
        assert_eq!(
            c.loopback_only_ports,
            [PortSpec::Single(19000), PortSpec::Single(15030)]
        );
        assert_eq!(c.include_inbound_ports, PortSelection::All);
        assert_eq!(c.include_outbound_ip_ranges, RangeSelection::All);
        assert_eq!(Config::defaults(Mode::Native).mode, Mode::Native);
    }

    #[test]
    fn empty_include_inbound_ports_captures_nothing() {
        let c = options(&["--include-inbound-ports", ""]).config().unwrap();
        assert_eq!(c.include_inbound_ports, PortSelection::Only(vec![]));
    }

    #[test]
    fn an_invalid_port_names_the_value_and_the_option() {
        let err = options(&["--edge-ports", "8080,80a"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("option --edge-ports"), "{err}");
        assert!(err.contains("`80a`"), "{err}");
        let err = options(&["--exclude-outbound-ports", "70000"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--exclude-outbound-ports") && err.contains("`70000`"));
        let err = options(&["--exclude-inbound-ports", "0"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`0`"), "{err}");
        let err = options(&["--include-outbound-ports", "9000:8000"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`9000:8000`"), "{err}");
    }

    #[test]
    fn an_invalid_cidr_names_the_value_and_the_option() {
        let err = options(&["--exclude-outbound-ip-ranges", "10.0.0.0/8,10.300.0.0/16"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("option --exclude-outbound-ip-ranges"), "{err}");
        assert!(err.contains("`10.300.0.0/16`"), "{err}");
        let err = options(&["--include-outbound-ip-ranges", "10.0.0.0/33"])
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`10.0.0.0/33`"), "{err}");
    }

    #[test]
    fn excluding_every_range_is_refused() {
        let err = options(&["--exclude-outbound-ip-ranges", "*"])
            .config()
            .unwrap_err();
        assert!(matches!(err, ConfigError::WildcardNotAllowed { .. }));
    }

    #[test]
    fn capture_ports_out_of_range_are_refused_by_the_parser() {
        let mut args = vec!["gateway-init", "--inbound-capture-port", "0"];
        assert!(Options::try_parse_from(&args).is_err());
        args[2] = "65536";
        assert!(Options::try_parse_from(&args).is_err());
    }

    #[test]
    fn cidrs_are_held_in_canonical_form() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8::/32");
        let c: Cidr = "192.168.1.1".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.1.1/32");
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(c.to_string(), "0.0.0.0/0");
    }

    #[test]
    fn annotations_override_options_and_errors_name_the_annotation() {
        let annotations = Annotations::parse(
            Path::new("/etc/podinfo/annotations"),
            "traffic.sidecar.istio.io/excludeInboundPorts=\"15020,15021\"\n\
             traffic.sidecar.istio.io/includeOutboundIPRanges=\"10.96.0.0/12\"\n",
        )
        .unwrap();
        let c = options(&["--mode", "sidecar", "--exclude-inbound-ports", "1234"])
            .config_with(&annotations)
            .unwrap();
        assert_eq!(
            c.exclude_inbound_ports,
            [PortSpec::Single(15020), PortSpec::Single(15021)]
        );
        assert_eq!(
            c.include_outbound_ip_ranges,
            RangeSelection::Only(vec!["10.96.0.0/12".parse().unwrap()])
        );

        let bad = Annotations::parse(
            Path::new("/etc/podinfo/annotations"),
            "traffic.sidecar.istio.io/excludeOutboundPorts=\"http\"\n",
        )
        .unwrap();
        let err = options(&[]).config_with(&bad).unwrap_err().to_string();
        assert!(
            err.contains("annotation traffic.sidecar.istio.io/excludeOutboundPorts"),
            "{err}"
        );
        assert!(err.contains("/etc/podinfo/annotations"), "{err}");
        assert!(err.contains("`http`"), "{err}");
    }

    #[test]
    fn one_action_at_a_time() {
        assert_eq!(options(&[]).action(), Action::Apply);
        assert_eq!(options(&["--dry-run"]).action(), Action::DryRun);
        assert_eq!(options(&["--cleanup"]).action(), Action::Cleanup);
        assert_eq!(options(&["--verify"]).action(), Action::Verify);
        assert!(Options::try_parse_from(["gateway-init", "--cleanup", "--verify"]).is_err());
        assert!(Options::try_parse_from(["gateway-init", "--dry-run", "--cleanup"]).is_err());
    }
}
