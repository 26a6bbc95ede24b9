//! IR -> runtime tables, built once per configuration and swapped atomically: per-port
//! listener indexes, per-listener virtual hosts (hash maps for exact hosts, suffix maps
//! for wildcards), compiled matches, TLS acceptor configs and upstream targets. The
//! request path reads them through a [`TableReader`] and never parses configuration.

pub mod authz;
mod hosts;
pub mod l4;
pub mod limits;
pub mod routes;
mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::upstream::backend_state::BackendStates;

pub use crate::ir::{HostPattern, Protocol};
pub use hosts::HostIndex;
pub use routes::{Backend, Endpoint, RequestView, RouteEntry, Rule, Target, VirtualHost};

/// Everything the request path reads, for one configuration.
#[derive(Default)]
pub struct Tables {
    /// Ports by number.
    pub ports: HashMap<u16, PortTable>,
    /// Some backend may use mesh mTLS.
    pub mesh_upstreams: bool,
    /// The IR these tables were built from (what `/config_dump` shows).
    pub ir: Arc<crate::ir::Config>,
    /// Listeners of the IR that could not be built (`namespace/gateway/listener`, why).
    pub unprogrammed: Vec<(String, String)>,
}

/// One listening port.
pub struct PortTable {
    /// Port number.
    pub port: u16,
    /// Edge protocol.
    pub protocol: Protocol,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: Option<crate::ir::ProxyProtocol>,
    /// HTTP/1.0 requests are served (else 426).
    pub accept_http10: bool,
    /// Listeners, most specific hostname first.
    pub listeners: Vec<ListenerTable>,
    /// Listener index by hostname.
    hosts: HostIndex,
}

impl PortTable {
    /// The listener that owns a request host (the most specific listener hostname).
    pub fn listener_for_host(&self, host: &str) -> Option<usize> {
        self.hosts.find(host)
    }

    /// The listener a TLS ClientHello selects: by SNI, else the listener without a
    /// hostname, else the first one (clients that send no SNI, such as IP addresses).
    pub fn listener_for_sni(&self, sni: Option<&str>) -> Option<usize> {
        if let Some(sni) = sni
            && let Some(i) = self.hosts.find(&sni.to_ascii_lowercase())
        {
            return Some(i);
        }
        self.listeners
            .iter()
            .position(|l| l.hostname == HostPattern::Any)
            .or_else(|| (!self.listeners.is_empty()).then_some(0))
    }
}

/// One listener: its TLS and its own virtual hosts.
pub struct ListenerTable {
    /// `namespace/gateway/listener`.
    pub name: String,
    /// Listener hostname.
    pub hostname: HostPattern,
    /// Listener protocol.
    pub protocol: Protocol,
    /// TLS server config (HTTPS, TLS Terminate).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection routes (TCP, TLS).
    pub l4: l4::L4Routes,
    /// Virtual hosts.
    vhosts: Vec<VirtualHost>,
    /// Virtual host index by hostname.
    hosts: HostIndex,
    /// Match across every virtual host whose hostname matches (Gateway API).
    across_hostnames: bool,
}

impl ListenerTable {
    /// The route serving a request to `host`: the first match in precedence order among
    /// the rules of every virtual host whose hostname matches it (Gateway API), or of the
    /// most specific one (Istio, Gloo).
    pub fn find(&self, host: &str, req: &RequestView<'_>) -> Option<&RouteEntry> {
        let (v, i) = self.find_at(host, req)?;
        Some(&self.vhosts[v].routes[i])
    }

    /// Where [`ListenerTable::find`]'s route is: (virtual host, entry), the same
    /// positions as in the IR listener.
    pub fn find_at(&self, host: &str, req: &RequestView<'_>) -> Option<(usize, usize)> {
        if !self.across_hostnames {
            let v = self.hosts.find(host)?;
            return Some((v, self.vhosts[v].find_index(req)?));
        }
        // Each list is in the listener's order: the best is the first match of each.
        self.hosts
            .find_all(host)
            .filter_map(|v| Some((v, self.vhosts[v].find_index(req)?)))
            .min_by_key(|&(v, i)| self.vhosts[v].routes[i].rank)
    }

    /// The virtual host serving a request host (lowercase, no port).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.hosts.find(host).map(|i| &self.vhosts[i])
    }
}

