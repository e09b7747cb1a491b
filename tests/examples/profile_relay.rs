//! A profiling driver (BENCHMARKS.md, "Where a frame's time goes"): one paused session stepped as
//! fast as round trips allow, for SECS seconds, so `perf record -a -g -- sleep 3` has something
//! steady to sample. `cargo run --release -p hamlet-tests --example profile_relay -- 12`.
//! With a second argument N: N sessions playing at speed 10 instead (the scale bench's load),
//! reporting the frames per second each got. `MS_THREADS=N` sets the metaserver's
//! `--runtime-threads` (through its environment); `MS_ARGS="--flag value …"` adds its flags.
use hamlet_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let sessions: Option<usize> = std::env::args().nth(2).and_then(|s| s.parse().ok());
    // One session steps without pause or episode cap; many play as the scale bench's do.
    let mut o = match sessions {
        None => {
            ServerOpts::default_model(&["--client-rate", "1000000", "--max-steps", "100000000"])
        }
        Some(_) => ServerOpts::default_model(&["--max-sessions", "300"]),
    };
    if let Ok(t) = std::env::var("MS_THREADS") {
        o.env.push(("HAMLET_RUNTIME_THREADS".into(), t));
    }
    if let Ok(args) = std::env::var("MS_ARGS") {
        o.args.extend(args.split_whitespace().map(str::to_owned));
    }
    let s = Server::start_with(o);
    println!("metaserver pid {}", s.pid);
    if let Some(n) = sessions {
        return play_many(&s, n, secs).await;
    }
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    let in_flight: u64 = std::env::var("IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let t = Instant::now();
    for _ in 0..in_flight {
        ws.send(json!({"command":"step"})).await;
    }
    while Instant::now() < end {
        let v = ws.next(T).await.unwrap();
        // A death's `episode_end` means the next step begins a new episode (its step-0 frame
        // counts as that step's answer), as in the relay bench.
        if v["type"] == "state_update" || v["type"] == "episode_end" {
            ws.send(json!({"command":"step"})).await;
        }
        n += u64::from(v["type"] == "state_update");
        ws.seen.clear();
    }
    println!(
        "{n} frames ({in_flight} in flight), {:.1} µs each",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

/// `n` sessions at speed 10 for `secs` seconds; prints the `state_update`s per second each got,
/// window by window (5 s each: the first includes what queued while the others connected).
async fn play_many(s: &Server, n: usize, secs: u64) {
    let mut clients = Vec::new();
    s.open_playing(&mut clients, n).await;
    println!("{n} sessions playing");
    for _ in 0..secs.div_ceil(5) {
        let end = Instant::now() + Duration::from_secs(5);
        let counts = futures_util::future::join_all(clients.iter_mut().map(|ws| async move {
            let (mut frames, mut gaps, mut last) = (0u64, Vec::new(), None::<Instant>);
            while let Some(left) = end.checked_duration_since(Instant::now()) {
                if let Ok(t) = ws.next_text(left).await {
                    if t.starts_with(r#"{"type":"state_update""#) {
                        frames += 1;
                        if let Some(l) = last {
                            gaps.push(l.elapsed().as_secs_f64() * 1e3);
                        }
                        last = Some(Instant::now());
                    }
                }
            }
            (frames, gaps)
        }))
        .await;
        let total: u64 = counts.iter().map(|c| c.0).sum();
        let mut gaps: Vec<f64> = counts.into_iter().flat_map(|c| c.1).collect();
        println!(
            "{:.1} frames/s per session; gap p50 {:.1} p90 {:.1} p99 {:.1} ms",
            total as f64 / 5.0 / n as f64,
            pct(&mut gaps, 0.5),
            pct(&mut gaps, 0.9),
            pct(&mut gaps, 0.99)
        );
    }
}
