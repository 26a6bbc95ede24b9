//! The admin server's guard rails (read-only, a warning when bound off loopback) and the
//! listener ports' backlog (`--listen-backlog`), read back from the kernel with `ss`.

mod support;

use support::*;

fn plain_gateway(port: u16, args: &[&str]) -> Gateway {
    Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        args,
    )
}

#[test]
fn admin_refuses_every_method_but_get_with_405() {
    let gw = plain_gateway(free_port(), &[]);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = curl(&["-X", method, &format!("http://{}/config_dump", gw.admin)]);
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.body, "the admin API is read-only: use GET\n");
    }
    assert_eq!(gw.admin_get("/config_dump").0, 200);
}

#[test]
fn admin_bound_off_loopback_logs_a_warning() {
    let admin = format!("0.0.0.0:{}", free_port());
    let gw = plain_gateway(free_port(), &["--admin-addr", &admin]);
    gw.wait_log("the admin server is bound off loopback");
    // A loopback-bound admin (the default) does not warn.
    let quiet = plain_gateway(free_port(), &[]);
    assert!(
        !quiet.log().contains("bound off loopback"),
        "{}",
        quiet.log()
    );
}

/// The backlog of the socket listening on `port` (`ss` shows it as Send-Q).
fn listen_backlog(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ss output: {line}"))
}

#[test]
fn listen_backlog_is_configurable_and_defaults_to_1024() {
    let port = free_port();
    let _gw = plain_gateway(port, &["--listen-backlog", "77"]);
    assert_eq!(listen_backlog(port), 77);
    let port = free_port();
    let _gw = plain_gateway(port, &[]);
    // The kernel caps the backlog at net.core.somaxconn.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(listen_backlog(port), 1024.min(somaxconn));
}
