//! The rules a namespace holds, as `iptables-save` prints them, and how they differ from a
//! plan. Pure: the text comes from [`crate::apply`].

use std::collections::BTreeMap;
use std::fmt;

use crate::plan::{Chain, FamilyPlan, Table};
use crate::render::Housekeeping;

/// One table of `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    /// Chains with their policy (`-` for user chains), in the order listed.
    pub chains: Vec<(String, String)>,
    /// Rules as `(chain, spec)`, in order, whitespace normalised.
    pub rules: Vec<(String, String)>,
}

impl LiveTable {
    fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|(c, _)| c == name)
    }

    fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.rules
            .iter()
            .filter(move |(c, _)| c == chain)
            .map(|(_, spec)| spec.as_str())
    }
}

/// The parsed `iptables-save` output of one family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveRules {
    /// Tables by name.
    pub tables: BTreeMap<String, LiveTable>,
}

/// The chain a rule jumps (or goes) to, if any.
fn jump_target(spec: &str) -> Option<&str> {
    let mut tokens = spec.split_whitespace();
    let mut target = None;
    while let Some(t) = tokens.next() {
        if t == "-j" || t == "-g" || t == "--jump" || t == "--goto" {
            target = tokens.next();
        }
    }
    target
}

impl LiveRules {
    /// Parses `iptables-save` output (comments and counters ignored).
    pub fn parse(text: &str) -> Self {
        let mut tables: BTreeMap<String, LiveTable> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                current = Some(name.trim().to_owned());
                tables.entry(name.trim().to_owned()).or_default();
                continue;
            }
            let Some(table) = current.as_ref().and_then(|t| tables.get_mut(t)) else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                if let (Some(name), Some(policy)) = (parts.next(), parts.next()) {
                    table.chains.push((name.to_owned(), policy.to_owned()));
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut parts = rule.split_whitespace();
                if let Some(chain) = parts.next() {
                    let spec = parts.collect::<Vec<_>>().join(" ");
                    table.rules.push((chain.to_owned(), spec));
                }
            } else if line == "COMMIT" {
                current = None;
            }
        }
        LiveRules { tables }
    }

    fn table(&self, table: Table) -> Option<&LiveTable> {
        self.tables.get(table.name())
    }

    /// How many rules the namespace holds in this family (to tell which backend is in use).
    pub fn rule_count(&self) -> usize {
        self.tables.values().map(|t| t.rules.len()).sum()
    }

    /// Whether any chain or jump of ours is present.
    pub fn has_ours(&self) -> bool {
        !self.housekeeping(&[]).is_empty()
    }

    /// What must be removed before `planned` chains are (re)filled: every jump from a
    /// built-in chain into one of our chains, and our chains not in `planned`. Rules in
    /// other tools' chains are never touched (a reference from one of them makes the
    /// deletion of our chain fail, and the run roll back).
    pub fn housekeeping(&self, planned: &[Chain]) -> Housekeeping {
        let mut hk = Housekeeping::default();
        for table in Table::ALL {
            let Some(live) = self.table(table) else {
                continue;
            };
            for (chain, spec) in &live.rules {
                let into_ours = jump_target(spec).and_then(Chain::own_by_name).is_some();
                if into_ours && table.builtin_chains().contains(&chain.as_str()) {
                    hk.delete_rules.push((table, format!("{chain} {spec}")));
                }
            }
            for chain in Chain::OWN {
                if chain.table() == table
                    && live.has_chain(chain.name())
                    && !planned.contains(&chain)
                {
                    hk.delete_chains.push(chain);
                }
            }
        }
        hk
    }

    /// How the live rules differ from the plan; empty when they match.
    pub fn differences(&self, plan: &FamilyPlan) -> Vec<Difference> {
        let mut diffs = Vec::new();
        let empty = LiveTable::default();
        for table in Table::ALL {
            let live = self.table(table).unwrap_or(&empty);
            for chain in Chain::OWN.into_iter().filter(|c| c.table() == table) {
                let planned = plan.chains.contains(&chain);
                let present = live.has_chain(chain.name());
                match (planned, present) {
                    (true, false) => diffs.push(Difference::MissingChain(chain)),
                    (false, true) => diffs.push(Difference::UnexpectedChain(chain)),
                    (false, false) => {}
                    (true, true) => {
                        let expected: Vec<String> = plan
                            .rules
                            .iter()
                            .filter(|r| r.chain == chain)
                            .map(|r| r.spec())
                            .collect();
                        let actual: Vec<String> =
                            live.rules_of(chain.name()).map(str::to_owned).collect();
                        if expected != actual {
                            diffs.push(Difference::ChainRules {
                                chain,
                                expected,
                                actual,
                            });
                        }
                    }
                }
            }
            // Jumps from built-in chains into ours: each planned one exactly once, no others.
            let mut jumps: BTreeMap<String, usize> = BTreeMap::new();
            for (chain, spec) in &live.rules {
                let into_ours = jump_target(spec).and_then(Chain::own_by_name).is_some();
                if into_ours && table.builtin_chains().contains(&chain.as_str()) {
                    *jumps.entry(format!("-A {chain} {spec}")).or_default() += 1;
                }
            }
            for jump in plan.jumps.iter().filter(|j| j.chain.table() == table) {
                match jumps.remove(&jump.save_line()) {
                    None => diffs.push(Difference::MissingJump(jump.save_line())),
                    Some(1) => {}
                    Some(n) => diffs.push(Difference::RepeatedJump(jump.save_line(), n)),
                }
            }
            diffs.extend(jumps.into_keys().map(Difference::UnexpectedJump));
        }
        diffs
    }

    /// The rules in a form fit for comparing two snapshots: comments and counters dropped,
    /// tables that hold nothing (built-in chains only, policy ACCEPT, no rules) left out.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for (name, table) in &self.tables {
            let trivial =
                table.rules.is_empty() && table.chains.iter().all(|(_, policy)| policy == "ACCEPT");
            if trivial {
                continue;
            }
            out.push_str(&format!("*{name}\n"));
            let mut chains = table.chains.clone();
            chains.sort();
            for (chain, policy) in chains {
                out.push_str(&format!(":{chain} {policy}\n"));
            }
            for (chain, spec) in &table.rules {
                out.push_str(&format!("-A {chain} {spec}\n"));
            }
        }
        out
    }
}

