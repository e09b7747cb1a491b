//! `scripts/bench relay`: what the relay costs against talking to the worker directly (issue 19).
//! Both paths are measured in the same run, so their ratios hold on a noisy machine:
//! - round trip of one step (paused session, one step in flight), p50 and p99;
//! - one session's steps pipelined (32 in flight): frames per second;
//! - CPU per relayed frame of the metaserver, of the worker, and of this load generator, from
//!   each process's CPU-time clock over the pipelined run.
//!
//! Both clients turn every frame into JSON and parse it (the relay's client receives JSON; the
//! direct client encodes the worker's typed message first), so the difference is the relay's.

use super::{cpu_secs, ms, pct, Report};
use hamlet_tests::{root, DirectWorker, Server, ServerOpts, Ws, T};
use ipc_proto::inference::{SessionCommand, SessionStart, ToInference};
use serde_json::{json, Value};
use std::time::Instant;

const ROUND_TRIPS: usize = 1000;
/// Long enough that the CPU figures average over about a third of a second of each process's work.
const PIPELINED: usize = 30_000;
const IN_FLIGHT: usize = 32;

/// The relay's figures that `scripts/bench` guards against regressions.
pub struct RelayFigures {
    pub rtt_ratio_p50: f64,
}

pub async fn relay(r: &mut Report) -> RelayFigures {
    let s = Server::start_with(ServerOpts::default_model(&[
        "--client-rate",
        "1000000",
        "--max-steps",
        "100000000",
    ]));
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    ws.expect("state_update", T).await;
    let (p50, p99) = relay_rtt(&mut ws).await;
    let mut w = direct_worker().await;
    let (d50, d99) = direct_rtt(&mut w).await;
    r.add(
        "relay_rtt_ms",
        "round trip step → state_update through the metaserver",
        format!("p50 {p50:.3} ms, p99 {p99:.3} ms"),
        "1000 steps, paused session",
        json!({"p50": p50, "p99": p99}),
    );
    r.add(
        "worker_rtt_ms",
        "same, straight to the worker (no metaserver)",
        format!("p50 {d50:.3} ms, p99 {d99:.3} ms"),
        "1000 steps over the Unix socket",
        json!({"p50": d50, "p99": d99}),
    );
    let (ratio50, ratio99) = (p50 / d50, p99 / d99);
    r.add(
        "relay_rtt_ratio",
        "relay ÷ direct round trip: p50, p99 (targets ≤ 2, ≤ 3)",
        format!("{ratio50:.2}, {ratio99:.2}"),
        "same run",
        json!({"p50": ratio50, "p99": ratio99}),
    );
    let worker_pid = s.get_json("/api/status")["sessions"][0]["worker_pid"]
        .as_u64()
        .unwrap_or(0) as u32;
    let pids = [s.pid, worker_pid, std::process::id()];
    let before = pids.map(cpu_secs);
    let t = Instant::now();
    let fps = relay_pipelined(&mut ws).await;
    let secs = t.elapsed().as_secs_f64();
    let after = pids.map(cpu_secs);
    let direct_fps = direct_pipelined(&mut w).await;
    r.add(
        "relay_throughput_fps",
        "one session pipelined: relay, direct frames/s (relay share)",
        format!("{fps:.0}, {direct_fps:.0} ({:.0} %)", 100.0 * fps / direct_fps),
        "30000 steps, 32 in flight (target ≥ 50 %)",
        json!({"frames_per_sec": fps, "direct_frames_per_sec": direct_fps, "share": fps / direct_fps}),
    );
    let frames = fps * secs;
    let per_frame = |i: usize| (after[i] - before[i]) * 1e6 / frames; // µs of CPU per frame
    r.add(
        "relay_cpu_us_per_frame",
        "CPU per relayed frame: metaserver, worker, this generator",
        format!(
            "{:.1}, {:.1}, {:.1} µs",
            per_frame(0),
            per_frame(1),
            per_frame(2)
        ),
        "pipelined run, each process's CPU clock (targets ≤ 10, ≤ 20)",
        json!({"metaserver": per_frame(0), "worker": per_frame(1), "generator": per_frame(2)}),
    );
    w.kill9().await;
    RelayFigures {
        rtt_ratio_p50: ratio50,
    }
}

fn step_json() -> Value {
    json!({"command":"step"})
}

async fn relay_rtt(ws: &mut Ws) -> (f64, f64) {
    let mut lat = Vec::new();
    for i in 0..ROUND_TRIPS + 100 {
        let t = Instant::now();
        ws.send(step_json()).await;
        ws.expect("state_update", T).await;
        if i >= 100 {
            lat.push(ms(t.elapsed()));
        }
        ws.seen.clear();
    }
    (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99))
}

/// [`IN_FLIGHT`] steps outstanding, one more sent per answer.
async fn relay_pipelined(ws: &mut Ws) -> f64 {
    let t = Instant::now();
    for _ in 0..IN_FLIGHT {
        ws.send(step_json()).await;
    }
    let (mut got, mut sent) = (0, IN_FLIGHT);
    while got < PIPELINED {
        let v = ws.next(T).await.unwrap();
        let answer = v["type"] == "state_update";
        got += usize::from(answer);
        // A death's `episode_end` means the next step begins a new episode (its step-0 frame
        // counts as that step's answer).
        if (answer || v["type"] == "episode_end") && sent < PIPELINED + IN_FLIGHT {
            ws.send(step_json()).await;
            sent += 1;
        }
        ws.seen.clear();
    }
    got as f64 / t.elapsed().as_secs_f64()
}

async fn direct_worker() -> DirectWorker {
    let mut w = DirectWorker::spawn(&root().join("models")).await;
    w.send(ToInference::Start(Box::new(SessionStart {
        announce: true,
        seed: 1,
        session_id: "bench".into(),
        model: Some("hamlet-default.onnx".into()),
        max_steps: 100_000_000,
        snapshot: None,
    })))
    .await;
    w
}

fn step() -> ToInference {
    ToInference::Command {
        seq: 0,
        command: SessionCommand::Step,
    }
}

/// The worker's next browser message, as JSON parsed back (what a browser client does).
async fn next_json(w: &mut DirectWorker) -> Value {
    loop {
        if let Some(m) = w.recv().await.into_browser() {
            return serde_json::from_str(&m.to_json()).unwrap();
        }
    }
}

async fn direct_rtt(w: &mut DirectWorker) -> (f64, f64) {
    let mut lat = Vec::new();
    for i in 0..ROUND_TRIPS + 100 {
        let t = Instant::now();
        w.send(step()).await;
        loop {
            let v = next_json(w).await;
            if v["type"] == "state_update" {
                break;
            }
            if v["type"] == "episode_end" {
                w.send(step()).await;
            }
        }
        if i >= 100 {
            lat.push(ms(t.elapsed()));
        }
    }
    (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99))
}

async fn direct_pipelined(w: &mut DirectWorker) -> f64 {
    let t = Instant::now();
    for _ in 0..IN_FLIGHT {
        w.send(step()).await;
    }
    let (mut got, mut sent) = (0, IN_FLIGHT);
    while got < PIPELINED {
        let v = next_json(w).await;
        let answer = v["type"] == "state_update";
        got += usize::from(answer);
        if (answer || v["type"] == "episode_end") && sent < PIPELINED + IN_FLIGHT {
            w.send(step()).await;
            sent += 1;
        }
    }
    got as f64 / t.elapsed().as_secs_f64()
}
