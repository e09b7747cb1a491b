//! `scripts/bench relay`: what the relay costs against talking to the worker directly (issue 19).
//! Both paths are measured in the same run, so their ratios hold on a noisy machine:
//! - round trip of one step (paused session, one step in flight), p50 and p99;
//! - one session's steps pipelined (32 in flight): frames per second, relayed and direct rounds in
//!   turns, medians;
//! - CPU per relayed frame of the metaserver, of the worker, and of this load generator, from
//!   each process's CPU-time clock over each relayed round, medians.
//!
//! Both clients turn every frame into JSON and parse it (the relay's client receives JSON; the
//! direct client encodes the worker's typed message first), so the difference is the relay's.

use super::{cpu_secs, ms, pct, Report};
use hamlet_tests::{root, DirectWorker, InTurns, Server, ServerOpts, Ws, T};
use ipc_proto::inference::{SessionCommand, SessionStart, ToInference};
use serde_json::{json, Value};
use std::time::Instant;

const ROUND_TRIPS: usize = 1000;
/// Steps of one pipelined round: long enough that a round's CPU figures average over about a
/// third of a second of each process's work.
const PIPELINED: usize = 30_000;
const IN_FLIGHT: usize = 32;
/// Rounds of the pipelined runs, each way.
const ROUNDS: usize = 3;

/// The relay's figures that `scripts/bench` guards against regressions.
pub struct RelayFigures {
    pub rtt_ratio_p50: f64,
    pub rtt_p50_ms: f64,
    pub metaserver_us_per_frame: f64,
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
    // Without its pid the CPU clock below would read this process's own (pid 0 is "self").
    let worker_pid = s.get_json("/api/status")["sessions"][0]["worker_pid"]
        .as_u64()
        .filter(|p| *p > 0)
        .expect("/api/status names the session's worker pid") as u32;
    let p = pipelined_in_turns(&mut ws, &mut w, [s.pid, worker_pid, std::process::id()]).await;
    r.add(
        "relay_throughput_fps",
        "one session pipelined: relay, direct frames/s (relay share)",
        format!(
            "{:.0}, {:.0} ({:.0} %)",
            p.fps,
            p.direct_fps,
            100.0 * p.share
        ),
        "3 rounds of 30000 steps each way, 32 in flight, medians (target ≥ 50 %)",
        json!({"frames_per_sec": p.fps, "direct_frames_per_sec": p.direct_fps, "share": p.share}),
    );
    let [ms_cpu, worker_cpu, gen_cpu] = p.cpu_us;
    r.add(
        "relay_cpu_us_per_frame",
        "CPU per relayed frame: metaserver, worker, this generator",
        format!("{ms_cpu:.1}, {worker_cpu:.1}, {gen_cpu:.1} µs"),
        "relayed rounds, each process's CPU clock, medians (targets ≤ 10, ≤ 20)",
        json!({"metaserver": ms_cpu, "worker": worker_cpu, "generator": gen_cpu}),
    );
    w.kill9().await;
    RelayFigures {
        rtt_ratio_p50: ratio50,
        rtt_p50_ms: p50,
        metaserver_us_per_frame: ms_cpu,
    }
}

fn step_json() -> Value {
    json!({"command":"step"})
}

/// Round trips through the metaserver. The rule both round-trip figures share: one `step`, then
/// frames until its `state_update`; a trip that crossed an episode's end (its `episode_end` or
/// the next episode's start arrived in it, the paused session beginning the next episode at the
/// step) is not counted, and no extra step is sent.
async fn relay_rtt(ws: &mut Ws) -> (f64, f64) {
    let mut lat = Vec::new();
    for i in 0..ROUND_TRIPS + 100 {
        let t = Instant::now();
        ws.send(step_json()).await;
        let mut crossed = false;
        loop {
            let v = ws.next(T).await.expect("a frame within T");
            crossed |= crosses_episode(&v);
            if v["type"] == "state_update" {
                break;
            }
        }
        if i >= 100 && !crossed {
            lat.push(ms(t.elapsed()));
        }
        ws.seen.clear();
    }
    (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99))
}