/// One way the live rules differ from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    MissingChain(Chain),
    UnexpectedChain(Chain),
    ChainRules {
        chain: Chain,
        expected: Vec<String>,
        actual: Vec<String>,
    },
    MissingJump(String),
    RepeatedJump(String, usize),
    UnexpectedJump(String),
    MissingLoopbackAddress(crate::config::Cidr),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::MissingChain(c) => {
                write!(f, "chain {} ({}) is missing", c.name(), c.table().name())
            }
            Difference::UnexpectedChain(c) => write!(
                f,
                "chain {} ({}) exists but is not planned",
                c.name(),
                c.table().name()
            ),
            Difference::ChainRules {
                chain,
                expected,
                actual,
            } => {
                writeln!(f, "chain {} holds other rules than planned", chain.name())?;
                for e in expected.iter().filter(|e| !actual.contains(e)) {
                    writeln!(f, "  missing:    -A {} {e}", chain.name())?;
                }
                for a in actual.iter().filter(|a| !expected.contains(a)) {
                    writeln!(f, "  unexpected: -A {} {a}", chain.name())?;
                }
                if expected.iter().all(|e| actual.contains(e))
                    && actual.iter().all(|a| expected.contains(a))
                {
                    writeln!(f, "  (same rules, other order or count)")?;
                }
                Ok(())
            }
            Difference::MissingJump(j) => write!(f, "jump missing: {j}"),
            Difference::RepeatedJump(j, n) => write!(f, "jump present {n} times: {j}"),
            Difference::UnexpectedJump(j) => write!(f, "jump not planned: {j}"),
            Difference::MissingLoopbackAddress(a) => write!(f, "address {a} is not on lo"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Mode};
    use crate::plan::Plan;
    use crate::render::{Housekeeping, restore_input};

    /// What iptables-save prints after the plan was restored into an empty namespace:
    /// the restore input with built-in chain declarations and `-I X 1` as `-A X`.
    fn as_saved(plan: &FamilyPlan) -> String {
        let text = restore_input(plan, &Housekeeping::default());
        let mut out = String::from("# Generated by iptables-save v1.8.9\n");
        for line in text.lines() {
            if let Some(table) = line.strip_prefix('*') {
                out.push_str(&format!("{line}\n"));
                let table = Table::ALL.into_iter().find(|t| t.name() == table).unwrap();
                for chain in table.builtin_chains() {
                    out.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
                }
            } else if let Some(rest) = line.strip_prefix("-I ") {
                let (chain, spec) = rest.split_once(" 1 ").unwrap();
                out.push_str(&format!("-A {chain} {spec}\n"));
            } else {
                out.push_str(&format!("{line}\n"));
            }
        }
        out
    }

    #[test]
    fn the_plan_as_saved_has_no_differences() {
        for mode in [Mode::Native, Mode::Sidecar] {
            let plan = Plan::build(&Config::defaults(mode));
            let live = LiveRules::parse(&as_saved(&plan.v4));
            assert_eq!(live.differences(&plan.v4), []);
            let live = LiveRules::parse(&as_saved(&plan.v6));
            assert_eq!(live.differences(&plan.v6), []);
        }
    }

    #[test]
    fn a_repeated_jump_a_missing_rule_and_a_stale_chain_are_reported() {
        let plan = Plan::build(&Config::defaults(Mode::Native));
        let mut saved = as_saved(&plan.v4);
        saved = saved.replace(
            "-A INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY\n",
            "-A INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY\n-A INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY\n",
        );
        saved = saved.replace(
            "-A MESHGATE_LOOPBACK_ONLY -p tcp -m tcp --dport 15030 -j REJECT --reject-with tcp-reset\n",
            "",
        );
        saved.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\nCOMMIT\n");
        let diffs = LiveRules::parse(&saved).differences(&plan.v4);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(matches!(
            diffs[0],
            Difference::UnexpectedChain(Chain::IstioOutput)
        ));
        assert!(matches!(diffs[1], Difference::ChainRules { .. }));
        assert!(
            diffs[1]
                .to_string()
                .contains("missing:    -A MESHGATE_LOOPBACK_ONLY")
        );
        assert!(matches!(diffs[2], Difference::RepeatedJump(_, 2)));
    }

    #[test]
    fn housekeeping_finds_our_jumps_and_stale_chains_but_not_foreign_rules() {
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     :ISTIO_OUTPUT - [0:0]\n:ISTIO_INBOUND - [0:0]\n:KUBE-X - [0:0]\n\
                     -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT\n\
                     -A OUTPUT -j KUBE-X\n-A ISTIO_OUTPUT -j RETURN\n\
                     -A KUBE-X -j ISTIO_INBOUND\nCOMMIT\n";
        let live = LiveRules::parse(saved);
        let hk = live.housekeeping(&[Chain::IstioOutput]);
        assert_eq!(
            hk.delete_rules,
            [
                (Table::Nat, "PREROUTING -p tcp -j ISTIO_INBOUND".to_owned()),
                (Table::Nat, "OUTPUT -j ISTIO_OUTPUT".to_owned()),
            ]
        );
        assert_eq!(hk.delete_chains, [Chain::IstioInbound]);
        assert!(live.has_ours());
        assert_eq!(live.rule_count(), 5);
    }

    #[test]
    fn normalized_drops_comments_counters_and_empty_tables() {
        let a = LiveRules::parse(
            "# Generated on Monday\n*nat\n:PREROUTING ACCEPT [3:180]\nCOMMIT\n\
             *filter\n:INPUT DROP [0:0]\n-A INPUT -i lo  -j ACCEPT\nCOMMIT\n",
        );
        let b = LiveRules::parse("*filter\n:INPUT DROP [9:9]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n");
        assert_eq!(a.normalized(), b.normalized());
        assert!(!a.normalized().contains("nat"));
    }
}
