//! Istio `security.istio.io/v1` AuthorizationPolicy at the gateway -> [`ir::Authorization`].
//!
//! A policy applies to this gateway when (as Istio selects): its `selector` matches the
//! pod's labels (`--pod-labels`) and it lives in the gateway's namespace (the pod's,
//! `--pod-namespace`, or the served Gateway API Gateway's) or the root namespace; or its
//! `targetRefs` name the served Gateway; or it has neither and lives in one of those
//! namespaces (`istio-system` is the root). Whether the pod serves Gateway API Gateways,
//! Istio Gateways or both does not matter.
//!
//! Fail closed, as Istio does: a DENY policy with a field meshgate cannot evaluate denies
//! everything in its scope; an ALLOW rule with one is dropped (so it allows nothing).
//! Both are reported as errors naming the policy and field.

use std::collections::BTreeMap;

use super::super::{Findings, TranslateOptions};
use super::destination_rule::ROOT_NAMESPACE;
use crate::api::istio::{AuthorizationPolicy, AuthzOperation, AuthzRule, AuthzSource};
use crate::api::{ObjectKey, Snapshot, Unsupported};
use crate::dataplane::authz;
use crate::dataplane::limits::parse_cidr;
use crate::ir;

/// The policies that apply to this gateway: the workload in `--pod-namespace`, serving
/// the Gateway API Gateway `gateway` (namespace, name) if any, Istio Gateways or both;
/// `None` when none does.
pub fn compile(
    snap: &Snapshot,
    opts: &TranslateOptions,
    gateway: Option<(&str, &str)>,
    f: &mut Findings,
) -> Option<ir::Authorization> {
    let workload = Workload {
        namespaces: [opts.pod_namespace.as_deref(), gateway.map(|g| g.0)],
        gateway,
        labels: &opts.pod_labels,
    };
    let mut out = ir::Authorization {
        num_trusted_proxies: opts.num_trusted_proxies,
        ..Default::default()
    };
    let mut policies: Vec<&AuthorizationPolicy> = snap
        .authorization_policies
        .iter()
        .filter(|p| workload.selected_by(p, f))
        .collect();
    policies.sort_by_key(|p| p.metadata.key());
    for p in policies {
        let key = p.metadata.key();
        let ctx = format!("AuthorizationPolicy {key}");
        let action = p.spec.action.as_deref().unwrap_or("ALLOW");
        let deny = match action {
            "ALLOW" => false,
            "DENY" => true,
            other => {
                f.errors.push(format!(
                    "{ctx}: action {other} is not supported by meshgate (ALLOW, DENY are); the policy is left out"
                ));
                continue;
            }
        };
        let mut policy = ir::AuthzPolicy {
            source: ctx.clone(),
            match_all: false,
            rules: Vec::new(),
        };
        let spec_unsupported = report(&ctx, &p.spec.unsupported, f);
        let mut unsupported = spec_unsupported;
        for (i, r) in p.spec.rules.iter().flatten().enumerate() {
            match rule(r, &format!("{ctx} rules[{i}]"), f) {
                Some(r) => policy.rules.push(r),
                None if deny => unsupported = true,
                None => f.errors.push(format!(
                    "{ctx} rules[{i}]: this ALLOW rule is dropped (fail closed): it allows nothing"
                )),
            }
        }
        if deny {
            if unsupported {
                f.errors.push(format!(
                    "{ctx}: this DENY policy fails closed: it denies every request"
                ));
            }
            policy.match_all = unsupported;
            out.deny.push(policy);
        } else {
            if spec_unsupported {
                // An ALLOW policy meshgate cannot fully evaluate allows nothing.
                policy.rules.clear();
            }
            out.allow.push(policy);
        }
    }
    // No policy applies: nothing to evaluate per request.
    (!out.deny.is_empty() || !out.allow.is_empty()).then_some(out)
}

/// What Istio selects a policy by: the workload's namespaces (the pod's, and the served
/// Gateway's, where the gateway runs in Gateway API's deployment), its labels, and the
/// Gateway a `targetRefs` names.
struct Workload<'a> {
    namespaces: [Option<&'a str>; 2],
    gateway: Option<(&'a str, &'a str)>,
    labels: &'a BTreeMap<String, String>,
}

