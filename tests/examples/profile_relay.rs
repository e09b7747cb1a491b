//! A profiling driver (BENCHMARKS.md, "Where a frame's time goes"): one paused session stepped as
//! fast as round trips allow, for SECS seconds, so `perf record -a -g -- sleep 3` has something
//! steady to sample. `cargo run --release -p hamlet-tests --example profile_relay -- 12`.
//! `MS_THREADS=N` sets the metaserver's `--runtime-threads` (through its environment).
use hamlet_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut o =
        ServerOpts::default_model(&["--client-rate", "1000000", "--max-steps", "100000000"]);
    if let Ok(t) = std::env::var("MS_THREADS") {
        o.env.push(("HAMLET_RUNTIME_THREADS".into(), t));
    }
    let s = Server::start_with(o);
    println!("metaserver pid {}", s.pid);
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    let t = Instant::now();
    while Instant::now() < end {
        ws.send(json!({"command":"step"})).await;
        ws.expect("state_update", T).await;
        ws.seen.clear();
        n += 1;
    }
    println!(
        "{n} round trips, {:.1} µs each",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
