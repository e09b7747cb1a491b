//! `scripts/bench`: every speed and memory figure of this project, measured on this machine in one
//! go. Prints a table and writes the same figures as JSON to target/bench/latest.json.

use futures_util::future::join_all;
use futures_util::StreamExt;
use guard::Better::Lower;
use hamlet_env::{World, OBS_DIM};
use hamlet_tests::*;
use ipc_proto::training::{Network, TdTarget, TrainingConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[path = "bench_parts/cluster.rs"]
mod cluster;
#[path = "bench_parts/floor.rs"]
mod floor;
#[path = "bench_parts/guard.rs"]
mod guard;
#[path = "bench_parts/learn.rs"]
mod learn;
#[path = "bench_parts/lesson.rs"]
mod lesson;
#[path = "bench_parts/relay.rs"]
mod relay;
#[path = "bench_parts/rooms.rs"]
mod rooms;
#[path = "bench_parts/scale.rs"]
mod scale;
#[path = "bench_parts/sessions.rs"]
mod sessions;

pub struct Report {
    rows: Vec<(String, String, String)>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    pub fn add(&mut self, key: &str, label: &str, value: String, how: &str, j: Value) {
        println!("{label:<58} {value:>28}   {how}");
        self.rows.push((label.into(), value, how.into()));
        self.json.insert(key.into(), j);
    }
}

pub use hamlet_tests::pct;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Proportional set size: shared library pages divided among the processes that map them.
fn pss_kib(pid: u32) -> u64 {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// The CPU time a process has used so far (all its threads, user and system), in seconds, read
/// from its CPU-time clock (`clock_getcpuclockid`: nanoseconds, where `/proc/PID/stat` counts
/// 10 ms ticks). A process that is gone reads as 0.
fn cpu_secs(pid: u32) -> f64 {
    use nix::time::{clock_getcpuclockid, clock_gettime};
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    clock_getcpuclockid(pid)
        .and_then(clock_gettime)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

fn world(r: &mut Report) {
    let steps = 5_000_000u64;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let mut w = World::new();
        let mut obs = [0.0f32; OBS_DIM];
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut sink = 0.0;
        let t = Instant::now();
        for _ in 0..steps {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let out = w.step_id((s % 5) as i64).unwrap();
            w.write_observation(&mut obs);
            sink += out.reward + f64::from(obs[2]);
            if out.done || w.steps() >= 500 {
                w.reset();
            }
        }
        std::hint::black_box(sink);
        rates.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    let med = pct(&mut rates, 0.5);
    r.add(
        "world_steps_per_sec",
        "world steps/s (random actions, obs encoded, 1 core)",
        format!("{:.1} M/s", med / 1e6),
        "median of 5 × 5M steps",
        json!({"median": med, "min": rates[0], "max": rates[4]}),
    );
}

fn decision(r: &mut Report) {
    use worker_inference::policy::{Policy, Runtime};
    let rt: &'static Runtime =
        Box::leak(Box::new(Runtime::init(&ort_lib()).expect("ONNX Runtime")));
    let dir = root().join("models");
    let mut p = Policy::load(rt, &dir, "hamlet-default.onnx").expect("default model");
    let mut w = World::new();
    let mut lat = Vec::with_capacity(20_000);
    for i in 0..21_000 {
        let t = Instant::now();
        let obs = w.observation();
        let a = hamlet_env::argmax(&p.q_values(&obs).unwrap()) as u8;
        if i >= 1000 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if w.step_id(i64::from(a)).unwrap().done || w.steps() >= 500 {
            w.reset();
        }
    }
    latency_row(
        r,
        "decision_latency_us",
        "decision latency obs → ONNX Runtime → action (batch 1)",
        "20 000 decisions, worker's code path",
        &mut lat,
    );
    // As at 256 sessions: each evaluation finds its model's data out of cache (the code is warm).
    let mut many: Vec<Policy> = (0..256)
        .map(|_| Policy::load(rt, &dir, "hamlet-default.onnx").expect("default model"))
        .collect();
    let obs = World::new().observation();
    let mut lat = Vec::with_capacity(20_480);
    for i in 0..20_480 {
        let t = Instant::now();
        std::hint::black_box(many[i % 256].q_values(&obs).unwrap());
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    latency_row(
        r,
        "decision_latency_256_us",
        "ONNX Runtime batch-1 run, 256 loaded models in turn",
        "each run's model data cold, as at 256 sessions",
        &mut lat,
    );
}

/// A row of p50 and p99 of latencies given in µs.
fn latency_row(r: &mut Report, key: &str, label: &str, how: &str, lat_us: &mut [f64]) {
    let (p50, p99) = (pct(lat_us, 0.5), pct(lat_us, 0.99));
    r.add(
        key,
        label,
        format!("p50 {p50:.1} µs, p99 {p99:.1} µs"),
        how,
        json!({"p50": p50, "p99": p99}),
    );
}

/// Returns each network's update ÷ GEMMs ratio and update time (ms) at batch 64 (the default),
/// for the guard.
fn dqn(r: &mut Report) -> Vec<(Network, f64, f64)> {
    use hamlet_dqn::dqn::{Flow, Trainer};
    let mut default_batch_ratios = Vec::new();
    for net in [Network::Qnetwork, Network::Dueling] {
        for batch in [32u32, 64] {
            // The settings a real run of this network uses (`train`'s defaults), at this batch size.
            let cfg = TrainingConfig {
                batch_size: batch,
                seed: 1,
                max_steps: 200,
                ..TrainingConfig::full_run_for(net)
            };
            let mut t = Trainer::new(cfg.clone());
            // A real run's replay memory is full (50 000 or 200 000 transitions).
            t.fill_replay(cfg.buffer_capacity as usize);
            // The forward passes of an update: the target network on the next states, the online
            // network on the states — and with Double DQN on the next states too, in the same pass.
            let n = batch as usize;
            let online_rows = if cfg.td_target == TdTarget::Double {
                2 * n
            } else {
                n
            };
            let per_round = if net == Network::Dueling { 300 } else { 1500 };
            let (update_ms, floor, ratio) =
                update_and_floor(&mut t, per_round, n, &[n, online_rows]);
            if batch == 64 {
                default_batch_ratios.push((net, ratio, update_ms));
            }
            let ups = 1e3 / update_ms;
            // Env steps with learning (one update per step), from a fresh run.
            let mut t = Trainer::new(cfg);
            let t0 = Instant::now();
            let mut steps = 0u64;
            while t0.elapsed() < Duration::from_secs(3) {
                let s = t.run_episode(|_| Flow::Continue).unwrap();
                steps += u64::from(s.length);
            }
            let sps = steps as f64 / t0.elapsed().as_secs_f64();
            let key = format!("{}_b{batch}", net.as_str());
            r.add(
                &format!("dqn_{key}"),
                &format!(
                    "DQN {} batch {batch}: updates/s | env steps/s learning",
                    net.as_str()
                ),
                format!("{ups:.0} | {sps:.0}"),
                "updates: median of 5 rounds; 3 s of training; memory full",
                json!({"updates_per_sec": ups, "env_steps_per_sec": sps}),
            );
            r.add(
                &format!("dqn_floor_{key}"),
                &format!(
                    "DQN {} batch {batch}: update | its GEMMs alone (ratio)",
                    net.as_str()
                ),
                format!("{update_ms:.3} | {floor:.3} ms ({ratio:.2}×)"),
                "taken in turns, medians; the ratio's is of the 5 pairs. Overhead: Adam, activations, sampling, bookkeeping (packing is inside sgemm: in both)",
                json!({"update_ms": update_ms, "gemm_ms": floor, "ratio": ratio}),
            );
        }
    }
    default_batch_ratios
}

/// Times updates and their GEMMs in turns — five rounds of `per_round` updates, each followed by
/// the floor (median of 40) — so that a machine whose speed drifts during the bench (this one's
/// does, by 10–20 %) moves both sides of each ratio alike. Returns the medians of the update's
/// and the floor's ms and of the rounds' ratios.
fn update_and_floor(
    t: &mut hamlet_dqn::dqn::Trainer,
    per_round: usize,
    batch: usize,
    forward_rows: &[usize],
) -> (f64, f64, f64) {
    let mut rounds = InTurns::default();
    for _ in 0..5 {
        let t0 = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(t.update());
        }
        let update_ms = t0.elapsed().as_secs_f64() * 1e3 / per_round as f64;
        let floor_ms = gemm_floor_ms(t.state.online.layers(), batch, forward_rows, 40);
        rounds.push(update_ms, floor_ms);
    }
    rounds.medians()
}

/// Time of the matrix products one update does, alone (median of `reps`): for every layer, its
/// forward passes (one per entry of `forward_rows`, of that many rows), the weight gradient and the
/// input gradient (all layers but the first) of `batch` rows — the floor an update's time can
/// approach.
fn gemm_floor_ms(
    layers: &[hamlet_dqn::nn::Linear],
    batch: usize,
    forward_rows: &[usize],
    reps: usize,
) -> f64 {
    use hamlet_dqn::nn::gemm;
    struct Bufs {
        inp: usize,
        out: usize,
        x: Vec<f32>,
        w: Vec<f32>,
        y: Vec<f32>,
        dy: Vec<f32>,
        dw: Vec<f32>,
        dx: Vec<f32>,
    }
    // Allocated once, outside the timing: the floor is the multiplications only.
    let rows = forward_rows
        .iter()
        .copied()
        .max()
        .unwrap_or(batch)
        .max(batch);
    let mut bufs: Vec<Bufs> = layers
        .iter()
        .map(|l| {
            let (inp, out) = (l.inputs(), l.outputs());
            Bufs {
                inp,
                out,
                x: vec![0.5; rows * inp],
                w: vec![0.5; inp * out],
                y: vec![0.0; rows * out],
                dy: vec![0.5; batch * out],
                dw: vec![0.0; inp * out],
                dx: vec![0.0; batch * inp],
            }
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for (i, b) in bufs.iter_mut().enumerate() {
            let (inp, out) = (b.inp, b.out);
            // The same checked wrapper the trainer's updates use.
            for &m in forward_rows {
                // y[m,out] = x · Wᵀ (the bias is added in the activation pass)
                gemm(
                    (m, inp, out),
                    &b.x,
                    (inp, 1),
                    &b.w,
                    (1, inp),
                    0.0,
                    &mut b.y,
                    (out, 1),
                );
            }
            // dW[out,in] = dYᵀ · X
            gemm(
                (out, batch, inp),
                &b.dy,
                (1, out),
                &b.x,
                (inp, 1),
                0.0,
                &mut b.dw,
                (inp, 1),
            );
            if i > 0 {
                // dX[batch,in] = dY · W
                gemm(
                    (batch, out, inp),
                    &b.dy,
                    (out, 1),
                    &b.w,
                    (inp, 1),
                    0.0,
                    &mut b.dx,
                    (inp, 1),
                );
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::hint::black_box(&bufs.iter().map(|b| b.y[0] + b.dw[0] + b.dx[0]).sum::<f32>());
    pct(&mut times, 0.5)
}

/// Time from process start to `Ready` (handshake done, ONNX Runtime loaded), spawning the worker
/// with the supervisor's own code (`DirectWorker`).
async fn worker_start(r: &mut Report) {
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let w = DirectWorker::spawn(&root().join("models")).await;
        times.push(ms(t.elapsed()));
        w.kill9().await;
    }
    let (p50, p99) = (pct(&mut times.clone(), 0.5), pct(&mut times, 0.99));
    r.add(
        "worker_start_ms",
        "worker process start → ready (ONNX Runtime loaded)",
        format!("p50 {p50:.1} ms, max {p99:.1} ms"),
        "15 spawns, with the supervisor's spawn code",
        json!({"p50": p50, "max": p99}),
    );
}

/// What sessions received during a measurement window.
struct Window {
    secs: f64,
    /// The metaserver's CPU over the window, % of one core.
    cpu_pct: f64,
    /// This load generator's own CPU over the window, % of one core.
    generator_cpu_pct: f64,
    /// The CPU of the worker processes named to [`watch_frames`] over the window, in cores.
    workers_cores: f64,
    frames: u64,
    /// Frames of each client, in order.
    per_client: Vec<u64>,
    /// Milliseconds between consecutive `state_update`s of a session (all sessions).
    gaps: Vec<f64>,
}

/// Reads every session's frames for `window`, counting `state_update`s and the gaps between them,
/// and the CPU the metaserver, this generator and the given workers spent meanwhile.
async fn watch_frames(
    clients: &mut [Ws],
    server_pid: u32,
    workers: &[u32],
    window: Duration,
) -> Window {
    // First read what queued up while the generator was busy elsewhere (connecting the others):
    // counted in the window, it would show more frames than the sessions made in it.
    join_all(
        clients
            .iter_mut()
            .map(|ws| async move { while ws.next_text(Duration::from_millis(3)).await.is_ok() {} }),
    )
    .await;
    let cpu0 = cpu_secs(server_pid);
    let gen0 = cpu_secs(std::process::id());
    let workers0: Vec<f64> = workers.iter().map(|p| cpu_secs(*p)).collect();
    let t0 = Instant::now();
    let results = join_all(clients.iter_mut().map(|ws| async move {
        let (mut frames, mut gaps, mut last) = (0u64, Vec::new(), Instant::now());
        let end = Instant::now() + window;
        while Instant::now() < end {
            if let Ok(t) = ws
                .next_text(end.saturating_duration_since(Instant::now()))
                .await
            {
                // Counted, not parsed: the generator must not be what limits the pace.
                if t.starts_with(r#"{"type":"state_update""#) {
                    frames += 1;
                    gaps.push(ms(last.elapsed()));
                    last = Instant::now();
                }
            }
        }
        (frames, gaps)
    }))
    .await;
    let secs = t0.elapsed().as_secs_f64();
    // A worker that ended meanwhile reads as 0: it counts nothing, not a negative amount.
    let workers_cpu: f64 = workers
        .iter()
        .zip(workers0)
        .map(|(p, t0)| (cpu_secs(*p) - t0).max(0.0))
        .sum();
    Window {
        workers_cores: workers_cpu / secs,
        secs,
        cpu_pct: (cpu_secs(server_pid) - cpu0) / secs * 100.0,
        generator_cpu_pct: (cpu_secs(std::process::id()) - gen0) / secs * 100.0,
        frames: results.iter().map(|r| r.0).sum(),
        per_client: results.iter().map(|r| r.0).collect(),
        gaps: results
            .into_iter()
            .flat_map(|r| r.1.into_iter().skip(1))
            .collect(),
    }
}

/// "Inside the agent" at speed 10: 16 sessions whose frames carry activations, and what a frame
/// weighs with and without them.
async fn detail(r: &mut Report) {
    let s = Server::start_with(ServerOpts::default_model(&[]));
    let n = 16;
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        let plain = ws.expect("state_update", T).await;
        ws.send(json!({"command":"set_detail","activations":true}))
            .await;
        ws.send(json!({"command":"step"})).await;
        let rich = ws
            .expect_where("a frame with activations", T, |v| {
                v["type"] == "state_update" && v.get("activations").is_some()
            })
            .await;
        if clients.is_empty() {
            let (a, b) = (plain.to_string().len(), rich.to_string().len());
            r.add(
                "frame_bytes",
                "state_update JSON: plain | with activations",
                format!("{a} | {b} bytes"),
                "the default model, one frame each",
                json!({"plain": a, "with_activations": b}),
            );
        }
        ws.send(json!({"command":"set_speed","speed":10})).await;
        ws.send(json!({"command":"play"})).await;
        clients.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // every session reaches its pace
    let w = watch_frames(&mut clients, s.pid, &[], Duration::from_secs(5)).await;
    let (secs, cpu, frames, mut gaps) = (w.secs, w.cpu_pct, w.frames, w.gaps);
    let per = frames as f64 / secs / n as f64;
    let p99 = pct(&mut gaps, 0.99);
    r.add(
        "detail_16",
        "16 sessions at speed 10 with activations: frames/s per session, p99 gap",
        format!("{per:.1}, {p99:.0} ms"),
        &format!("metaserver {cpu:.0}% CPU"),
        json!({"sessions": n, "per_session": per, "p99_gap_ms": p99, "metaserver_cpu_pct": cpu}),
    );
}

/// CPU used by idle (paused) sessions' workers: heartbeats only, no spinning threads.
async fn idle(r: &mut Report) {
    let s = Server::start_with(ServerOpts::default_model(&[]));
    let n = 100;
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        ws.expect("state_update", T).await;
        clients.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = s
        .workers()
        .iter()
        .filter(|w| w["state"] == "active")
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    let before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let ms_before = cpu_secs(s.pid);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t.elapsed().as_secs_f64();
    let workers_pct = (pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - before) / secs * 100.0;
    let ms_pct = (cpu_secs(s.pid) - ms_before) / secs * 100.0;
    r.add(
        "idle_100_sessions_cpu_pct",
        &format!("{n} idle (paused) sessions: CPU of all their workers | metaserver"),
        format!("{workers_pct:.1}% | {ms_pct:.1}% of one core"),
        "10 s, heartbeats every 1 s; the processes' CPU clocks",
        json!({"sessions": n, "workers_cpu_pct_total": workers_pct, "metaserver_cpu_pct": ms_pct, "workers": pids.len()}),
    );
    drop(clients);
}

async fn session_start(r: &mut Report) {
    for (label, warm) in [("warm pool", "2"), ("cold (no pool)", "0")] {
        let s = Server::start_with(ServerOpts::default_model(&["--warm-workers", warm]));
        tokio::time::sleep(Duration::from_millis(800)).await;
        let (mut c, mut f) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let t = Instant::now();
            let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
            ws.expect("connected", T).await;
            c.push(ms(t.elapsed()));
            ws.expect("state_update", T).await;
            f.push(ms(t.elapsed()));
            drop(ws);
            // Give the pool time to refill, as between real students' arrivals.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (c50, f50, f99) = (
            pct(&mut c, 0.5),
            pct(&mut f.clone(), 0.5),
            pct(&mut f, 0.99),
        );
        r.add(
            &format!("session_start_{warm}"),
            &format!("session start, {label}: → connected | → first frame"),
            format!("{c50:.1} | {f50:.1} ms (p99 {f99:.1})"),
            "median of 15",
            json!({"connected_p50_ms": c50, "first_frame_p50_ms": f50, "first_frame_p99_ms": f99}),
        );
    }
}

async fn crash_recovery(r: &mut Report) {
    // Every kill is treated as a first crash (restart at once): this measures recovery itself,
    // not the backoff that repeated crashes of one session earn.
    let s = Server::start_with(ServerOpts::default_model(&[
        "--max-restarts",
        "1000",
        "--stable-after-secs",
        "0",
    ]));
    let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
    let sid = ws.expect("connected", T).await["session_id"].clone();
    ws.send(json!({"command":"set_speed","speed":10})).await;
    ws.send(json!({"command":"play"})).await;
    let mut lat = Vec::new();
    for _ in 0..20 {
        ws.expect("state_update", T).await;
        let pid = s.workers().iter().find(|w| w["session"] == sid).unwrap()["pid"]
            .as_u64()
            .unwrap() as u32;
        let t = Instant::now();
        signal(pid, nix::sys::signal::Signal::SIGKILL);
        ws.expect("worker_restarted", T).await;
        ws.expect("state_update", T).await;
        lat.push(ms(t.elapsed()));
        ws.seen.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
    r.add(
        "crash_recovery_ms",
        "kill -9 of a session's worker → next state_update",
        format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
        "20 kills, speed 10 (10 ms steps)",
        json!({"p50": p50, "p99": p99}),
    );
}

/// Training speed with every step streamed to N viewers. The same seeded run each time, so every
/// row does the same work (checked: the step counts must agree). The "0 viewers" row starts the run
/// and disconnects at once, then watches `/api/status` until the run completes.
async fn training_fanout(r: &mut Report) {
    let s = Server::start();
    // Long enough (≈ 10 000 steps, a few seconds) that starting and ending do not dominate.
    let cfg = json!({"command":"start_training","num_episodes":80,"max_steps":300,"batch_size":32,"show_every":1,"step_delay":0,"seed":1});
    let mut steps_total = None;
    for (viewers, shown) in [
        (10usize, true),
        (0, true),
        (50, true),
        (100, true),
        (500, true),
        (100, false),
    ] {
        let mut cfg = cfg.clone();
        if !shown {
            // Episodes not shown: viewers get one summary per episode, as during most of a run.
            cfg["show_every"] = json!(100000);
        }
        let mut starter = Ws::connect(&s.url("/ws/training")).await.unwrap();
        starter.expect("training_status", T).await;
        // The starter is one of the viewers.
        let mut vs = Vec::new();
        for _ in 1..viewers {
            let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
            v.expect("training_status", T).await;
            vs.push(v);
        }
        for v in vs.drain(..) {
            // The others drain their sockets like browsers, and leave when the run is over. They
            // only look for the end (no JSON parsing): 500 of them share the cores with the run.
            tokio::spawn(async move {
                let mut ws = v.ws;
                while let Ok(Some(Ok(m))) =
                    tokio::time::timeout(Duration::from_secs(120), ws.next()).await
                {
                    if m.to_text()
                        .is_ok_and(|t| t.contains("\"training_complete\""))
                    {
                        break;
                    }
                }
            });
        }
        let t = Instant::now();
        starter.send(cfg.clone()).await;
        let steps = if viewers == 0 {
            starter.expect("training_started", T).await;
            drop(starter);
            s.wait_for("run completes", Duration::from_secs(300), |s| {
                s.get_json("/api/status")["training"]["state"] == "completed"
            });
            steps_total.expect("a counted row ran first")
        } else {
            count_run_steps(&mut starter).await.0
        };
        let secs = t.elapsed().as_secs_f64();
        let total = *steps_total.get_or_insert(steps);
        assert_eq!(
            steps, total,
            "seeded runs differ: rows would not be comparable"
        );
        let sps = steps as f64 / secs;
        let (key, what) = if shown {
            (format!("training_fanout_{viewers}"), "every step shown")
        } else {
            (
                format!("training_fanout_{viewers}_unshown"),
                "episodes not shown",
            )
        };
        r.add(
            &key,
            &format!("training env steps/s, {what}, {viewers} viewers"),
            format!("{sps:.0} steps/s"),
            &format!("{steps} steps (seed 1) in {secs:.2} s"),
            json!({"viewers": viewers, "env_steps_per_sec": sps, "steps": steps, "secs": secs}),
        );
    }
}

/// Pacing and learning (issues 16 and 30): the same seeded run unpaced and with every 5th episode
/// replayed at 0.05 s a step (`pacing: replay`), one viewer each: replayed episodes are recorded
/// at full speed beside the run, so the two should train at the same speed.
async fn paced_vs_unpaced(r: &mut Report) {
    let s = Server::start();
    let mut rates = Vec::new();
    for (label, show_every, delay) in [("unpaced", 100000, 0.0), ("replay pacing", 5, 0.05)] {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        let cfg = json!({"command":"start_training","num_episodes":200,"max_steps":300,"batch_size":64,
                         "show_every":show_every,"step_delay":delay,"seed":1,"pacing":"replay"});
        let t = Instant::now();
        v.send(cfg).await;
        let (steps, trained) = count_run_steps(&mut v).await;
        // Until the last episode: a replayed run's last replay plays out after it.
        let sps = steps as f64 / trained.duration_since(t).as_secs_f64();
        rates.push(sps);
        r.add(
            &format!("training_{}", label.replace([' ', '-'], "_")),
            &format!("training env steps/s, {label}, 1 viewer"),
            format!("{sps:.0} steps/s"),
            &format!("{steps} steps (seed 1, batch 64)"),
            json!({"env_steps_per_sec": sps, "steps": steps}),
        );
    }
    r.add(
        "training_paced_ratio",
        "… paced / unpaced",
        format!("{:.2}", rates[1] / rates[0]),
        "1.00 = pacing costs learning nothing",
        json!(rates[1] / rates[0]),
    );
}

/// Env steps of one run, from its `episode_complete` frames, until `training_complete`, and when
/// the last episode completed.
async fn count_run_steps(ws: &mut Ws) -> (u64, Instant) {
    let (mut steps, mut last) = (0, Instant::now());
    loop {
        let v = ws.next(Duration::from_secs(120)).await.unwrap();
        if v["type"] == "episode_complete" {
            steps += v["length"].as_u64().unwrap();
            last = Instant::now();
        }
        if v["type"] == "training_complete" {
            return (steps, last);
        }
        ws.seen.clear();
    }
}

#[tokio::main]
async fn main() {
    floor::run_if_waker();
    let only: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
        // `--help` included: usage, and nothing run or written.
        let code = if unknown == "--help" || unknown == "-h" {
            0
        } else {
            2
        };
        if code != 0 {
            eprintln!("bench: no section {unknown:?}\n");
        }
        println!("{USAGE}");
        std::process::exit(code);
    }
    let mut r = Report {
        rows: vec![],
        json: serde_json::Map::new(),
    };
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "Hamlet benchmarks — {} cores, {host}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<58} {:>28}   how", "figure", "value");
    let want = |k: &str| only.is_empty() || only.iter().any(|o| o == k);
    if want("world") {
        world(&mut r);
    }
    if want("decision") {
        decision(&mut r);
    }
    let mut guard = guard::Guard::load(&root().join("scripts/bench-baseline.json"));
    if want("dqn") {
        for (net, ratio, update_ms) in dqn(&mut r) {
            let (n, what) = (net.as_str(), format!("DQN {} batch 64", net.as_str()));
            let key = format!("dqn_ratio_{n}_b64");
            guard.judge(&key, &format!("{what}: update ÷ its GEMMs"), Lower, ratio);
            let key = format!("dqn_update_ms_{n}_b64");
            guard.judge(&key, &format!("{what}: update (ms)"), Lower, update_ms);
        }
    }
    if want("decision") {
        worker_start(&mut r).await;
    }
    if want("relay") {
        let f = relay::relay(&mut r).await;
        let ratio = "relay ÷ direct round trip p50";
        guard.judge("relay_rtt_ratio_p50", ratio, Lower, f.rtt_ratio_p50);
        let rtt = "relay round trip p50 (ms)";
        guard.judge("relay_rtt_p50_ms", rtt, Lower, f.rtt_p50_ms);
        let cpu = "metaserver CPU per relayed frame (µs)";
        guard.judge(
            "relay_metaserver_us_per_frame",
            cpu,
            Lower,
            f.metaserver_us_per_frame,
        );
    }
    if want("idle") {
        idle(&mut r).await;
    }
    if want("start") {
        session_start(&mut r).await;
    }
    if want("crash") {
        crash_recovery(&mut r).await;
    }
    if want("training") {
        training_fanout(&mut r).await;
        paced_vs_unpaced(&mut r).await;
    }
    if want("scale") {
        floor::wake_floor(&mut r, 256);
        let figures = scale::scale(&mut r).await;
        let what = "256 sessions at speed 10: frames/s per session";
        let per = figures.per_session_256;
        guard.judge("pace_256_per_session", what, guard::Better::Higher, per);
        let what = "256 sessions at speed 10: pace, share of one session's alone";
        let share = figures.pace_share_256;
        guard.judge("pace_256_share", what, guard::Better::Higher, share);
        let what = "100 sessions at speed 10: worker CPU per paced step, µs";
        let us = figures.worker_us_per_step_100;
        guard.judge("worker_us_per_step_100", what, Lower, us);
    }
    if want("detail") {
        detail(&mut r).await;
    }
    if want("sessions") {
        sessions::sessions(&mut r).await;
    }
    if want("cluster") {
        cluster::cluster(&mut r).await;
    }
    if want("rooms") {
        rooms::rooms(&mut r).await;
    }
    // Long runs, only when asked for by name: the lesson through the stack (about 15 minutes),
    // and the offline trainer alone (about an hour, at most 2¼ hours by its caps).
    if only.iter().any(|o| o == "learn") {
        lesson::lesson(&mut r).await;
    }
    if only.iter().any(|o| o == "learn-demo") {
        lesson::demo(&mut r).await;
    }
    if only.iter().any(|o| o == "learn-offline") {
        learn::learn_offline(&mut r);
    }
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let doc = json!({"machine": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get()), "cpu": host}, "figures": r.json});
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    println!("\nwrote target/bench/latest.json");
    let guarded = ["dqn", "relay", "scale"].iter().any(|k| want(k));
    std::process::exit(guard.finish(guarded));
}

/// Every section `scripts/bench` knows; the last three run only when named.
const SECTIONS: [&str; 16] = [
    "world",
    "decision",
    "dqn",
    "relay",
    "idle",
    "start",
    "crash",
    "training",
    "scale",
    "detail",
    "sessions",
    "cluster",
    "rooms",
    "learn",
    "learn-demo",
    "learn-offline",
];

const USAGE: &str = "usage: scripts/bench [SECTION...]

Measures this project's speed and memory figures on this machine, prints a table and writes
target/bench/latest.json. With no section, every section but the long ones runs (a few minutes).

sections: world decision dqn relay idle start crash training scale detail sessions cluster rooms
long ones, only when named: learn (the lesson presets through the whole stack, about 15 minutes),
  learn-demo (the 1-minute demo alone, about 3 minutes), learn-offline (about an hour)

Exits 1 when a figure guarded against scripts/bench-baseline.json (dqn, relay, scale) is worse than
its committed value by more than the stated noise, misses its target, or cannot be judged.";
