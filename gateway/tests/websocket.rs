//! WebSocket through the gateway with real peers (tokio-tungstenite as the upstream
//! server and as the client): messages both ways, the tunnel's connection slot
//! (`--max-connections`, 503 `UO` when none is free), its idle timeout, and its end at
//! the drain deadline after SIGTERM.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server; counts the handshakes it accepted.
async fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

/// Starts the gateway routing everything to `upstream`, with `args`.
async fn gateway(upstream: u16, args: &'static [&'static str]) -> (Gateway, u16) {
    tokio::task::spawn_blocking(move || {
        let port = free_port();
        let gw = Gateway::start_with(
            &docs(&[
                &http_gateway(port),
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: ws, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
                 rules:\n    - backendRefs: [{name: ws, port: 80}]\n",
                &local_service("ws", upstream),
            ]),
            args,
        );
        (gw, port)
    })
    .await
    .unwrap()
}

async fn connect(port: u16) -> Result<Client, tungstenite::Error> {
    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .map(|(ws, _)| ws)
}

async fn echo(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = ws.next().await.expect("tunnel closed").unwrap();
    assert_eq!(back, Message::text(text));
}

/// The refusal a WebSocket client gets, as a [`CurlResult`] for `error_code`.
fn http_refusal(r: Result<Client, tungstenite::Error>) -> CurlResult {
    let Err(tungstenite::Error::Http(resp)) = r else {
        panic!(
            "expected an HTTP refusal, got {:?}",
            r.map(|_| "a WebSocket")
        );
    };
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}\n", v.to_str().unwrap_or_default()))
        .collect();
    CurlResult {
        status: resp.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        exit_code: 0,
        stderr: String::new(),
    }
}

/// Runs a blocking check against the gateway off the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Reads until the tunnel ends; true when it ended without another message.
async fn ended(ws: &mut Client) -> bool {
    match ws.next().await {
        None => true,
        Some(Err(_)) => true,
        Some(Ok(Message::Close(_))) => ws.next().await.is_none_or(|m| m.is_err()),
        Some(Ok(_)) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_flow_both_ways_through_the_gateway() {
    let (upstream, accepted) = echo_server().await;
    let (_gw, port) = gateway(upstream, &[]).await;
    let mut ws = connect(port).await.unwrap();
    echo(&mut ws, "hello").await;
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    echo(&mut ws, "second").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_without_a_free_connection_slot_gets_503_uo() {
    let (upstream, accepted) = echo_server().await;
    // The client's own connection holds the only slot; the tunnel would need another.
    let (gw, port) = gateway(upstream, &["--max-connections", "1"]).await;
    let r = http_refusal(connect(port).await);
    let gw = blocking(move || {
        assert_eq!((r.status, error_code(&r).as_str()), (503, "UO"), "{r:?}");
        assert!(
            gw.explain(&r)["reason"]
                .as_str()
                .unwrap()
                .contains("--max-connections"),
        );
        gw.wait_metric("gateway_downstream_tunnels_rejected_total", 1.0);
        gw
    })
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the upgrade was forwarded"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tunnel_holds_a_connection_slot_until_it_closes() {
    let (upstream, _) = echo_server().await;
    let (gw, port) = gateway(upstream, &["--max-connections", "2"]).await;
    let mut first = connect(port).await.unwrap();
    echo(&mut first, "hello").await;
    // The upgraded connection left hyper; the tunnel holds its own slot.
    let gw = blocking(move || {
        gw.wait_metric("gateway_downstream_tunnels_active", 1.0);
        gw.wait_metric("gateway_downstream_connections_active", 0.0);
        gw
    })
    .await;
    // A second client's connection takes the last slot; its tunnel finds none.
    let r = http_refusal(connect(port).await);
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UO"), "{r:?}");
    first.close(None).await.unwrap();
    assert!(ended(&mut first).await);
    // The tunnel ends once both directions have: the client closes its socket too.
    drop(first);
    let gw = blocking(move || {
        gw.wait_metric("gateway_downstream_tunnels_active", 0.0);
        gw
    })
    .await;
    let mut second = connect(port).await.unwrap();
    echo(&mut second, "slot freed").await;
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_the_idle_timeout() {
    let (upstream, _) = echo_server().await;
    let (gw, port) = gateway(upstream, &["--idle-timeout", "500ms"]).await;
    let mut ws = connect(port).await.unwrap();
    echo(&mut ws, "hello").await;
    assert!(ended(&mut ws).await, "a message arrived on an idle tunnel");
    blocking(move || {
        gw.wait_metric(
            "gateway_downstream_connection_timeouts_total{kind=\"idle\"}",
            1.0,
        );
        gw.wait_metric("gateway_downstream_tunnels_active", 0.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_stays_open_through_the_drain_and_is_closed_at_its_deadline() {
    let (upstream, _) = echo_server().await;
    let (gw, port) = gateway(upstream, &["--drain-timeout", "2s"]).await;
    let mut ws = connect(port).await.unwrap();
    echo(&mut ws, "before").await;
    let gw = blocking(move || {
        let mut gw = gw;
        gw.process().send_term();
        gw.wait_log("draining");
        gw
    })
    .await;
    // Draining: new connections are refused, the open tunnel still works.
    echo(&mut ws, "while draining").await;
    assert!(ended(&mut ws).await, "the tunnel outlived the drain");
    blocking(move || {
        let mut gw = gw;
        assert!(gw.process().terminate(std::time::Duration::from_secs(10)));
        assert!(
            gw.log().contains("closing upgraded tunnels"),
            "{}",
            gw.log()
        );
    })
    .await;
}
