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

/// The backlog of each socket listening on `port` (`ss` shows it as Send-Q), one entry
/// per socket.
fn listen_backlogs(port: u16) -> Vec<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .nth(2)
                .and_then(|q| q.parse().ok())
                .unwrap_or_else(|| panic!("unexpected ss output: {line}"))
        })
        .collect()
}

/// The backlog of the socket(s) listening on `port`: every one has the same.
fn listen_backlog(port: u16) -> u32 {
    let all = listen_backlogs(port);
    assert!(!all.is_empty(), "no listener on {port}");
    assert!(all.iter().all(|b| *b == all[0]), "{all:?}");
    all[0]
}

#[test]
fn each_worker_accepts_on_its_own_socket_of_the_port() {
    for workers in [1, 3] {
        let port = free_port();
        let gw = plain_gateway(port, &["--workers", &workers.to_string()]);
        assert_eq!(
            listen_backlogs(port).len(),
            workers,
            "--workers {workers}: one listening socket per worker"
        );
        // Connections land on every socket the kernel picks and all are served.
        // (The route has no backend: 500 is the gateway's own answer.)
        for _ in 0..20 {
            let r = curl(&[&format!("http://127.0.0.1:{port}/")]);
            assert_eq!(r.status, 500, "{r:?}");
            assert!(r.body.starts_with("500 no_backend"), "{r:?}");
        }
        drop(gw);
    }
}

/// A Gateway with an HTTP listener on each of `ports` and a route attached to all.
fn gateway_on_ports(ports: &[u16]) -> String {
    let listeners: String = ports
        .iter()
        .map(|p| format!("    - {{name: http-{p}, port: {p}, protocol: HTTP}}\n"))
        .collect();
    docs(&[
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: default}}\nspec:\n  \
             gatewayClassName: meshgate\n  listeners:\n{listeners}"
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
    ])
}

#[test]
fn a_port_added_at_runtime_gets_a_socket_per_worker_and_a_removed_one_closes_them_all() {
    let (first, second) = (free_port(), free_port());
    let gw = Gateway::start_with(&gateway_on_ports(&[first]), &["--workers", "2"]);
    assert_eq!(listen_backlogs(first).len(), 2);
    assert!(listen_backlogs(second).is_empty());

    gw.write_config(&gateway_on_ports(&[first, second]));
    eventually("the added port listening on both workers' sockets", || {
        listen_backlogs(second).len() == 2
    });
    let r = curl(&[&format!("http://127.0.0.1:{second}/")]);
    assert_eq!(r.status, 500, "{r:?}");

    gw.write_config(&gateway_on_ports(&[second]));
    eventually("every socket of the removed port closed", || {
        listen_backlogs(first).is_empty()
    });
    let refused = std::net::TcpStream::connect(("127.0.0.1", first)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(
        listen_backlogs(second).len(),
        2,
        "the other port keeps serving"
    );
    let r = curl(&[&format!("http://127.0.0.1:{second}/")]);
    assert_eq!(r.status, 500, "{r:?}");
}

#[test]
fn a_port_held_by_another_socket_is_not_shared_with_it() {
    // SO_REUSEPORT joins only sockets that all set it: a port another program holds
    // stays its own, and the listener is reported unbound.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let config = docs(&[&http_gateway(port)]);
    let gw = Gateway::start_waiting_for(&config, &["--workers", "2"], "/healthz");
    let bound = || {
        let dump: serde_json::Value =
            serde_json::from_str(&gw.admin_get("/config_dump").1).unwrap();
        dump["listeners"][port.to_string()]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    eventually("the bind failure is reported", || {
        bound() == format!("cannot bind 0.0.0.0:{port}: Address already in use (os error 98)")
    });
    assert_eq!(gw.admin_get("/ready").0, 503);
    assert_eq!(listen_backlogs(port).len(), 1, "only the holder listens");
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

/// The metrics server is reachable from other pods, so it is bounded: past 32
/// connections a new one is closed at once, and a connection that never finishes its
/// request's headers is closed at the header read timeout (10 s), freeing its slot.
#[test]
fn the_stats_server_caps_its_connections_and_closes_a_stalled_one() {
    use std::io::Write;
    let stats = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stats_arg = stats.to_string();
    let _gw = Gateway::start_with(
        &docs(&[&http_gateway(free_port())]),
        &["--stats-addr", &stats_arg],
    );
    let ok = curl(&[&format!("http://{stats}/stats/prometheus")]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        ok.body.contains("gateway_downstream_connections_total"),
        "{}",
        ok.body
    );
    let mut stalled: Vec<std::net::TcpStream> = (0..32)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(stats).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut over = std::net::TcpStream::connect(stats).unwrap();
    let _ = over.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        wait_closed(&mut over, std::time::Duration::from_secs(5)),
        Ended::ClosedSilently,
        "the 33rd connection"
    );
    assert_eq!(
        wait_closed(&mut stalled[0], std::time::Duration::from_secs(30)),
        Ended::ClosedSilently,
        "a stalled request is closed at the header read timeout"
    );
    wait_for(
        "a slot free again",
        std::time::Duration::from_secs(30),
        || curl(&[&format!("http://{stats}/metrics")]).status == 200,
    );
}
