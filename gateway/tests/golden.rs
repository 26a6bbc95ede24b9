//! Golden tests: Gateway API YAML in, the IR (JSON, as `/config_dump` shows it) out; YAML
//! in, exact error messages out; and YAML in, per-object conditions (what `gateway
//! validate` prints and the Kubernetes provider writes as status) out.
//! `UPDATE_GOLDEN=1 cargo test -p gateway --test golden` rewrites the expected files
//! after a deliberate change.

use std::path::PathBuf;

use gateway::providers::file::{SourceFile, parse};
use gateway::translate::{TranslateOptions, translate};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn compile_file(path: &std::path::Path) -> Result<gateway::ir::Config, Vec<String>> {
    compile_file_with(path, &TranslateOptions::default())
}

fn compile_file_with(
    path: &std::path::Path,
    opts: &TranslateOptions,
) -> Result<gateway::ir::Config, Vec<String>> {
    let out = translate_file(path, opts)?;
    if !out.errors.is_empty() {
        return Err(out.errors);
    }
    out.accepted().map(|(config, _)| config).map_err(|e| e.0)
}

/// Parses and translates a file; `Err` only when it cannot be parsed.
fn translate_file(
    path: &std::path::Path,
    opts: &TranslateOptions,
) -> Result<gateway::translate::Output, Vec<String>> {
    gateway::install_crypto_provider();
    let content = std::fs::read_to_string(path).unwrap();
    let source = SourceFile {
        path: PathBuf::from(path.file_name().unwrap()),
        content,
    };
    let snap = parse(&[source]).map_err(|e| e.0)?;
    Ok(translate(&snap, opts))
}

/// YAML in, conditions per object out (`<name>.status.json`), plus the IR of what is
/// still served (`<name>.json`): the invalid parts are left out, the rest is served.
fn status_golden(name: &str) {
    let dir = golden_dir().join("status");
    let out = translate_file(
        &dir.join(format!("{name}.yaml")),
        &TranslateOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}.yaml does not parse:\n{}", e.join("\n")));
    let status = serde_json::to_string_pretty(&out.status).unwrap() + "\n";
    check(dir.join(format!("{name}.status.json")), status);
    let (config, _) = out
        .accepted()
        .expect("per-object acceptance keeps the rest");
    let json = serde_json::to_string_pretty(&config).unwrap() + "\n";
    check(dir.join(format!("{name}.json")), json);
}

fn check(expected_path: PathBuf, actual: String) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "{} missing; run with UPDATE_GOLDEN=1 to create it. Actual:\n{actual}",
            expected_path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        expected_path.display()
    );
}

fn table_golden(name: &str) {
    let dir = golden_dir();
    let table = compile_file(&dir.join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}.yaml rejected:\n{}", e.join("\n")));
    let json = serde_json::to_string_pretty(&table).unwrap() + "\n";
    check(dir.join(format!("{name}.json")), json);
}

fn error_golden(name: &str) {
    let dir = golden_dir().join("errors");
    let errors = match compile_file(&dir.join(format!("{name}.yaml"))) {
        Ok(_) => panic!("{name}.yaml was accepted but must be rejected"),
        Err(e) => e,
    };
    check(dir.join(format!("{name}.txt")), errors.join("\n") + "\n");
}

#[test]
fn listener_and_route_hostnames_intersect_exact_and_wildcard() {
    table_golden("host_routing");
}

#[test]
fn path_header_query_and_method_matches_sort_by_gateway_api_precedence() {
    table_golden("path_header_query_method_precedence");
}

#[test]
fn header_modifiers_redirects_and_url_rewrites_compile() {
    table_golden("filters");
}

#[test]
fn weighted_backends_resolve_through_endpoint_slices_dns_or_unresolvable() {
    table_golden("weighted_backends");
}

#[test]
fn https_listeners_pick_certificates_by_hostname_with_mutual_tls() {
    table_golden("https_listeners");
}

#[test]
fn misspelled_path_type_is_rejected_naming_route_and_field() {
    error_golden("bad_path_type");
}

#[test]
fn every_mistake_in_a_config_is_reported_at_once() {
    error_golden("many_mistakes");
}

