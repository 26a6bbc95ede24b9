//! The planner: a [`Config`] in, the rules for IPv4 and IPv6 out. Pure: it reads nothing
//! and runs nothing, so golden tests can pin every combination of options.

use crate::config::{Cidr, Config, Mode, PortSelection, PortSpec, RangeSelection};
use crate::istio;

/// IPv4 or IPv6: each gets its own rules and its own iptables binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Lower-case name for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The iptables tables gateway-init writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Nat,
    Filter,
}

impl Table {
    /// Both tables, in the order they are rendered.
    pub const ALL: [Table; 2] = [Table::Nat, Table::Filter];

    /// The table's name as iptables spells it.
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }

    /// The table's built-in chains, as a fresh table has them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }
}

/// Every chain a rule of ours lives in or jumps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// nat PREROUTING (built in): jumps to [`Chain::IstioInbound`].
    Prerouting,
    /// nat OUTPUT (built in): jumps to [`Chain::IstioOutput`].
    Output,
    /// filter INPUT (built in): jumps to [`Chain::LoopbackOnly`].
    Input,
    /// Decides which inbound connections are captured.
    IstioInbound,
    /// Redirects to the inbound capture port.
    IstioInRedirect,
    /// Decides which outbound connections are captured.
    IstioOutput,
    /// Redirects to the outbound capture port.
    IstioRedirect,
    /// Resets non-loopback connections to the loopback-only ports.
    LoopbackOnly,
}

impl Chain {
    /// The chains gateway-init owns: created, emptied and refilled, and removed by cleanup.
    pub const OWN: [Chain; 5] = [
        Chain::IstioInbound,
        Chain::IstioRedirect,
        Chain::IstioInRedirect,
        Chain::IstioOutput,
        Chain::LoopbackOnly,
    ];

    /// The chain's name.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::Input => "INPUT",
            Chain::IstioInbound => "ISTIO_INBOUND",
            Chain::IstioInRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::IstioRedirect => "ISTIO_REDIRECT",
            Chain::LoopbackOnly => "MESHGATE_LOOPBACK_ONLY",
        }
    }

    /// The table the chain is in.
    pub fn table(self) -> Table {
        match self {
            Chain::Input | Chain::LoopbackOnly => Table::Filter,
            _ => Table::Nat,
        }
    }

    /// Whether this is one of the kernel's built-in chains (not ours to create or delete).
    pub fn is_builtin(self) -> bool {
        matches!(self, Chain::Prerouting | Chain::Output | Chain::Input)
    }

    /// Our own chain of this name, if it is one.
    pub fn own_by_name(name: &str) -> Option<Chain> {
        Chain::OWN.into_iter().find(|c| c.name() == name)
    }
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Stop looking in this chain.
    Return,
    /// Continue in another chain.
    Jump(Chain),
    /// Redirect to a local port (nat).
    Redirect(u16),
    /// Refuse the connection with a TCP reset.
    RejectWithTcpReset,
}

/// A match that may be negated with `!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negatable<T> {
    /// Whether the match is inverted (`!`).
    pub negated: bool,
    /// What is matched.
    pub value: T,
}

/// `Negatable { negated: false, .. }`.
pub fn is<T>(value: T) -> Negatable<T> {
    Negatable {
        negated: false,
        value,
    }
}

/// `Negatable { negated: true, .. }`.
pub fn not<T>(value: T) -> Negatable<T> {
    Negatable {
        negated: true,
        value,
    }
}

/// Whose socket a packet comes from (`-m owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Uid(u32),
    Gid(u32),
}

/// Where a jump from a built-in chain goes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// At the end (`-A`), as istio-iptables does.
    Append,
    /// At the top (`-I CHAIN 1`), so that a security rule comes before anything else.
    First,
}

/// One iptables rule. Rendered in the canonical order `iptables-save` prints, so the live
/// rules can be compared with the plan text for text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain the rule is in.
    pub chain: Chain,
    /// Where it goes in that chain (own chains are always appended in plan order).
    pub position: Position,
    /// `-s`.
    pub source: Option<Negatable<Cidr>>,
    /// `-d`.
    pub destination: Option<Negatable<Cidr>>,
    /// `-i`.
    pub in_interface: Option<&'static str>,
    /// `-o`.
    pub out_interface: Option<&'static str>,
    /// `-p tcp`.
    pub tcp: bool,
    /// `-m tcp --dport` (requires `tcp`).
    pub destination_port: Option<Negatable<PortSpec>>,
    /// `-m owner --uid-owner` / `--gid-owner`.
    pub owner: Option<Negatable<Owner>>,
    /// `-j`.
    pub target: Target,
}

impl Rule {
    /// A rule in `chain` with no matches.
    pub fn new(chain: Chain, target: Target) -> Self {
        Rule {
            chain,
            position: Position::Append,
            source: None,
            destination: None,
            in_interface: None,
            out_interface: None,
            tcp: false,
            destination_port: None,
            owner: None,
            target,
        }
    }

    fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    fn dport(mut self, port: Negatable<PortSpec>) -> Self {
        self.tcp = true;
        self.destination_port = Some(port);
        self
    }

    fn src(mut self, cidr: Negatable<Cidr>) -> Self {
        self.source = Some(cidr);
        self
    }

    fn dst(mut self, cidr: Negatable<Cidr>) -> Self {
        self.destination = Some(cidr);
        self
    }

    fn in_lo(mut self) -> Self {
        self.in_interface = Some(istio::LOOPBACK_INTERFACE);
        self
    }

    fn out_lo(mut self) -> Self {
        self.out_interface = Some(istio::LOOPBACK_INTERFACE);
        self
    }

    fn owner(mut self, owner: Negatable<Owner>) -> Self {
        self.owner = Some(owner);
        self
    }

    fn first(mut self) -> Self {
        self.position = Position::First;
        self
    }
}

/// The rules for one family: our chains with their rules, and the jumps into them from the
/// built-in chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Our chains to create (or empty and refill), in declaration order.
    pub chains: Vec<Chain>,
    /// The rules of our chains, in order.
    pub rules: Vec<Rule>,
    /// The jumps from built-in chains into ours; each must exist exactly once.
    pub jumps: Vec<Rule>,
    /// Addresses the loopback interface must have: IPv6 `::6/128` in sidecar mode, the
    /// source the sidecar's inbound passthrough binds to (IPv4's 127.0.0.6 is already
    /// on `lo` through 127.0.0.0/8).
    pub loopback_addresses: Vec<Cidr>,
}

impl FamilyPlan {
    /// A plan with nothing in it: what `--cleanup` converges to.
    pub fn empty(family: Family) -> Self {
        FamilyPlan {
            family,
            chains: Vec::new(),
            rules: Vec::new(),
            jumps: Vec::new(),
            loopback_addresses: Vec::new(),
        }
    }

    /// Whether this plan touches `table` at all.
    pub fn uses(&self, table: Table) -> bool {
        self.chains.iter().any(|c| c.table() == table)
    }
}

/// The whole plan: IPv4 and IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The IPv4 rules (iptables).
    pub v4: FamilyPlan,
    /// The IPv6 rules (ip6tables).
    pub v6: FamilyPlan,
}

impl Plan {
    /// Plans the rules for a configuration.
    pub fn build(config: &Config) -> Self {
        Plan {
            v4: plan_family(config, Family::V4),
            v6: plan_family(config, Family::V6),
        }
    }

