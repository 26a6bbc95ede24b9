//! Real traffic through the rules `gateway-init` programs: the real binary runs inside a
//! "pod" network namespace joined to a "client" namespace by a veth pair; listeners stand
//! in for the gateway (edge port), the sidecar (15006 inbound, 15001 outbound), the admin
//! ports and an upstream. Needs root, so every test is `#[ignore]`d: `scripts/test` runs
//! them with `--include-ignored` when root (CI is), and elsewhere they show as ignored.
//! Needs `ip` (iproute2), iptables (nft and legacy), `setpriv`, `timeout` and `bash`.

#[path = "support/cases.rs"]
mod cases;
#[path = "support/netns.rs"]
mod netns;

use std::io::ErrorKind;
use std::process::Output;

use gateway_init::live::LiveRules;
use netns::{
    CLIENT_V4, CLIENT_V6, Listener, Netns, POD_V4, POD_V6, PodAndClient, connect, connect_as, must,
    require_root,
};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-init");

/// An ordinary (non-proxy) user id for outbound connections.
const APP_UID: u32 = 1000;

/// Runs gateway-init inside `ns`.
fn gateway_init(ns: &Netns, args: &[&str]) -> Output {
    ns.command(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run gateway-init")
}

/// Runs gateway-init inside `ns` and insists it succeeds.
fn gateway_init_ok(ns: &Netns, args: &[&str]) {
    let out = gateway_init(ns, args);
    assert!(
        out.status.success(),
        "gateway-init {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every rule of both families under one backend, comments and counters dropped.
fn snapshot(ns: &Netns, backend: &str) -> String {
    let v4 = LiveRules::parse(&ns.save(&format!("iptables-{backend}-save")));
    let v6 = LiveRules::parse(&ns.save(&format!("ip6tables-{backend}-save")));
    format!("# ipv4\n{}# ipv6\n{}", v4.normalized(), v6.normalized())
}

fn url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn sidecar_mode_edge_port_reaches_gateway_directly_and_other_ports_land_on_15006() {
    require_root();
    let net = PodAndClient::new();
    let _gateway = Listener::start(&net.pod, "gateway", "[::]:8080");
    let _app = Listener::start(&net.pod, "app", "[::]:7070");
    let _inbound = Listener::start(&net.pod, "sidecar-inbound", "[::]:15006");

    // Before: nothing is captured.
    assert_eq!(
        connect(&net.client, &url(POD_V4, 7070)).unwrap(),
        "app port=7070 orig=-"
    );

    gateway_init_ok(&net.pod, &["--mode", "sidecar", "--ipv6", "true"]);
    // The sidecar's IPv6 inbound passthrough source is on lo.
    let lo = must(
        net.pod
            .command("ip")
            .args(["-6", "addr", "show", "dev", "lo"]),
    )
    .stdout;
    assert!(String::from_utf8_lossy(&lo).contains("inet6 ::6/128"));

    for pod in [POD_V4, POD_V6] {
        let edge = connect(&net.client, &url(pod, 8080)).unwrap();
        assert_eq!(edge, "gateway port=8080 orig=-", "edge port via {pod}");
        let other = connect(&net.client, &url(pod, 7070)).unwrap();
        assert_eq!(
            other,
            format!("sidecar-inbound port=15006 orig={}", url(pod, 7070)),
            "other port via {pod}"
        );
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn sidecar_mode_outbound_from_ordinary_uid_lands_on_15001_and_from_proxy_uid_goes_out_directly() {
    require_root();
    let net = PodAndClient::new();
    let _outbound = Listener::start(&net.pod, "sidecar-outbound", "[::]:15001");
    let _upstream = Listener::start(&net.client, "upstream", "[::]:9000");

    gateway_init_ok(&net.pod, &["--mode", "sidecar", "--ipv6", "true"]);

    for upstream in [CLIENT_V4, CLIENT_V6] {
        let app = connect_as(&net.pod, APP_UID, APP_UID, upstream, 9000).unwrap();
        assert_eq!(
            app,
            format!("sidecar-outbound port=15001 orig={}", url(upstream, 9000)),
            "uid {APP_UID} to {upstream}"
        );
        let proxy = connect_as(&net.pod, 1337, 1337, upstream, 9000).unwrap();
        assert_eq!(proxy, "upstream port=9000 orig=-", "uid 1337 to {upstream}");
    }
    // The proxy's gid alone also bypasses capture.
    let by_gid = connect_as(&net.pod, APP_UID, 1337, CLIENT_V4, 9000).unwrap();
    assert_eq!(by_gid, "upstream port=9000 orig=-");
    // Loopback traffic of the application is not captured.
    let _local = Listener::start(&net.pod, "local", "127.0.0.1:7000");
    assert_eq!(
        connect_as(&net.pod, APP_UID, APP_UID, "127.0.0.1", 7000).unwrap(),
        "local port=7000 orig=-"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn native_mode_admin_port_is_refused_from_client_and_answers_on_loopback() {
    require_root();
    let net = PodAndClient::new();
    let _admin = Listener::start(&net.pod, "gateway-admin", "[::]:19000");
    let _sds_admin = Listener::start(&net.pod, "sds-agent-admin", "[::]:15030");
    let _gateway = Listener::start(&net.pod, "gateway", "[::]:8080");

    // Before: the admin port is reachable from outside.
    assert!(connect(&net.client, &url(POD_V4, 19000)).is_ok());

    gateway_init_ok(&net.pod, &["--mode", "native", "--ipv6", "true"]);

    for pod in [POD_V4, POD_V6] {
        for port in [19000, 15030] {
            let err = connect(&net.client, &url(pod, port)).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::ConnectionRefused,
                "{pod}:{port}: {err}"
            );
        }
        // Edge traffic passes, not redirected.
        assert_eq!(
            connect(&net.client, &url(pod, 8080)).unwrap(),
            "gateway port=8080 orig=-"
        );
    }
    for local in ["127.0.0.1", "::1", POD_V4] {
        assert_eq!(
            connect(&net.pod, &url(local, 19000)).unwrap(),
            "gateway-admin port=19000 orig=-",
            "loopback connection to {local}"
        );
    }
    // Native mode adds no nat rules at all.
    assert!(!net.pod.save("iptables-save").contains("ISTIO_"));
}

/// Rules another tool put in the pod before gateway-init: they must survive everything.
fn add_foreign_rules(ns: &Netns, backend: &str) {
    for family in ["iptables", "ip6tables"] {
        let rules: [&[&str]; 4] = [
            &[
                "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT",
            ],
            &["-t", "nat", "-N", "OTHER_TOOL"],
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--dport",
                "2525",
                "-j",
                "OTHER_TOOL",
            ],
            &["-t", "nat", "-A", "OTHER_TOOL", "-j", "RETURN"],
        ];
        for rule in rules {
            must(
                ns.command(format!("{family}-{backend}"))
                    .arg("-w")
                    .args(rule),
            );
        }
    }
}

fn apply_twice_verify_and_clean_up(backend: &str) {
    let pod = Netns::new("pod");
    add_foreign_rules(&pod, backend);
    let original = snapshot(&pod, backend);
    let be = ["--backend", backend, "--ipv6", "true"];
    let sidecar: Vec<&str> = [&["--mode", "sidecar"][..], &be].concat();

    // --dry-run changes nothing.
    gateway_init_ok(&pod, &[&sidecar[..], &["--dry-run"]].concat());
    assert_eq!(snapshot(&pod, backend), original, "--dry-run changed rules");

    // Apply twice: the same rules, each jump once.
    gateway_init_ok(&pod, &sidecar);
    let once = snapshot(&pod, backend);
    gateway_init_ok(&pod, &sidecar);
    assert_eq!(snapshot(&pod, backend), once, "second apply changed rules");
    let saved = pod.save(&format!("iptables-{backend}-save"));
    for jump in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A INPUT -p tcp -j MESHGATE_LOOPBACK_ONLY",
    ] {
        assert_eq!(
            saved.lines().filter(|l| *l == jump).count(),
            1,
            "{jump}\n{saved}"
        );
    }
    gateway_init_ok(&pod, &[&sidecar[..], &["--verify"]].concat());

    // Drift is caught, and re-applying repairs it.
    must(pod.command(format!("iptables-{backend}")).args([
        "-w",
        "-t",
        "nat",
        "-D",
        "ISTIO_OUTPUT",
        "-d",
        "127.0.0.1/32",
        "-j",
        "RETURN",
    ]));
    let drift = gateway_init(&pod, &[&sidecar[..], &["--verify"]].concat());
    assert_eq!(drift.status.code(), Some(3), "{drift:?}");
    assert!(
        String::from_utf8_lossy(&drift.stderr)
            .contains("missing:    -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
    );
    gateway_init_ok(&pod, &sidecar);
    gateway_init_ok(&pod, &[&sidecar[..], &["--verify"]].concat());

    // Switching mode removes the chains the new plan does not use.
    let native: Vec<&str> = [&["--mode", "native"][..], &be].concat();
    gateway_init_ok(&pod, &native);
    gateway_init_ok(&pod, &[&native[..], &["--verify"]].concat());
    assert!(
        !pod.save(&format!("iptables-{backend}-save"))
            .contains("ISTIO_")
    );

    // Cleanup restores the original rules exactly.
    gateway_init_ok(&pod, &[&sidecar[..], &["--cleanup"]].concat());
    assert_eq!(
        snapshot(&pod, backend),
        original,
        "--cleanup left a difference"
    );
    let after = gateway_init(&pod, &[&sidecar[..], &["--verify"]].concat());
    assert_eq!(after.status.code(), Some(3));
    // Cleanup of a clean namespace is a no-op.
    gateway_init_ok(&pod, &[&sidecar[..], &["--cleanup"]].concat());
    assert_eq!(snapshot(&pod, backend), original);
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn apply_twice_then_verify_passes_and_cleanup_restores_the_original_rules_nft() {
    require_root();
    apply_twice_verify_and_clean_up("nft");
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn apply_twice_then_verify_passes_and_cleanup_restores_the_original_rules_legacy() {
    require_root();
    apply_twice_verify_and_clean_up("legacy");
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn auto_backend_follows_the_backend_that_holds_rules() {
    require_root();
    for (holder, other) in [("legacy", "nft"), ("nft", "legacy")] {
        let pod = Netns::new("pod");
        add_foreign_rules(&pod, holder);
        gateway_init_ok(&pod, &["--mode", "sidecar", "--ipv6", "true"]);
        assert!(
            pod.save(&format!("iptables-{holder}-save"))
                .contains("-j ISTIO_OUTPUT"),
            "rules not in the {holder} backend that holds the pod's rules"
        );
        assert!(
            !pod.save(&format!("iptables-{other}-save"))
                .contains("ISTIO_"),
            "rules leaked into the {other} backend"
        );
        gateway_init_ok(&pod, &["--mode", "sidecar", "--ipv6", "true", "--verify"]);
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn a_failing_restore_is_rolled_back_and_reported() {
    require_root();
    for backend in ["nft", "legacy"] {
        let pod = Netns::new("pod");
        add_foreign_rules(&pod, backend);
        let native = ["--mode", "native", "--backend", backend, "--ipv6", "true"];
        gateway_init_ok(&pod, &native);
        let before = snapshot(&pod, backend);

        // An ip6tables-restore that always fails: IPv4 is applied first, then must be undone.
        let fake = tempfile::tempdir().unwrap();
        let script = fake.path().join(format!("ip6tables-{backend}-restore"));
        let failing = "#!/bin/sh\necho 'ip6tables-restore: simulated failure' >&2\nexit 2\n";
        std::fs::write(&script, failing).unwrap();
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&script, executable).unwrap();
        let path = format!(
            "{}:{}",
            fake.path().display(),
            std::env::var("PATH").unwrap()
        );
        let out = pod
            .command(BIN)
            .args(["--mode", "sidecar", "--backend", backend, "--ipv6", "true"])
            .env("PATH", path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(stderr.contains("simulated failure"), "{backend}: {stderr}");
        assert!(
            stderr.contains("ipv4 restored as it was"),
            "{backend}: {stderr}"
        );
        assert_eq!(
            snapshot(&pod, backend),
            before,
            "{backend}: rollback left a difference"
        );
        gateway_init_ok(&pod, &[&native[..], &["--verify"]].concat());
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn a_restore_that_fails_half_way_through_a_family_is_rolled_back() {
    require_root();
    for backend in ["nft", "legacy"] {
        let pod = Netns::new("pod");
        let be = ["--backend", backend, "--ipv6", "false"];
        gateway_init_ok(&pod, &[&["--mode", "native"][..], &be].concat());
        // Another tool's chain refers to ours, so ours cannot be deleted: the filter part
        // of the next restore fails after its nat part was committed.
        let iptables = || {
            let mut cmd = pod.command(format!("iptables-{backend}"));
            cmd.arg("-w");
            cmd
        };
        must(iptables().args(["-N", "OTHER_TOOL"]));
        must(iptables().args(["-A", "OTHER_TOOL", "-j", "MESHGATE_LOOPBACK_ONLY"]));
        let before = snapshot(&pod, backend);

        let sidecar_without_admin_ports =
            [&["--mode", "sidecar", "--loopback-only-ports", ""][..], &be].concat();
        let out = gateway_init(&pod, &sidecar_without_admin_ports);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {stderr}");
        assert!(
            stderr.contains("-X MESHGATE_LOOPBACK_ONLY"),
            "{backend}: {stderr}"
        );
        assert!(
            stderr.contains("ipv4 restored as it was"),
            "{backend}: {stderr}"
        );
        assert_eq!(
            snapshot(&pod, backend),
            before,
            "{backend}: the nat part stayed applied"
        );
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn every_golden_case_applies_and_verifies_on_both_backends() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    for backend in ["nft", "legacy"] {
        let pod = Netns::new("pod");
        let original = snapshot(&pod, backend);
        for case in cases::CASES {
            let mut args: Vec<String> = case.args.iter().map(|a| a.to_string()).collect();
            args.extend(["--backend", backend, "--ipv6", "true"].map(String::from));
            if let Some(text) = case.annotations {
                let file = dir.path().join(format!("{}.annotations", case.name));
                std::fs::write(&file, text).unwrap();
                args.extend(["--annotations-file".into(), file.display().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gateway_init_ok(&pod, &args);
            let verify = gateway_init(&pod, &[&args[..], &["--verify"]].concat());
            assert!(
                verify.status.success(),
                "{backend} {}: {}",
                case.name,
                String::from_utf8_lossy(&verify.stderr)
            );
        }
        gateway_init_ok(&pod, &["--cleanup", "--backend", backend, "--ipv6", "true"]);
        assert_eq!(snapshot(&pod, backend), original, "{backend}");
    }
}

#[test]
#[ignore = "needs root: creates network namespaces and iptables rules (scripts/test runs it as root)"]
fn missing_iptables_and_missing_net_admin_are_reported() {
    require_root();
    let pod = Netns::new("pod");
    let out = pod
        .command(BIN)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("iptables is not installed"), "{stderr}");

    let out = pod
        .command("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            BIN,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
}
