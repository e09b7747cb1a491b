//! `scripts/bench learn`: the lesson through the whole stack, as a class meets it — a metaserver,
//! its `worker-training` process and 30 viewer connections reading every frame. Two figures:
//! - the "Learn to survive" preset: time from `training_started` to its first competent greedy
//!   evaluation (survives `max_steps` with a return of at least 1000), three seeds, median;
//! - the "1-minute demo" preset: the greedy survival of the model it saves (its best evaluation),
//!   three seeds.
//!
//! Runs go one at a time on a fresh server each. Their preset configurations come from the
//! server's own `GET /api/training/config`, so the bench measures what the form offers.

use super::{pct, Report};
use hamlet_tests::{Server, Ws, T};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SEEDS: [u64; 3] = [1, 2, 3];
const VIEWERS: usize = 30;
/// A lesson run not competent by then is reported as not there.
const CAP: Duration = Duration::from_secs(900);

/// One greedy evaluation as the viewers saw it, with when it arrived.
struct Eval {
    secs: f64,
    episode: u64,
    steps: u64,
    ret: f64,
}

/// What one run through the stack came to.
struct LiveRun {
    evals: Vec<Eval>,
    /// Env steps of the episodes completed when the run ended.
    env_steps: u64,
    /// The run's `training_complete`, if it came before the cap.
    complete: Option<Value>,
    secs: f64,
    /// State updates the slowest and the fastest viewer received.
    frames: (usize, usize),
}

impl LiveRun {
    fn competent_at(&self) -> Option<&Eval> {
        self.evals
            .iter()
            .find(|e| e.steps >= 500 && e.ret >= ipc_proto::training::COMPETENT_RETURN)
    }
}

pub async fn lesson(r: &mut Report) {
    let mut times = Vec::new();
    for seed in SEEDS {
        let run = live_run("learn", seed).await;
        let at = run.competent_at();
        times.push(at.map_or(f64::INFINITY, |e| e.secs));
        let value = match at {
            Some(e) => format!("{:.0} s, ep {}", e.secs, e.episode),
            None => format!("not in {} s", CAP.as_secs()),
        };
        let curve: Vec<String> = [30.0, 60.0, 90.0, 120.0, 180.0]
            .iter()
            .map(|t| {
                run.evals
                    .iter()
                    .take_while(|e| e.secs <= *t)
                    .last()
                    .map_or("–".into(), |e| format!("{}/{:.0}", e.steps, e.ret))
            })
            .collect();
        r.add(
            &format!("lesson_learn_s{seed}"),
            &format!("  lesson preset, seed {seed}: competent after"),
            value,
            &format!(
                "{VIEWERS} viewers; {} k env steps; greedy survival/return at 30 60 90 120 180 s: {}; frames per viewer {}–{}",
                run.env_steps / 1000,
                curve.join(" "),
                run.frames.0,
                run.frames.1
            ),
            json!({"secs": at.map(|e| e.secs), "episode": at.map(|e| e.episode),
                   "env_steps": run.env_steps, "stopped_itself": run.complete.as_ref().map(|c| c["competent"].clone()),
                   "frames_per_viewer": [run.frames.0, run.frames.1]}),
        );
    }
    let med = pct(&mut times, 0.5);
    r.add(
        "lesson_learn_median_secs",
        "lesson preset: time to competence, median of 3 seeds",
        if med.is_finite() {
            format!("{med:.0} s")
        } else {
            format!("not reached in {} s", CAP.as_secs())
        },
        "target ≤ 180 s; through the metaserver with 30 viewers",
        json!({"median_secs": med.is_finite().then_some(med),
               "secs": times.iter().map(|t| t.is_finite().then_some(*t)).collect::<Vec<_>>()}),
    );
    demo(r).await;
}