    /// The plan of one family.
    pub fn family(&self, family: Family) -> &FamilyPlan {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// The family's addresses istio-iptables treats specially.
struct WellKnown {
    loopback_host: Cidr,
    passthrough_source: Cidr,
}

impl WellKnown {
    fn of(family: Family) -> Self {
        let (loopback, passthrough) = match family {
            Family::V4 => (
                istio::LOOPBACK_HOST_V4,
                istio::INBOUND_PASSTHROUGH_SOURCE_V4,
            ),
            Family::V6 => (
                istio::LOOPBACK_HOST_V6,
                istio::INBOUND_PASSTHROUGH_SOURCE_V6,
            ),
        };
        WellKnown {
            loopback_host: loopback.parse().expect("well-known CIDR"),
            passthrough_source: passthrough.parse().expect("well-known CIDR"),
        }
    }
}

fn of_family(cidrs: &[Cidr], family: Family) -> impl Iterator<Item = Cidr> + '_ {
    cidrs
        .iter()
        .copied()
        .filter(move |c| c.is_v4() == (family == Family::V4))
}

fn plan_family(config: &Config, family: Family) -> FamilyPlan {
    let mut plan = FamilyPlan::empty(family);
    if config.mode == Mode::Sidecar {
        plan_capture(config, family, &mut plan);
    }
    plan_loopback_only(config, &mut plan);
    plan
}

/// Istio's capture (nat table), with the gateway's edge ports and the loopback-only ports
/// never captured inbound.
fn plan_capture(config: &Config, family: Family, plan: &mut FamilyPlan) {
    use Chain::*;
    let known = WellKnown::of(family);
    let tunnel = PortSpec::Single(istio::INBOUND_TUNNEL_PORT);
    plan.chains
        .extend([IstioInbound, IstioRedirect, IstioInRedirect, IstioOutput]);
    if family == Family::V6 {
        plan.loopback_addresses.push(known.passthrough_source);
    }
    let rules = &mut plan.rules;

    // The redirections themselves.
    rules.push(
        Rule::new(
            IstioRedirect,
            Target::Redirect(config.outbound_capture_port),
        )
        .tcp(),
    );
    rules.push(
        Rule::new(
            IstioInRedirect,
            Target::Redirect(config.inbound_capture_port),
        )
        .tcp(),
    );

    // Inbound: the tunnel port, the edge ports and the loopback-only ports are never
    // captured; then all ports (less the excluded ones) or only those listed.
    rules.push(Rule::new(IstioInbound, Target::Return).dport(is(tunnel)));
    for port in config.edge_ports.iter().chain(&config.loopback_only_ports) {
        rules.push(Rule::new(IstioInbound, Target::Return).dport(is(*port)));
    }
    let capture_inbound = match &config.include_inbound_ports {
        PortSelection::All => {
            for port in &config.exclude_inbound_ports {
                rules.push(Rule::new(IstioInbound, Target::Return).dport(is(*port)));
            }
            rules.push(Rule::new(IstioInbound, Target::Jump(IstioInRedirect)).tcp());
            true
        }
        PortSelection::Only(ports) => {
            for port in ports {
                rules.push(Rule::new(IstioInbound, Target::Jump(IstioInRedirect)).dport(is(*port)));
            }
            !ports.is_empty()
        }
    };
    if capture_inbound {
        plan.jumps
            .push(Rule::new(Prerouting, Target::Jump(IstioInbound)).tcp());
    }

    // Outbound, in istio-iptables' order: excluded ports; the sidecar's inbound
    // passthrough; the proxy's own traffic (except its calls back into the pod over
    // loopback, which go to the inbound listener); other loopback traffic; excluded
    // ranges; included ports; included ranges.
    for port in &config.exclude_outbound_ports {
        rules.push(Rule::new(IstioOutput, Target::Return).dport(is(*port)));
    }
    rules.push(
        Rule::new(IstioOutput, Target::Return)
            .src(is(known.passthrough_source))
            .out_lo(),
    );
    let loopback_included = match &config.include_outbound_ip_ranges {
        RangeSelection::All => false,
        RangeSelection::Only(cidrs) => cidrs.iter().any(Cidr::is_loopback),
    };
    for owner in [Owner::Uid(config.proxy_uid), Owner::Gid(config.proxy_gid)] {
        rules.push(
            Rule::new(IstioOutput, Target::Jump(IstioInRedirect))
                .dst(not(known.loopback_host))
                .out_lo()
                .dport(not(tunnel))
                .owner(is(owner)),
        );
        if !loopback_included {
            rules.push(
                Rule::new(IstioOutput, Target::Return)
                    .out_lo()
                    .owner(not(owner)),
            );
        }
        rules.push(Rule::new(IstioOutput, Target::Return).owner(is(owner)));
    }
    rules.push(Rule::new(IstioOutput, Target::Return).dst(is(known.loopback_host)));
    for cidr in of_family(&config.exclude_outbound_ip_ranges, family) {
        rules.push(Rule::new(IstioOutput, Target::Return).dst(is(cidr)));
    }
    for port in &config.include_outbound_ports {
        rules.push(Rule::new(IstioOutput, Target::Jump(IstioRedirect)).dport(is(*port)));
    }
    match &config.include_outbound_ip_ranges {
        RangeSelection::All => rules.push(Rule::new(IstioOutput, Target::Jump(IstioRedirect))),
        RangeSelection::Only(cidrs) => {
            for cidr in of_family(cidrs, family) {
                rules.push(Rule::new(IstioOutput, Target::Jump(IstioRedirect)).dst(is(cidr)));
            }
        }
    }
    plan.jumps
        .push(Rule::new(Output, Target::Jump(IstioOutput)));
}

/// The loopback-only ports (filter table): connections that do not arrive over loopback
/// are reset.
fn plan_loopback_only(config: &Config, plan: &mut FamilyPlan) {
    if config.loopback_only_ports.is_empty() {
        return;
    }
    let chain = Chain::LoopbackOnly;
    plan.chains.push(chain);
    plan.rules.push(Rule::new(chain, Target::Return).in_lo());
    for port in &config.loopback_only_ports {
        plan.rules
            .push(Rule::new(chain, Target::RejectWithTcpReset).dport(is(*port)));
    }
    plan.jumps
        .push(Rule::new(Chain::Input, Target::Jump(chain)).tcp().first());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_mode_redirects_nothing() {
        let plan = Plan::build(&Config::defaults(Mode::Native));
        for family in [&plan.v4, &plan.v6] {
            assert!(!family.uses(Table::Nat));
            assert!(family.uses(Table::Filter));
            assert!(
                family
                    .rules
                    .iter()
                    .all(|r| !matches!(r.target, Target::Redirect(_)))
            );
        }
    }

    #[test]
    fn sidecar_mode_captures_both_ways_and_jumps_once_per_chain() {
        let plan = Plan::build(&Config::defaults(Mode::Sidecar));
        let jumps: Vec<_> = plan.v4.jumps.iter().map(|j| j.chain).collect();
        assert_eq!(jumps, [Chain::Prerouting, Chain::Output, Chain::Input]);
        assert!(
            plan.v4
                .rules
                .contains(&Rule::new(Chain::IstioRedirect, Target::Redirect(15001)).tcp())
        );
    }

    #[test]
    fn own_chains_are_known_by_name() {
        for chain in Chain::OWN {
            assert_eq!(Chain::own_by_name(chain.name()), Some(chain));
            assert!(!chain.is_builtin());
        }
        assert_eq!(Chain::own_by_name("OUTPUT"), None);
    }
}
