//! `scripts/chaos [SECONDS] [SESSIONS]`: the chaos run, with a report (table + target/chaos/latest.json).

use hamlet_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let sessions: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let cfg = ChaosConfig {
        duration: Duration::from_secs(secs),
        sessions,
        viewers: 10,
        kill_every: Duration::from_millis(500),
        stop_share: 0.2,
        drop_share: 0.25,
        seed: 42,
    };
    println!("chaos: {secs} s, {sessions} sessions at speed 10, a training run with {} viewers, a hit every {:?}: {}% drop a browser connection, the others hit a worker ({}% SIGSTOP, the rest SIGKILL)", cfg.viewers, cfg.kill_every, (cfg.drop_share * 100.0) as u32, (cfg.stop_share * 100.0) as u32);
    let r = run(cfg).await;
    let rows: [(&str, String); 16] = [
        ("duration", format!("{:.0} s", r.duration_secs)),
        ("sessions started", r.sessions_started.to_string()),
        (
            "sessions lost",
            format!("{} {:?}", r.sessions_lost, r.lost_reasons),
        ),
        (
            "hits: SIGKILL / SIGSTOP",
            format!("{} / {}", r.sigkills, r.sigstops),
        ),
        (
            "connections dropped / resumed",
            format!("{} / {}", r.connections_dropped, r.resumes),
        ),
        ("restarts (/metrics)", r.restarts_reported.to_string()),
        (
            "worker_restarted seen by clients",
            r.worker_restarted_seen.to_string(),
        ),
        (
            "longest gap between frames",
            format!("{:.0} ms", r.longest_gap_ms),
        ),
        (
            "step continuity violations",
            format!("{} {:?}", r.continuity_violations, r.violation_examples),
        ),
        ("state_update frames received", r.frames.to_string()),
        (
            "frames expected at full pace less hits",
            format!(
                "{:.0} (received {:.0} %)",
                r.frames_expected,
                100.0 * r.frames as f64 / r.frames_expected.max(1.0)
            ),
        ),
        ("training restarts", r.training_restarts.to_string()),
        (
            "training episodes lost to crashes",
            r.training_episodes_lost.to_string(),
        ),
        (
            "training episodes completed",
            r.training_episodes_completed.to_string(),
        ),
        (
            "metaserver RSS before → after",
            format!(
                "{:.1} → {:.1} MiB",
                r.metaserver_rss_before_mib, r.metaserver_rss_after_mib
            ),
        ),
        (
            "verdict",
            if passed(&r) {
                "PASS".into()
            } else {
                "FAIL".into()
            },
        ),
    ];
    for (k, v) in &rows {
        println!("{k:<36} {v}");
    }
    let dir = hamlet_tests::root().join("target/chaos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&r).unwrap(),
    )
    .unwrap();
    if !passed(&r) {
        std::process::exit(1);
    }
}

/// The same verdict as the short chaos test: nothing lost, no continuity violation, pace kept.
fn passed(r: &hamlet_tests::chaos::ChaosReport) -> bool {
    r.sessions_lost == 0
        && r.continuity_violations == 0
        && r.frames as f64 >= 0.8 * r.frames_expected
}
