//! What sharing one reference count across workers costs the request path: time per
//! request spent cloning and dropping the upstream authority as hyper-util's client does
//! (13 clones per proxied request, counted with callgrind on the release gateway), with
//! 1, 2, 4 and 8 threads at once (up to the CPU count, or `bench_shared_counts
//! MAX_THREADS`), all cloning one authority (an endpoint's, from the shared tables) or
//! each its own copy (`Upstreams::local_authority`). Run by `scripts/bench-metrics`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;

/// Clones of the authority per proxied request (pool key, URIs, checkout and return).
const CLONES: usize = 13;
const REQUESTS: u32 = 1_000_000;

/// Per request: as hyper-util holds them, every clone is alive until the request ends.
fn request(a: &Authority) {
    let held: [Authority; CLONES] = std::array::from_fn(|_| black_box(a.clone()));
    black_box(&held);
}

/// ns per request on each of `threads` threads; `own` gives each thread its own copy.
fn run(threads: usize, shared: &Authority, own: bool) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            let a = if own {
                Authority::from_maybe_shared(Bytes::copy_from_slice(shared.as_str().as_bytes()))
                    .expect("a valid authority")
            } else {
                shared.clone()
            };
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..REQUESTS {
                    request(&a);
                }
                start.elapsed()
            })
        })
        .collect();
    let total: Duration = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total.as_nanos() as f64 / threads as f64 / f64::from(REQUESTS)
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(cpus);
    let shared = Authority::from_maybe_shared(Bytes::from(b"10.0.0.7:8080".to_vec()))
        .expect("a valid authority");
    // Promote the buffer to a shared one, as the tables' authorities are by their first clone.
    drop(shared.clone());
    println!("authority clones per request: {CLONES}; {REQUESTS} requests per thread; {cpus} CPUs");
    println!(
        "| threads at once | one shared authority (ns/request) | a copy per thread (ns/request) | shared / own |"
    );
    println!("|---:|---:|---:|---:|");
    for threads in [1, 2, 4, 8].into_iter().filter(|&t| t <= max) {
        let s = run(threads, &shared, false);
        let o = run(threads, &shared, true);
        println!("| {threads} | {s:.1} | {o:.1} | {:.2} |", s / o);
    }
}