/// The "1-minute demo" preset alone (`scripts/bench learn-demo`).
pub async fn demo(r: &mut Report) {
    let mut survival = Vec::new();
    for seed in SEEDS {
        let run = live_run("demo", seed).await;
        let best = run.complete.as_ref().map(|c| c["best"].clone());
        let steps = best.as_ref().and_then(|b| b["steps"].as_u64()).unwrap_or(0);
        survival.push(steps as f64);
        r.add(
            &format!("lesson_demo_s{seed}"),
            &format!("  1-minute demo, seed {seed}: saved model survives"),
            format!("{steps} steps in {:.0} s", run.secs),
            &format!(
                "its best greedy evaluation {}; {} k env steps; {VIEWERS} viewers",
                best.map_or("–".into(), |b| b.to_string()),
                run.env_steps / 1000
            ),
            json!({"steps": steps, "secs": run.secs, "env_steps": run.env_steps,
                   "best": run.complete.map(|c| c["best"].clone())}),
        );
    }
    let med = pct(&mut survival, 0.5);
    r.add(
        "lesson_demo_median_steps",
        "1-minute demo: greedy survival of the saved model, median",
        format!("{med:.0} steps"),
        "target ≥ 300 steps (random policy ≈ 90)",
        json!({"median_steps": med, "steps": survival}),
    );
}

/// One run of `preset` with `seed` on a fresh server, watched by [`VIEWERS`] connections.
async fn live_run(preset: &str, seed: u64) -> LiveRun {
    let s = Server::start();
    let presets = s.get_json("/api/training/config")["presets"].clone();
    let p = presets
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == preset))
        .unwrap_or_else(|| panic!("no preset `{preset}`"));
    let mut start = p["config"].clone();
    start["command"] = json!("start_training");
    start["seed"] = json!(seed);
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        v.expect("training_status", T).await;
        viewers.push(v);
    }
    let mut first = viewers.remove(0);
    first.send(start).await;
    // Every pupil's screen reads at once, as browsers do.
    let others: Vec<_> = viewers
        .into_iter()
        .map(|mut v| tokio::spawn(async move { watch(&mut v).await.2 }))
        .collect();
    let (evals, complete, own_frames, env_steps, secs) = watch(&mut first).await;
    let mut frames = vec![own_frames];
    for h in others {
        frames.push(h.await.unwrap_or(0));
    }
    LiveRun {
        evals,
        env_steps,
        complete,
        secs,
        frames: (
            frames.iter().copied().min().unwrap_or(0),
            frames.iter().copied().max().unwrap_or(0),
        ),
    }
}

/// Reads one viewer until `training_complete` (or the cap): evaluations with their arrival time
/// since `training_started`, the completion, frames seen, env steps and seconds.
async fn watch(v: &mut Ws) -> (Vec<Eval>, Option<Value>, usize, u64, f64) {
    let mut t0 = None;
    let (mut evals, mut frames, mut steps) = (Vec::new(), 0, 0);
    loop {
        let Ok(m) = v.next(CAP).await else {
            let secs = t0.map_or(0.0, |t: Instant| t.elapsed().as_secs_f64());
            return (evals, None, frames, steps, secs);
        };
        let secs = t0.map_or(0.0, |t: Instant| t.elapsed().as_secs_f64());
        match m["type"].as_str() {
            Some("training_started") => t0 = Some(Instant::now()),
            Some("state_update") => frames += 1,
            Some("episode_complete") => steps += m["length"].as_u64().unwrap_or(0),
            Some("evaluation") => evals.push(Eval {
                secs,
                episode: m["episode"].as_u64().unwrap_or(0),
                steps: m["steps"].as_u64().unwrap_or(0),
                ret: m["return"].as_f64().unwrap_or(f64::NAN),
            }),
            Some("training_complete") => return (evals, Some(m), frames, steps, secs),
            _ => {}
        }
        if t0.is_some_and(|t| t.elapsed() > CAP) {
            return (evals, None, frames, steps, secs);
        }
        v.seen.clear();
    }
}
