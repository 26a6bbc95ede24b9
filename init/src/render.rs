//! Renders a plan as `iptables-restore --noflush` input, one per family.
//!
//! Rules are written in the canonical form `iptables-save` prints (same option order,
//! implicit `-m tcp` spelled out), so the live rules can be compared with the plan as text.

use std::fmt::{self, Write as _};

use crate::plan::{Chain, FamilyPlan, Negatable, Owner, Position, Rule, Table, Target};

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Return => f.write_str("-j RETURN"),
            Target::Jump(chain) => write!(f, "-j {}", chain.name()),
            Target::Redirect(port) => write!(f, "-j REDIRECT --to-ports {port}"),
            Target::RejectWithTcpReset => f.write_str("-j REJECT --reject-with tcp-reset"),
        }
    }
}

fn bang<T>(n: &Negatable<T>) -> &'static str {
    if n.negated { "! " } else { "" }
}

impl Rule {
    /// The rule's matches and target, without the chain: `-p tcp -j ISTIO_INBOUND`.
    pub fn spec(&self) -> String {
        let mut s = String::new();
        let mut put = |part: fmt::Arguments<'_>| {
            if !s.is_empty() {
                s.push(' ');
            }
            s.write_fmt(part).expect("writing to a String");
        };
        if let Some(src) = &self.source {
            put(format_args!("{}-s {}", bang(src), src.value));
        }
        if let Some(dst) = &self.destination {
            put(format_args!("{}-d {}", bang(dst), dst.value));
        }
        if let Some(iface) = self.in_interface {
            put(format_args!("-i {iface}"));
        }
        if let Some(iface) = self.out_interface {
            put(format_args!("-o {iface}"));
        }
        if self.tcp {
            put(format_args!("-p tcp"));
        }
        if let Some(port) = &self.destination_port {
            put(format_args!("-m tcp {}--dport {}", bang(port), port.value));
        }
        if let Some(owner) = &self.owner {
            match owner.value {
                Owner::Uid(uid) => put(format_args!("-m owner {}--uid-owner {uid}", bang(owner))),
                Owner::Gid(gid) => put(format_args!("-m owner {}--gid-owner {gid}", bang(owner))),
            }
        }
        put(format_args!("{}", self.target));
        s
    }

    /// The rule as `iptables-save` lists it: `-A CHAIN spec`.
    pub fn save_line(&self) -> String {
        format!("-A {} {}", self.chain.name(), self.spec())
    }

    /// The rule as it is written into the restore input (`-A` or `-I CHAIN 1`).
    pub fn restore_line(&self) -> String {
        match self.position {
            Position::Append => self.save_line(),
            Position::First => format!("-I {} 1 {}", self.chain.name(), self.spec()),
        }
    }
}

/// What must go before the plan's rules when the namespace already holds rules of ours:
/// jumps to delete (so they are never duplicated) and chains no longer planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Housekeeping {
    /// Existing jumps from built-in chains into our chains: `(table, "CHAIN spec")`.
    pub delete_rules: Vec<(Table, String)>,
    /// Our chains that exist but are not in the plan: emptied, then deleted.
    pub delete_chains: Vec<Chain>,
}

impl Housekeeping {
    fn touches(&self, table: Table) -> bool {
        self.delete_rules.iter().any(|(t, _)| *t == table)
            || self.delete_chains.iter().any(|c| c.table() == table)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.delete_rules.is_empty() && self.delete_chains.is_empty()
    }
}

/// The `iptables-restore --noflush` input that turns the namespace into the plan: in each
/// table, our chains declared (which creates them or empties them), old jumps and chains
/// removed, then our rules and the jumps into them. Empty when there is nothing to do.
pub fn restore_input(plan: &FamilyPlan, housekeeping: &Housekeeping) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        if !plan.uses(table) && !housekeeping.touches(table) {
            continue;
        }
        let _ = writeln!(out, "*{}", table.name());
        for chain in plan.chains.iter().filter(|c| c.table() == table) {
            let _ = writeln!(out, ":{} - [0:0]", chain.name());
        }
        for (_, rule) in housekeeping
            .delete_rules
            .iter()
            .filter(|(t, _)| *t == table)
        {
            let _ = writeln!(out, "-D {rule}");
        }
        let stale = || {
            housekeeping
                .delete_chains
                .iter()
                .filter(move |c| c.table() == table)
        };
        for chain in stale() {
            let _ = writeln!(out, "-F {}", chain.name());
        }
        for chain in stale() {
            let _ = writeln!(out, "-X {}", chain.name());
        }
        for rule in plan.rules.iter().filter(|r| r.chain.table() == table) {
            let _ = writeln!(out, "{}", rule.restore_line());
        }
        for rule in plan.jumps.iter().filter(|r| r.chain.table() == table) {
            let _ = writeln!(out, "{}", rule.restore_line());
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The plan as a person reads it in `--dry-run`: one restore input per family.
pub fn dry_run(plans: &[&FamilyPlan]) -> String {
    let mut out = String::new();
    for plan in plans {
        let tool = match plan.family {
            crate::plan::Family::V4 => "iptables-restore",
            crate::plan::Family::V6 => "ip6tables-restore",
        };
        let _ = writeln!(
            out,
            "# {} rules: input for `{tool} --noflush`",
            plan.family.name()
        );
        let body = restore_input(plan, &Housekeeping::default());
        if body.is_empty() {
            out.push_str("# (nothing to program)\n");
        }
        out.push_str(&body);
        for address in &plan.loopback_addresses {
            let _ = writeln!(out, "# and the address {address} on lo");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Mode};
    use crate::plan::Plan;

    #[test]
    fn rules_render_in_iptables_save_order() {
        let plan = Plan::build(&Config::defaults(Mode::Sidecar));
        let lines: Vec<String> = plan.v4.rules.iter().map(Rule::save_line).collect();
        assert!(
            lines.contains(
                &"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 \
              -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT"
                    .to_owned()
            )
        );
        assert!(lines.contains(&"-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN".to_owned()));
        let v6: Vec<String> = plan.v6.rules.iter().map(Rule::save_line).collect();
        assert!(v6.contains(&"-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN".to_owned()));
    }

    #[test]
    fn housekeeping_deletes_old_jumps_before_refilling() {
        let plan = Plan::build(&Config::defaults(Mode::Native));
        let hk = Housekeeping {
            delete_rules: vec![(
                Table::Filter,
                "INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY".to_owned(),
            )],
            delete_chains: vec![],
        };
        let text = restore_input(&plan.v4, &hk);
        let delete = text
            .find("-D INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY")
            .unwrap();
        let insert = text
            .find("-I INPUT 1 -p tcp -j MESHGATE_LOOPBACK_ONLY")
            .unwrap();
        assert!(delete < insert, "{text}");
    }

    #[test]
    fn nothing_planned_and_nothing_to_clean_renders_nothing() {
        let mut config = Config::defaults(Mode::Native);
        config.loopback_only_ports.clear();
        let plan = Plan::build(&config);
        assert_eq!(restore_input(&plan.v4, &Housekeeping::default()), "");
    }
}
