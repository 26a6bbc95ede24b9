//! The memory a burst of connections took goes back to the OS once they close
//! (`--memory-release-interval`), with the real binary and its allocator (mimalloc): a
//! quiet worker makes no allocator calls, and without the release its freed pages stayed
//! resident until the next traffic.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

/// Connections in the burst: each holds its task and hyper's read and write buffers.
const BURST: usize = 400;

/// The process's anonymous resident memory (heap, stacks), in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// Sends one keep-alive GET and reads its answer (the upstream's 3-byte body); the
/// connection stays open.
fn get(port: u16) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: burst.example\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let mut body = [0; 3];
    r.read_exact(&mut body).unwrap();
    r
}

#[test]
fn the_memory_of_a_burst_of_connections_is_returned_once_they_close() {
    let upstream = hyper_upstream(b"ok\n");
    let port = free_port();
    let mut gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
             rules:\n    - backendRefs: [{name: up, port: 80}]\n",
            &local_service("up", upstream),
        ]),
        &[
            "--workers",
            "2",
            "--memory-release-interval",
            "200ms",
            "--access-log",
            "off",
        ],
    );
    let pid = gw.process().id();
    drop(get(port));
    gw.wait_metric("gateway_downstream_connections_active", 0.0);
    let before = rss_anon_kib(pid);

    let burst: Vec<_> = (0..BURST).map(|_| get(port)).collect();
    let peak = rss_anon_kib(pid);
    let grown = peak.saturating_sub(before);
    // Otherwise the test would prove nothing: the burst must have taken memory (6.5 MiB
    // with this debug build and two workers).
    assert!(
        grown >= 2 * 1024,
        "{BURST} connections grew RssAnon by only {grown} KiB ({before} -> {peak})"
    );
    drop(burst);
    gw.wait_metric("gateway_downstream_connections_active", 0.0);
    eventually("the burst's memory back to the OS", || {
        rss_anon_kib(pid) <= before + grown / 2
    });
}