impl Tables {
    /// Every backend of every route, once: its policy source, in-flight counts and each
    /// endpoint's outlier state (what `GET /debug/backends` shows).
    pub fn backends_report(&self) -> serde_json::Value {
        let mut seen = std::collections::BTreeMap::new();
        let rules = self
            .ports
            .values()
            .flat_map(|p| &p.listeners)
            .flat_map(|l| &l.vhosts)
            .flat_map(|v| &v.routes)
            .map(|r| &r.rule);
        let l4 = self
            .ports
            .values()
            .flat_map(|p| &p.listeners)
            .flat_map(|l| l.l4.iter())
            .flat_map(|r| &r.backends);
        for b in rules.flat_map(|r| &r.backends).chain(l4) {
            seen.entry(b.name.clone())
                .or_insert_with(|| backend_report(b));
        }
        serde_json::json!({ "backends": seen })
    }
}

fn backend_report(b: &Backend) -> serde_json::Value {
    let (requests, connections, pending) = b.state.pool.snapshot();
    let endpoints: Vec<_> = match &b.target {
        Target::Endpoints(eps) => eps
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e.health.report()).unwrap_or_default();
                v["address"] = e.authority.as_str().into();
                v
            })
            .collect(),
        _ => Vec::new(),
    };
    serde_json::json!({
        "policy": b.policy.as_ref().map(|p| p.source.clone()),
        "active_requests": b.state.active(),
        "pool": {"requests": requests, "connections": connections, "pending": pending},
        "endpoints": endpoints,
    })
}

/// Builds runtime tables from the IR; a listener whose TLS config cannot be built (e.g.
/// a key that does not match its certificate) is left out and listed in `unprogrammed`.
pub fn build(ir: Arc<crate::ir::Config>) -> Tables {
    build_with(ir, &BackendStates::default())
}

/// [`build`], with backend state (in-flight counts, retry budgets) taken from the
/// process's registry, so it survives the reload.
pub fn build_with(ir: Arc<crate::ir::Config>, states: &BackendStates) -> Tables {
    let mut unprogrammed = Vec::new();
    let authz = ir
        .authorization
        .as_ref()
        .map(|a| Arc::new(authz::Authorizer::new(a)));
    let entries = ir
        .ports
        .values()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.virtual_hosts)
        .map(|v| v.routes.len())
        .sum();
    let mut rules = routes::RuleCache::new(states.clone(), authz, entries);
    let mut ports = HashMap::new();
    for (num, p) in &ir.ports {
        let mut listeners = Vec::new();
        for l in &p.listeners {
            let tls = match &l.tls {
                Some(t) => match tls::server_config(t) {
                    Ok(mut c) => {
                        // A TLS Terminate listener carries bytes, not HTTP: no ALPN.
                        if l.protocol == Protocol::Tls {
                            c.alpn_protocols.clear();
                        }
                        Some(Arc::new(c))
                    }
                    Err(e) => {
                        let why = format!("{}: {e}", t.certificate_ref);
                        unprogrammed.push((l.name.clone(), why));
                        continue;
                    }
                },
                None => None,
            };
            let vhosts: Vec<VirtualHost> = l
                .virtual_hosts
                .iter()
                .map(|v| rules.virtual_host(v))
                .collect();
            listeners.push(ListenerTable {
                name: l.name.clone(),
                hostname: l.hostname.clone(),
                protocol: l.protocol,
                tls,
                l4: l4::L4Routes::build(&l.l4_routes, rules.backends()),
                hosts: HostIndex::new(l.virtual_hosts.iter().map(|v| &v.hostname)),
                vhosts,
                across_hostnames: l.across_hostnames,
            });
        }
        let hosts = HostIndex::new(listeners.iter().map(|l| &l.hostname));
        let table = PortTable {
            port: *num,
            protocol: p.protocol,
            proxy_protocol: p.proxy_protocol.clone(),
            accept_http10: p.accept_http10,
            listeners,
            hosts,
        };
        ports.insert(*num, table);
    }
    Tables {
        ports,
        mesh_upstreams: ir.mesh_upstreams,
        ir,
        unprogrammed,
    }
}

/// Lock-free read access to the current tables (one `ArcSwap` load per request).
#[derive(Clone, Default)]
pub struct TableReader(Arc<ArcSwap<Tables>>);

impl TableReader {
    /// The current tables.
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.0.load()
    }

    /// Swaps in new tables; requests in flight keep the old ones until they finish.
    /// The old tables are released on a thread of their own: freeing a large table
    /// (10,000 routes: tens of milliseconds) would otherwise stall the runtime thread that
    /// applied the update, and every connection on it.
    pub fn store(&self, tables: Tables) {
        let old = self.0.swap(Arc::new(tables));
        let release = std::thread::Builder::new()
            .name("tables-release".into())
            .spawn(move || drop(old));
        // When no thread can be started, `spawn` drops the closure, and `old` with it, here.
        drop(release);
    }
}
