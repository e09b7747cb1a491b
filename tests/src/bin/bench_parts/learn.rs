//! `scripts/bench learn-offline`: time to competence of `worker-training train` alone. Fresh runs
//! with the trainer's defaults (= `TrainingConfig::full_run`, the form's "full run" preset; nothing
//! paced), three seeds per network, each until its greedy evaluation first survives the step cap
//! with a return of at least [`COMPETENT_RETURN`] (or until [`cap`]). Runs go one at a time, so
//! each has a core to itself and the other core serves the rest of the machine.
//!
//! The lesson through the whole stack is `scripts/bench learn` (`lesson.rs`).

use super::{pct, Report};
use hamlet_tests::{bin_dir, root};
use ipc_proto::training::COMPETENT_RETURN;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
/// A run that is not competent by then is reported as not there: 15 minutes for the qnetwork,
/// 30 for the dueling network, whose seed-1 run needed 14–15 minutes here (BENCHMARKS.md).
fn cap(net: &str) -> Duration {
    Duration::from_secs(if net == "dueling" { 1800 } else { 900 })
}
const SEEDS: [u64; 3] = [1, 2, 3];
/// Wall times at which the curve is sampled: over the first five minutes for the qnetwork, over
/// twenty for the dueling network, which needs about fifteen.
fn curve_at(net: &str) -> [f64; 6] {
    if net == "dueling" {
        [60.0, 180.0, 300.0, 600.0, 900.0, 1200.0]
    } else {
        [30.0, 60.0, 120.0, 180.0, 240.0, 300.0]
    }
}

/// One greedy evaluation as the trainer printed it.
#[derive(Debug, Clone, Copy)]
struct Eval {
    episode: u32,
    steps: u32,
    ret: f64,
    secs: f64,
    env_steps: u64,
}

/// What one run reached.
struct RunResult {
    evals: Vec<Eval>,
    competent: Option<Eval>,
    /// Wall time when the run ended (competent, or at its cap).
    secs: f64,
}

pub fn learn_offline(r: &mut Report) {
    for net in ["qnetwork", "dueling"] {
        let runs: Vec<RunResult> = SEEDS.iter().map(|&s| run(net, s)).collect();
        for (seed, run) in SEEDS.iter().zip(&runs) {
            report_run(r, net, *seed, run);
        }
        let mut times: Vec<f64> = runs
            .iter()
            .map(|r| r.competent.map_or(f64::INFINITY, |e| e.secs))
            .collect();
        let med = pct(&mut times, 0.5);
        r.add(
            &format!("learn_{net}_median_secs"),
            &format!("time to competence, {net}: median of 3 seeds"),
            if med.is_finite() {
                format!("{med:.0} s")
            } else {
                format!("not reached in {} s", cap(net).as_secs())
            },
            "greedy survives 500 steps with return ≥ 1000",
            json!({"median_secs": med.is_finite().then_some(med), "secs": times.iter().map(|t| t.is_finite().then_some(*t)).collect::<Vec<_>>()}),
        );
    }
}

fn report_run(r: &mut Report, net: &str, seed: u64, run: &RunResult) {
    let value = match run.competent {
        Some(e) => format!(
            "{:.0} s, {} k steps, ep {}",
            e.secs,
            e.env_steps / 1000,
            e.episode
        ),
        None => format!("not in {} s", cap(net).as_secs()),
    };
    // The curve: the last evaluation before each sample time, as survival/return.
    let curve_at = curve_at(net);
    let curve: Vec<String> = curve_at
        .iter()
        .map(|t| match run.competent {
            // Sample times after the run ended show how it ended, not a repeated last value.
            Some(_) if *t > run.secs => "done".into(),
            None if *t > run.secs => "(capped)".into(),
            _ => run
                .evals
                .iter()
                .take_while(|e| e.secs <= *t)
                .last()
                .map_or("–".into(), |e| format!("{}/{:.0}", e.steps, e.ret)),
        })
        .collect();
    let best = run
        .evals
        .iter()
        .filter(|e| e.steps >= 500)
        .max_by(|a, b| a.ret.total_cmp(&b.ret));
    r.add(
        &format!("learn_{net}_s{seed}"),
        &format!("  {net} seed {seed}: competent after"),
        value,
        &format!(
            "curve at {curve_at:?} s (survival/return): {}",
            curve.join(" ")
        ),
        json!({
            "competent": run.competent.map(|e| json!({"secs": e.secs, "env_steps": e.env_steps, "episode": e.episode, "return": e.ret})),
            "best_surviving_return": best.map(|e| e.ret),
            "curve": curve_at.iter().zip(&curve).map(|(t, c)| json!({"secs": t, "survival/return": c})).collect::<Vec<_>>(),
        }),
    );
}

/// One fresh run of `worker-training train` with its defaults; the best model is kept in
/// target/bench/learn-NET-sSEED.onnx and the trainer's lines (one greedy evaluation per episode)
/// in learn-NET-sSEED.log beside it, for drawing the whole curve.
fn run(net: &str, seed: u64) -> RunResult {
    let out = root().join(format!("target/bench/learn-{net}-s{seed}.onnx"));
    std::fs::create_dir_all(out.parent().expect("a file in a directory")).expect("target/bench");
    let mut log = std::fs::File::create(out.with_extension("log")).expect("learn log");
    let mut child = Command::new(bin_dir().join("worker-training"))
        .args(["train", "--quiet", "--episodes", "100000", "--network", net])
        .args(["--seed", &seed.to_string()])
        .args(["--stop-at-return", &COMPETENT_RETURN.to_string()])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker-training");
    let started = Instant::now();
    let mut result = RunResult {
        evals: Vec::new(),
        competent: None,
        secs: 0.0,
    };
    let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    for line in lines.map_while(Result::ok) {
        // The log is a by-product: a full disk must not end the measurement.
        let _ = writeln!(log, "{line}");
        if let Some(e) = parse_eval(&line) {
            result.evals.push(e);
            if line.contains("COMPETENT") {
                result.competent = Some(e);
            }
        }
        if started.elapsed() > cap(net) {
            break;
        }
    }
    result.secs = started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Reads `ep N ... greedy S (R)  t Ts  steps K` lines.
fn parse_eval(line: &str) -> Option<Eval> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| words.iter().position(|w| *w == key);
    let g = at("greedy")?;
    let t = at("t")?;
    let k = at("steps")?;
    Some(Eval {
        episode: words.get(1)?.parse().ok()?,
        steps: words.get(g + 1)?.parse().ok()?,
        ret: words
            .get(g + 2)?
            .trim_matches(|c| c == '(' || c == ')')
            .parse()
            .ok()?,
        secs: words.get(t + 1)?.trim_end_matches('s').parse().ok()?,
        env_steps: words.get(k + 1)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_trainers_evaluation_lines() {
        let l = "ep   600  len 500  reward  -249.9  loss  1.000  eps 0.050  avg10 len 500.0 reward -1.0  greedy 500 (-249.9)  t 58.8s  steps 119626  COMPETENT";
        let e = super::parse_eval(l).unwrap();
        assert_eq!((e.episode, e.steps, e.env_steps), (600, 500, 119626));
        assert_eq!((e.ret, e.secs), (-249.9, 58.8));
    }
}
