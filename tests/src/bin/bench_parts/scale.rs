//! `scripts/bench scale`: 1 to 256 sessions at speed 10 — the pace they keep, the metaserver's and
//! the workers' CPU — and where a worker's CPU goes in a paced step (issue 34): waking, inference,
//! sending.

use super::{pct, pss_kib, watch_frames, Report};
use hamlet_tests::{rss_kib, temp_dir, Server, ServerOpts, Ws};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use worker_inference::profile::ENV_PROFILE_DIR;

/// The metaserver's count of steps released more than 50 ms late (`session/pacer.rs`).
const FELL_BEHIND: &str = "hamlet_paced_steps_fell_behind_total";

/// The figures the regression guard judges.
pub struct Scale {
    /// Frames per session per second with 256 sessions.
    pub per_session_256: f64,
    /// The same, as a share of one session's alone: of the pace a session keeps when the machine
    /// has nothing else to do (100 steps a second less the pauses between episodes).
    pub pace_share_256: f64,
    /// Worker CPU per paced step with 100 sessions, µs.
    pub worker_us_per_step_100: f64,
}

/// Sessions at speed 10, 1 to 256, then the split of a paced step on a second server.
pub async fn scale(r: &mut Report) -> Scale {
    let s = Server::start_with(ServerOpts::default_model(&["--max-sessions", "300"]));
    // The idle baseline: once the warm pool has its worker, and a second more to settle.
    s.wait_for("a warm worker", Duration::from_secs(30), |s| {
        !s.workers().is_empty()
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    idle_memory(r, &s);
    let mut clients: Vec<Ws> = Vec::new();
    let mut figures = Scale {
        per_session_256: f64::NAN,
        pace_share_256: f64::NAN,
        worker_us_per_step_100: f64::NAN,
    };
    let mut per_session_1 = f64::NAN;
    for n in [1usize, 16, 64, 100, 256] {
        s.open_playing(&mut clients, n).await;
        // Let every session reach its pace, then measure 5 s.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let worker_pids = active_workers(&s);
        let behind0 = s.metric(FELL_BEHIND);
        let w = watch_frames(&mut clients, s.pid, &worker_pids, Duration::from_secs(5)).await;
        // Steps released so late that their session's cadence started again, per session and
        // second: how often a session fell behind its speed.
        let behind = (s.metric(FELL_BEHIND) - behind0) / n as f64 / w.secs;
        let (secs, cpu, frames, mut gaps) = (w.secs, w.cpu_pct, w.frames, w.gaps);
        let p99 = pct(&mut gaps, 0.99);
        let mut pss: Vec<f64> = worker_pids
            .iter()
            .map(|p| pss_kib(*p) as f64 / 1024.0)
            .collect();
        let ms_rss = rss_kib(s.pid) as f64 / 1024.0;
        let fps = frames as f64 / secs;
        let per = fps / n as f64;
        // Each frame is one step of one worker.
        let worker_us_per_step = w.workers_cores * 1e6 / fps;
        match n {
            1 => per_session_1 = per,
            100 => figures.worker_us_per_step_100 = worker_us_per_step,
            256 => {
                figures.per_session_256 = per;
                figures.pace_share_256 = per / per_session_1;
            }
            _ => {}
        }
        r.add(
            &format!("scale_{n}"),
            &format!("{n:>3} sessions at speed 10: frames/s (per session), p99 gap"),
            format!("{fps:.0} ({per:.1}), {p99:.0} ms"),
            &format!("metaserver {cpu:.0}% CPU, {ms_rss:.0} MiB; workers {:.2} cores ({worker_us_per_step:.0} µs a step), PSS {:.1} MiB each; generator {:.0}% CPU; fell behind {behind:.2}/s a session", w.workers_cores, pct(&mut pss, 0.5), w.generator_cpu_pct),
            json!({"sessions": n, "frames_per_sec": fps, "per_session": per, "p99_gap_ms": p99, "metaserver_cpu_pct": cpu, "metaserver_rss_mib": ms_rss, "workers_cores": w.workers_cores, "worker_us_per_step": worker_us_per_step, "worker_pss_mib_median": pct(&mut pss, 0.5), "generator_cpu_pct": w.generator_cpu_pct, "fell_behind_per_session_per_sec": behind}),
        );
    }
    drop(clients);
    drop(s);
    r.add(
        "scale_pace_share_256",
        "256 sessions' pace, share of one session's alone",
        format!("{:.1} %", figures.pace_share_256 * 100.0),
        "frames/s per session at 256 ÷ at 1",
        json!(figures.pace_share_256),
    );
    split(r).await;
    figures
}

fn idle_memory(r: &mut Report, s: &Server) {
    let idle_rss = rss_kib(s.pid);
    r.add(
        "metaserver_rss_idle_kib",
        "metaserver RSS, idle",
        format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        "VmRSS",
        json!(idle_rss),
    );
    let idle_worker = s
        .workers()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .next()
        .unwrap();
    let (wr, wp) = (rss_kib(idle_worker), pss_kib(idle_worker));
    r.add(
        "worker_idle_kib",
        "idle inference worker with a model: RSS | PSS",
        format!("{:.1} | {:.1} MiB", wr as f64 / 1024.0, wp as f64 / 1024.0),
        "PSS shares library pages",
        json!({"rss": wr, "pss": wp}),
    );
}

fn active_workers(s: &Server) -> Vec<u32> {
    s.workers()
        .iter()
        .filter(|w| w["state"] == "active")
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect()
}

/// A worker's running totals (worker-inference's `profile`): steps, and nanoseconds waking,
/// in inference and sending.
fn totals(dir: &Path, pid: u32) -> [f64; 4] {
    let text = std::fs::read_to_string(dir.join(format!("{pid}.json"))).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    ["steps", "wake_ns", "inference_ns", "send_ns"].map(|k| v[k].as_f64().unwrap_or(0.0))
}

fn sum_totals(dir: &Path, pids: &[u32]) -> [f64; 4] {
    pids.iter()
        .map(|p| totals(dir, *p))
        .fold([0.0; 4], |a, t| std::array::from_fn(|i| a[i] + t[i]))
}

/// The same load on a server whose workers profile their steps: µs per step waking, in inference
/// and sending (a worker wakes, computes and sends once per batch of steps; each is divided by
/// the batch's steps). A separate pass, because profiling reads the thread's CPU clock and
/// writes a file, and would inflate the unprofiled figures above.
async fn split(r: &mut Report) {
    let dir = temp_dir("worker-profile");
    let mut opts = ServerOpts::default_model(&["--max-sessions", "300"]);
    opts.env
        .push((ENV_PROFILE_DIR.into(), dir.display().to_string()));
    let s = Server::start_with(opts);
    let mut clients: Vec<Ws> = Vec::new();
    for n in [1usize, 16, 100, 256] {
        s.open_playing(&mut clients, n).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pids = active_workers(&s);
        let t0 = sum_totals(&dir, &pids);
        let w = watch_frames(&mut clients, s.pid, &pids, Duration::from_secs(5)).await;
        let t1 = sum_totals(&dir, &pids);
        let steps = t1[0] - t0[0];
        let [wake, inference, send] = [1, 2, 3].map(|i| (t1[i] - t0[i]) / steps / 1e3);
        let whole = w.workers_cores * 1e6 * w.secs / w.frames as f64;
        r.add(
            &format!("scale_split_{n}"),
            &format!("{n:>3} sessions, a profiled step: wake | inference | send"),
            format!("{wake:.1} | {inference:.1} | {send:.1} µs"),
            &format!("of {whole:.0} µs of worker CPU a step, profiled (the rest: pings, other messages, profiling itself); {steps:.0} steps"),
            json!({"sessions": n, "wake_us": wake, "inference_us": inference, "send_us": send, "whole_us": whole, "steps": steps}),
        );
    }
    drop(clients);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