impl Workload<'_> {
    /// Whether `p` applies here (as Istio selects); a policy that would need the
    /// workload's namespace when it is unknown is reported, not applied.
    fn selected_by(&self, p: &AuthorizationPolicy, f: &mut Findings) -> bool {
        let ns = p.metadata.ns();
        let targets: Vec<_> = p
            .spec
            .target_refs
            .iter()
            .chain(&p.spec.target_ref)
            .collect();
        if !targets.is_empty() {
            return self.gateway.is_some_and(|(gw_ns, gw_name)| {
                targets.iter().any(|t| {
                    t.kind == "Gateway"
                        && t.name == gw_name
                        && t.namespace.as_deref().unwrap_or(ns) == gw_ns
                        && ns == gw_ns
                })
            });
        }
        let selected = p.spec.selector.as_ref().is_none_or(|sel| {
            sel.match_labels
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
        });
        let known = self.namespaces.iter().flatten().next().is_some();
        if selected && !known && ns != ROOT_NAMESPACE {
            f.warnings.push(format!(
                "AuthorizationPolicy {}: not applied: the gateway's namespace is unknown \
                 (set --pod-namespace); only {ROOT_NAMESPACE} policies apply",
                p.metadata.key()
            ));
        }
        selected && (ns == ROOT_NAMESPACE || self.namespaces.contains(&Some(ns)))
    }
}

/// Reports unsupported fields; true when there were any.
fn report(ctx: &str, fields: &Unsupported, f: &mut Findings) -> bool {
    f.unsupported(&ctx, fields);
    !fields.is_empty()
}

/// A rule, or `None` when it holds something meshgate cannot evaluate (reported).
fn rule(r: &AuthzRule, ctx: &str, f: &mut Findings) -> Option<ir::AuthzRule> {
    let mut ok = !report(ctx, &r.unsupported, f);
    let mut out = ir::AuthzRule::default();
    for (i, from) in r.from.iter().enumerate() {
        let fctx = format!("{ctx}.from[{i}]");
        ok &= !report(&fctx, &from.unsupported, f);
        match source(&from.source, &format!("{fctx}.source"), f) {
            Some(s) => out.from.push(s),
            None => ok = false,
        }
    }
    for (i, to) in r.to.iter().enumerate() {
        let tctx = format!("{ctx}.to[{i}]");
        ok &= !report(&tctx, &to.unsupported, f);
        match operation(&to.operation, &format!("{tctx}.operation"), f) {
            Some(o) => out.to.push(o),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn cidrs(v: &[String], ctx: &str, field: &str, f: &mut Findings) -> Option<Vec<String>> {
    let mut ok = true;
    for c in v {
        if parse_cidr(c).is_none() {
            f.errors
                .push(format!("{ctx}: {field} {c:?} is not an IP address or CIDR"));
            ok = false;
        }
    }
    ok.then(|| v.to_vec())
}

fn source(s: &AuthzSource, ctx: &str, f: &mut Findings) -> Option<ir::AuthzSource> {
    let supported = !report(ctx, &s.unsupported, f);
    let out = ir::AuthzSource {
        ip_blocks: cidrs(&s.ip_blocks, ctx, "ipBlocks", f)?,
        not_ip_blocks: cidrs(&s.not_ip_blocks, ctx, "notIpBlocks", f)?,
        remote_ip_blocks: cidrs(&s.remote_ip_blocks, ctx, "remoteIpBlocks", f)?,
        not_remote_ip_blocks: cidrs(&s.not_remote_ip_blocks, ctx, "notRemoteIpBlocks", f)?,
    };
    supported.then_some(out)
}

fn ports(v: &[String], ctx: &str, field: &str, f: &mut Findings) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for p in v {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => out.push(n),
            _ => {
                f.errors
                    .push(format!("{ctx}: {field} {p:?} is not a port number"));
                return None;
            }
        }
    }
    Some(out)
}

/// `paths` as given; a path template (`{*}`, `{**}`) must be one Envoy can match.
fn templates(v: &[String], ctx: &str, field: &str, f: &mut Findings) -> Option<Vec<String>> {
    for p in v.iter().filter(|p| authz::is_template(p)) {
        if let Err(why) = authz::check_template(p) {
            f.errors.push(format!(
                "{ctx}: {field} {p:?} is not a valid path template: {why}"
            ));
            return None;
        }
    }
    Some(v.to_vec())
}

fn operation(o: &AuthzOperation, ctx: &str, f: &mut Findings) -> Option<ir::AuthzOperation> {
    let supported = !report(ctx, &o.unsupported, f);
    let lower = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect();
    let out = ir::AuthzOperation {
        hosts: lower(&o.hosts),
        not_hosts: lower(&o.not_hosts),
        ports: ports(&o.ports, ctx, "ports", f)?,
        not_ports: ports(&o.not_ports, ctx, "notPorts", f)?,
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: templates(&o.paths, ctx, "paths", f)?,
        not_paths: templates(&o.not_paths, ctx, "notPaths", f)?,
    };
    supported.then_some(out)
}