#[test]
fn malformed_yaml_is_rejected_with_file_and_document() {
    error_golden("not_yaml");
}

#[test]
fn mesh_upstreams_get_mtls_per_endpoint_label_and_per_service_annotation() {
    let dir = golden_dir();
    let opts = TranslateOptions {
        upstream_tls: gateway::translate::UpstreamTls::Auto,
        ..TranslateOptions::default()
    };
    let table = compile_file_with(&dir.join("mesh_upstreams.yaml"), &opts)
        .unwrap_or_else(|e| panic!("mesh_upstreams.yaml rejected:\n{}", e.join("\n")));
    assert!(table.mesh_upstreams);
    let json = serde_json::to_string_pretty(&table).unwrap() + "\n";
    check(dir.join("mesh_upstreams.json"), json);
}

#[test]
fn invalid_mesh_annotations_are_rejected_naming_service_and_annotation() {
    error_golden("bad_mesh_annotations");
}

#[test]
fn listener_frontend_validation_and_unknown_fields_are_rejected_by_name() {
    error_golden("listener_frontend_validation");
}

#[test]
fn listener_conditions_name_each_reason_and_valid_listeners_are_still_served() {
    status_golden("listeners");
}

#[test]
fn routes_attached_to_an_unprogrammed_listener_or_themselves_invalid_are_counted() {
    status_golden("unresolved_attached");
}

#[test]
fn invalid_rules_beside_valid_ones_are_dropped_and_an_extension_ref_answers_500() {
    status_golden("partial_routes");
}

#[test]
fn route_conditions_per_parent_and_unresolved_refs_keep_the_route_accepted() {
    status_golden("routes");
}

/// Traffic policy goldens live in `golden/policy/`: `<name>.yaml` -> `<name>.json`, or
/// -> `<name>.txt` (the exact errors) for invalid ones.
fn policy_golden(name: &str) {
    let dir = golden_dir().join("policy");
    let table = compile_file(&dir.join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("{name}.yaml rejected:\n{}", e.join("\n")));
    let json = serde_json::to_string_pretty(&table).unwrap() + "\n";
    check(dir.join(format!("{name}.json")), json);
}

fn policy_error_golden(name: &str) {
    let dir = golden_dir().join("policy");
    let errors = match compile_file(&dir.join(format!("{name}.yaml"))) {
        Ok(_) => panic!("{name}.yaml was accepted but must be rejected"),
        Err(e) => e,
    };
    check(dir.join(format!("{name}.txt")), errors.join("\n") + "\n");
}

#[test]
fn route_retry_compiles_codes_attempts_backoff_and_the_budget() {
    policy_golden("retry");
}

#[test]
fn invalid_retry_values_name_the_route_rule_and_field() {
    policy_error_golden("bad_retry");
}

#[test]
fn destination_rules_apply_by_istio_lookup_order_and_export_to() {
    policy_golden("destination_rule");
}

#[test]
fn invalid_destination_rules_name_the_rule_and_field() {
    policy_error_golden("bad_destination_rule");
}

#[test]
fn local_rate_limits_attach_to_routes_with_the_route_policy_winning() {
    policy_golden("rate_limit");
}

#[test]
fn invalid_rate_limit_policies_name_the_policy_and_field() {
    policy_error_golden("bad_rate_limit");
}

/// The AuthorizationPolicy golden: the gateway pod is labelled `istio=ingressgateway`
/// and trusts one proxy in front of it. The IR shows what applies; the errors, how
/// unsupported fields fail closed.
#[test]
fn authorization_policies_select_the_gateway_and_fail_closed() {
    let dir = golden_dir().join("policy");
    let opts = TranslateOptions {
        pod_labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        num_trusted_proxies: 1,
        ..TranslateOptions::default()
    };
    let out = translate_file(&dir.join("authorization.yaml"), &opts).unwrap();
    check(dir.join("authorization.txt"), out.errors.join("\n") + "\n");
    let (config, _) = out.accepted().unwrap();
    let json = serde_json::to_string_pretty(&config.authorization).unwrap() + "\n";
    check(dir.join("authorization.json"), json);
}