fn crosses_episode(v: &Value) -> bool {
    matches!(v["type"].as_str(), Some("episode_end" | "episode_start"))
}

/// The pipelined figures, medians of [`ROUNDS`] rounds.
struct Pipelined {
    fps: f64,
    direct_fps: f64,
    /// The median of the rounds' relay ÷ direct rates.
    share: f64,
    /// µs of CPU per relayed frame: metaserver, worker, this generator.
    cpu_us: [f64; 3],
}

/// Rounds of the relayed and the direct pipelined run in turns, so that a machine whose speed
/// drifts moves both sides of each round's share alike; the CPU of `pids` (metaserver, worker,
/// this process) is read over each relayed round.
async fn pipelined_in_turns(ws: &mut Ws, w: &mut DirectWorker, pids: [u32; 3]) -> Pipelined {
    let mut rates = InTurns::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        let before = pids.map(cpu_secs);
        let (frames, secs) = pipelined(ws).await;
        let after = pids.map(cpu_secs);
        for (i, c) in cpu.iter_mut().enumerate() {
            c.push((after[i] - before[i]) * 1e6 / frames as f64);
        }
        let (d_frames, d_secs) = pipelined(w).await;
        rates.push(frames as f64 / secs, d_frames as f64 / d_secs);
    }
    let (fps, direct_fps, share) = rates.medians();
    Pipelined {
        fps,
        direct_fps,
        share,
        cpu_us: cpu.map(|mut c| pct(&mut c, 0.5)),
    }
}

/// One end of a pipelined run: the relay's browser socket or the worker's own.
trait Stepper {
    async fn step(&mut self);
    /// The next browser message, as JSON.
    async fn next_frame(&mut self) -> Value;
}

impl Stepper for Ws {
    async fn step(&mut self) {
        self.send(step_json()).await;
    }
    async fn next_frame(&mut self) -> Value {
        let v = self.next(T).await.unwrap();
        self.seen.clear();
        v
    }
}

impl Stepper for DirectWorker {
    async fn step(&mut self) {
        self.send(step()).await;
    }
    async fn next_frame(&mut self) -> Value {
        next_json(self).await
    }
}

/// [`IN_FLIGHT`] steps outstanding, one more sent per answer until [`PIPELINED`] have been sent,
/// then the answers still in flight: every step is answered by one `state_update`, so the next
/// round starts with nothing outstanding. Returns the frames received and the seconds taken.
async fn pipelined(s: &mut impl Stepper) -> (usize, f64) {
    let t = Instant::now();
    for _ in 0..IN_FLIGHT {
        s.step().await;
    }
    let (mut got, mut sent) = (0, IN_FLIGHT);
    while got < sent {
        let v = s.next_frame().await;
        let answer = v["type"] == "state_update";
        got += usize::from(answer);
        // A death's `episode_end` means the next step begins a new episode (its step-0 frame
        // counts as that step's answer).
        if (answer || v["type"] == "episode_end") && sent < PIPELINED {
            s.step().await;
            sent += 1;
        }
    }
    (got, t.elapsed().as_secs_f64())
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

/// The same round trips straight to the worker, by [`relay_rtt`]'s rule.
async fn direct_rtt(w: &mut DirectWorker) -> (f64, f64) {
    let mut lat = Vec::new();
    for i in 0..ROUND_TRIPS + 100 {
        let t = Instant::now();
        w.send(step()).await;
        let mut crossed = false;
        loop {
            let v = next_json(w).await;
            crossed |= crosses_episode(&v);
            if v["type"] == "state_update" {
                break;
            }
        }
        if i >= 100 && !crossed {
            lat.push(ms(t.elapsed()));
        }
    }
    (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99))
}
