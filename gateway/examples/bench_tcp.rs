//! TCP peers for `scripts/bench-tcp`: a fast echo upstream and a connection-rate client.
//!
//! - `bench_tcp echo <port> [threads]`: echoes every connection's bytes back and closes at
//!   the client's half-close (a multi-threaded tokio server; one task per connection, no
//!   process per connection as with `socat ... fork EXEC:cat`).
//! - `bench_tcp check <port> <bytes>`: one connection that sends `bytes` of a pattern,
//!   half-closes and expects them back exactly; exits non-zero otherwise.
//! - `bench_tcp connect <port> <workers> <seconds> <payload>`: `workers` concurrent loops of
//!   connect, send `payload` bytes, half-close, read the echo to the end, close. Prints
//!   `connections=N errors=E seconds=S rate=R` (completed, verified connections).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, name: &str| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage(&format!("missing or bad <{name}>")))
    };
    let result = match args.first().map(String::as_str) {
        Some("echo") => echo(
            arg(1, "port") as u16,
            args.get(2).map_or(2, |_| arg(2, "threads")),
        ),
        Some("check") => check(arg(1, "port") as u16, arg(2, "bytes") as usize),
        Some("connect") => connect(
            arg(1, "port") as u16,
            arg(2, "workers") as usize,
            arg(3, "seconds"),
            arg(4, "payload") as usize,
        ),
        _ => usage("no mode"),
    };
    if let Err(e) = result {
        eprintln!("bench_tcp: {e}");
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "bench_tcp: {why}\nusage: bench_tcp echo <port> [threads] | check <port> <bytes> | \
         connect <port> <workers> <seconds> <payload>"
    );
    std::process::exit(2);
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
}

fn echo(port: u16, threads: u64) -> std::io::Result<()> {
    runtime(threads as usize)?.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (mut tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                // Ends at the client's half-close; dropping the socket then closes ours.
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

/// The bytes a connection sends: a pattern that shows misordered or lost bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// One round trip: send `data`, half-close, read everything back; true when it matches.
async fn round_trip(port: u16, data: &[u8]) -> std::io::Result<bool> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (mut r, mut w) = tcp.split();
    let mut back = Vec::with_capacity(data.len());
    let send = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let (sent, read) = tokio::join!(send, r.read_to_end(&mut back));
    sent?;
    read?;
    Ok(back == data)
}

fn check(port: u16, bytes: usize) -> std::io::Result<()> {
    runtime(1)?.block_on(async move {
        let data = pattern(bytes);
        let ok = tokio::time::timeout(Duration::from_secs(10), round_trip(port, &data))
            .await
            .map_err(|_| std::io::Error::other(format!("port {port}: timed out after 10 s")))?
            .map_err(|e| std::io::Error::other(format!("port {port}: {e}")))?;
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "port {port}: the echo of {bytes} bytes came back different"
            )))
        }
    })
}

fn connect(port: u16, workers: usize, seconds: u64, payload: usize) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    runtime(threads)?.block_on(async move {
        let data = std::sync::Arc::new(pattern(payload));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let data = data.clone();
            tasks.push(tokio::spawn(async move {
                let (mut done, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    match round_trip(port, &data).await {
                        Ok(true) => done += 1,
                        _ => errors += 1,
                    }
                }
                (done, errors)
            }));
        }
        let (mut done, mut errors) = (0, 0);
        for t in tasks {
            let (d, e) = t.await.map_err(std::io::Error::other)?;
            done += d;
            errors += e;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "connections={done} errors={errors} seconds={secs:.3} rate={:.1}",
            done as f64 / secs
        );
        Ok(())
    })
}
