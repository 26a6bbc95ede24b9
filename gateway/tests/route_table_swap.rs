//! Swapping large route tables under load: the real gateway binary (file provider) is
//! switched back and forth between two configurations of 10,000 HTTPRoutes each while
//! clients send requests on keep-alive connections without pause; not one request may
//! fail. No timing is asserted (`scripts/bench --routes` and `examples/bench_routes.rs`
//! measure the cost).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::*;

const ROUTES: usize = 10_000;
const SWAPS: usize = 4;
const CLIENTS: usize = 4;

/// The Gateway, the upstream Service and the route the clients use (in every version),
/// plus `routes` HTTPRoutes named `<prefix><i>` for hosts `<prefix><i>.example.com`
/// (every tenth a wildcard), each with a header-matched rule and a catch-all.
fn config(port: u16, upstream: u16, prefix: &str, routes: usize) -> String {
    let mut docs_out = vec![
        http_gateway(port),
        local_service("upstream", upstream),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: steady, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  hostnames: [steady.example.com]\n\
         \x20 rules: [{backendRefs: [{name: upstream, port: 80}]}]\n"
            .to_string(),
    ];
    for i in 0..routes {
        let host = if i % 10 == 5 {
            format!("\"*.{prefix}{i}.example.com\"")
        } else {
            format!("{prefix}{i}.example.com")
        };
        docs_out.push(format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {prefix}{i}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [{host}]\n  rules:\n\
             \x20   - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-variant, value: canary}}]}}]\n\
             \x20     backendRefs: [{{name: upstream, port: 80}}]\n\
             \x20   - backendRefs: [{{name: upstream, port: 80}}]\n"
        ));
    }
    docs_out.join("---\n")
}

/// Sends GETs for `host` on one keep-alive connection (a new one only after the gateway
/// closes it) until `stop`; counts answers that are not 200 and broken exchanges.
fn load(port: u16, host: &str, stop: &AtomicBool, ok: &AtomicU64, failed: &AtomicU64) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => {
                let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                conn.insert(BufReader::new(s))
            }
        };
        match exchange(c, host) {
            Ok((200, keep_alive)) => {
                ok.fetch_add(1, Ordering::Relaxed);
                if !keep_alive {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                eprintln!("{host}: status {status}");
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(e) => {
                eprintln!("{host}: {e}");
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// One request and its whole response: (status, whether the connection stays open).
fn exchange(c: &mut BufReader<TcpStream>, host: &str) -> std::io::Result<(u16, bool)> {
    write!(c.get_mut(), "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    let mut line = String::new();
    if c.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed before a response"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut keep_alive) = (0usize, true);
    loop {
        line.clear();
        c.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
            keep_alive = false;
        }
    }
    c.read_exact(&mut vec![0; length])?;
    Ok((status, keep_alive))
}

#[test]
fn swapping_two_10k_route_tables_under_load_fails_no_request() {
    let upstream = hyper_upstream(b"ok\n");
    let port = free_port();
    let gw = Gateway::start(&config(port, upstream, "a", 0));
    let versions = [
        config(port, upstream, "a", ROUTES),
        config(port, upstream, "b", ROUTES),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The clients ask for the route every version has, looked up in the 10k-host table.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || load(port, "steady.example.com", &stop, &ok, &failed))
        })
        .collect();
    wait_for(
        "the clients' first answers",
        Duration::from_secs(10),
        || ok.load(Ordering::Relaxed) > 0,
    );
    let mut reloads = gw.metric("gateway_config_reloads_total");
    for swap in 0..SWAPS {
        let before = ok.load(Ordering::Relaxed);
        gw.write_config(&versions[swap % 2]);
        reloads += 1.0;
        gw.wait_metric("gateway_config_reloads_total", reloads);
        // The new table serves its own hosts and no longer the other table's.
        let (own, other) = if swap % 2 == 0 {
            ("a", "b")
        } else {
            ("b", "a")
        };
        let status = |host: &str| {
            let mut c = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
            exchange(&mut c, host).unwrap().0
        };
        assert_eq!(status(&format!("{own}{}.example.com", ROUTES - 1)), 200);
        assert_eq!(status(&format!("x.{own}{}.example.com", ROUTES - 5)), 200);
        assert_eq!(status(&format!("{other}{}.example.com", ROUTES - 1)), 404);
        wait_for(
            "requests served after the swap",
            Duration::from_secs(10),
            || ok.load(Ordering::Relaxed) > before,
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} requests answered 200 across {SWAPS} swaps of {ROUTES} routes");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the swaps; gateway log:\n{}",
        ok + failed,
        gw.log()
    );
}
