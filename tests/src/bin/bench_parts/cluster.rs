//! `scripts/bench cluster`: what a cluster costs on one machine (cluster.md) — frames per second
//! with 1, 2 and 3 nodes on a real Redis against one server with the directory store (on one
//! machine more nodes add no cores, so the ratio is the price of Redis and the extra processes),
//! Redis calls per session per second, and the latency of resuming on another node.

use super::{pct, watch_frames, Report};
use futures_util::future::join_all;
use hamlet_tests::cluster::{start_nodes, Redis};
use hamlet_tests::{Server, ServerOpts, Ws};
use serde_json::json;
use std::time::{Duration, Instant};

const SESSIONS: usize = 48;

pub async fn cluster(r: &mut Report) {
    let single = Server::start_with(ServerOpts::default_model(&[]));
    let base = throughput(&[&single]).await;
    drop(single);
    r.add(
        "cluster_base_fps",
        &format!("{SESSIONS} sessions at speed 10, one server, directory store"),
        format!("{:.0} frames/s", base.0),
        "the reference for the rows below",
        json!({"frames_per_sec": base.0}),
    );
    for n in [1usize, 2, 3] {
        let redis = Redis::start();
        let nodes = start_nodes(&redis, n, &[]);
        let calls0 = redis_calls(&nodes);
        let t = Instant::now();
        let (fps, per_node) = throughput(&nodes.iter().collect::<Vec<_>>()).await;
        let calls = (redis_calls(&nodes) - calls0) / t.elapsed().as_secs_f64() / SESSIONS as f64;
        r.add(
            &format!("cluster_{n}_nodes"),
            &format!("  {n} node(s) on redis: frames/s (ratio), per node"),
            format!(
                "{fps:.0} ({:.2}), {}",
                fps / base.0,
                per_node
                    .iter()
                    .map(|f| format!("{f:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
            "same load, sessions spread evenly",
            json!({"frames_per_sec": fps, "ratio": fps / base.0, "per_node": per_node}),
        );
        r.add(
            &format!("cluster_{n}_redis_calls"),
            &format!("  {n} node(s): redis calls per session per second"),
            format!("{calls:.1}"),
            "hamlet_redis_calls_total over the run (heartbeats, model sync, flushes)",
            json!(calls),
        );
    }
    resume_elsewhere(r).await;
}

/// Sum of `hamlet_redis_calls_total` over the nodes.
fn redis_calls(nodes: &[Server]) -> f64 {
    nodes
        .iter()
        .map(|n| n.metric("hamlet_redis_calls_total"))
        .sum()
}

/// [`SESSIONS`] sessions at speed 10 spread over `nodes`: frames per second in all, and per node.
async fn throughput(nodes: &[&Server]) -> (f64, Vec<f64>) {
    let clients = join_all((0..SESSIONS).map(|i| {
        let url = nodes[i % nodes.len()].url("/ws");
        async move {
            let mut ws = Ws::connect(&url).await.unwrap();
            ws.expect("state_update", Duration::from_secs(60)).await;
            ws.send(json!({"command":"set_speed","speed":10})).await;
            ws.send(json!({"command":"play"})).await;
            ws
        }
    }))
    .await;
    let mut clients = clients;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_node = Vec::new();
    let mut total = 0.0;
    // Each node's clients are watched together with the others' (one window for all).
    let w = watch_frames(&mut clients, nodes[0].pid, &[], Duration::from_secs(5)).await;
    for n in 0..nodes.len() {
        let f: u64 = w
            .per_client
            .iter()
            .enumerate()
            .filter(|(i, _)| i % nodes.len() == n)
            .map(|(_, f)| *f)
            .sum();
        per_node.push(f as f64 / w.secs);
        total += f as f64 / w.secs;
    }
    (total, per_node)
}

/// A session on node 1 loses its connection and resumes on node 2 (and back): time from the
/// reconnect to its first frame.
async fn resume_elsewhere(r: &mut Report) {
    let redis = Redis::start();
    let nodes = start_nodes(&redis, 2, &[]);
    let mut lat = super::sessions::resume_times(&[&nodes[0], &nodes[1]], 40).await;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    r.add(
        "cluster_resume_elsewhere_ms",
        "resume on another node: reconnect → first state_update",
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        "40 resumes alternating between 2 nodes",
        json!({"p50": p50, "p99": p99}),
    );
    model_shared(r, &nodes);
}

/// A model saved on node 1 (renamed into its models directory, as the trainer writes, and its
/// listing asked for, as the hub does when a run saves one): time until node 2's `/api/models`
/// offers it.
fn model_shared(r: &mut Report, nodes: &[Server]) {
    let scratch = hamlet_tests::temp_dir("bench-model-shared");
    let mut lat = Vec::new();
    for i in 0..10 {
        let name = format!("shared-{i}.onnx");
        let made = hamlet_tests::make_model(&scratch, &name, i);
        let t = Instant::now();
        std::fs::rename(&made, nodes[0].models.join(&name)).expect("same file system");
        nodes[0].get("/api/models");
        while !nodes[1].get_json("/api/models")["models"]
            .as_array()
            .is_some_and(|m| m.iter().any(|n| *n == *name))
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name} never reached node 2"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, max) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 1.0));
    r.add(
        "cluster_model_shared_ms",
        "a model saved on one node, offered by another",
        format!("p50 {p50:.0} ms, max {max:.0} ms"),
        "10 models, 2 nodes: saved on node 1 → listed by node 2's /api/models",
        json!({"p50": p50, "max": max}),
    );
}