/// A pod that serves only Istio Gateways: policies select it by `--pod-namespace` (or
/// the root namespace) and its labels (the IR); without `--pod-namespace`, the policy
/// that needed it is reported, not applied (the warnings).
#[test]
fn authorization_policies_select_a_pod_serving_only_istio_gateways_by_its_namespace() {
    let dir = golden_dir().join("policy");
    let file = dir.join("authorization_istio_only.yaml");
    let mut opts = TranslateOptions {
        pod_labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        pod_namespace: Some("ingress".into()),
        ..TranslateOptions::default()
    };
    let out = translate_file(&file, &opts).unwrap();
    let (config, _) = out.accepted().unwrap();
    let json = serde_json::to_string_pretty(&config.authorization).unwrap() + "\n";
    check(dir.join("authorization_istio_only.json"), json);
    opts.pod_namespace = None;
    let out = translate_file(&file, &opts).unwrap();
    let (config, _) = out.accepted().unwrap();
    let warnings = config.warnings.join("\n") + "\n";
    check(dir.join("authorization_istio_only.warnings.txt"), warnings);
    let json = serde_json::to_string_pretty(&config.authorization).unwrap() + "\n";
    check(dir.join("authorization_istio_only.no_namespace.json"), json);
}

/// A golden of one dialect: `golden/<dir>/<name>.yaml` translated with `opts` -> every
/// error and warning (`.errors.txt`), the conditions of each object (`.status.json`) and
/// the IR of what is served (`.json`).
fn dialect_golden(dir: &str, name: &str, opts: &TranslateOptions) {
    let dir = golden_dir().join(dir);
    let out = translate_file(&dir.join(format!("{name}.yaml")), opts)
        .unwrap_or_else(|e| panic!("{name}.yaml does not parse:\n{}", e.join("\n")));
    let status = serde_json::to_string_pretty(&out.status).unwrap() + "\n";
    check(dir.join(format!("{name}.status.json")), status);
    let errors = out.errors.join("\n") + "\n";
    check(dir.join(format!("{name}.errors.txt")), errors);
    let (config, _) = out
        .accepted()
        .expect("per-object acceptance keeps the rest");
    let json = serde_json::to_string_pretty(&config).unwrap() + "\n";
    check(dir.join(format!("{name}.json")), json);
}

/// TCP, TLS Passthrough and TLS Terminate listeners and their routes.
fn l4_golden(name: &str) {
    dialect_golden("l4", name, &TranslateOptions::default());
}

#[test]
fn tcp_and_tls_routes_attach_by_listener_and_sni_with_the_oldest_route_winning() {
    l4_golden("l4_routes");
}

#[test]
fn tcp_and_tls_listener_and_route_mistakes_are_refused_alone_by_name() {
    l4_golden("l4_refusals");
}

/// The Istio dialect, compiled for a pod labelled `istio=ingressgateway` in
/// `istio-system`.
fn istio_golden(name: &str) {
    let opts = TranslateOptions {
        pod_labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        pod_namespace: Some("istio-system".into()),
        ..TranslateOptions::default()
    };
    dialect_golden("istio", name, &opts);
}

#[test]
fn istio_gateway_and_virtual_services_compile_the_seed_walkthroughs() {
    istio_golden("istio_seed");
}

#[test]
fn destination_rule_simple_and_mutual_tls_read_credentials_from_the_pod_namespace() {
    istio_golden("destination_rule_tls");
}

#[test]
fn istio_tls_and_tcp_matches_apply_per_match_by_port_and_gateways() {
    istio_golden("istio_l4_matches");
}

#[test]
fn destination_rules_of_one_host_and_namespace_are_merged_as_istio_merges_them() {
    istio_golden("destination_rule_merge");
}

#[test]
fn istio_fields_meshgate_does_not_implement_are_refused_by_name() {
    istio_golden("istio_refusals");
}

#[test]
fn gloo_virtual_services_and_upstreams_compile_with_unsupported_options_named() {
    dialect_golden("gloo", "gloo_walkthrough", &TranslateOptions::default());
}

#[test]
fn client_traffic_policies_set_the_proxy_protocol_per_port_oldest_first() {
    policy_golden("client_traffic");
}

#[test]
fn invalid_client_traffic_policies_name_the_policy_and_field() {
    policy_error_golden("bad_client_traffic");
}
