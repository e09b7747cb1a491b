//! `scripts/chaos [SECONDS] [SESSIONS]`: the chaos run, with a report (table + target/chaos/latest.json).

use hamlet_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("--cluster") {
        return cluster(std::env::args().skip(2)).await;
    }
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
    let r = run(cfg.clone()).await;
    let failures = r.failures(&cfg);
    let rows: [(&str, String); 17] = [
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
        (
            "training: hits / restarts",
            format!("{} / {}", r.training_hits, r.training_restarts),
        ),
        (
            "training episodes lost: all / most in one restart",
            format!(
                "{} / {}",
                r.training_episodes_lost, r.training_most_lost_in_a_restart
            ),
        ),
        (
            "training: longest time without an episode",
            format!("{:.0} ms", r.training_longest_gap_ms),
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
            if failures.is_empty() {
                "PASS".into()
            } else {
                format!("FAIL: {}", failures.join("; "))
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
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

/// `scripts/chaos --cluster [SECONDS] [SESSIONS]`: nodes killed and drained under load.
async fn cluster(mut args: impl Iterator<Item = String>) {
    use hamlet_tests::chaos_cluster::{run, ClusterChaosConfig};
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(90);
    let sessions: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(12);
    let cfg = ClusterChaosConfig {
        duration: Duration::from_secs(secs),
        sessions,
        hit_every: Duration::from_secs(10),
        drain_share: 0.5,
        seed: 42,
    };
    println!("chaos --cluster: {secs} s, redis + 3 nodes + haproxy, {sessions} sessions at speed 5 through haproxy, each node in turn hit every {:?} ({}% drained, the rest kill -9), then started again", cfg.hit_every, (cfg.drain_share * 100.0) as u32);
    let r = run(cfg).await;
    let f = |v: &[usize]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
    let p = |v: &[f64], q: f64| match hamlet_tests::pct(&mut v.to_vec(), q / 100.0) {
        x if x.is_nan() => "–".to_owned(),
        x => format!("{x:.0}"),
    };
    let rows = [
        ("duration", format!("{:.0} s", r.duration_secs)),
        (
            "sessions / lost",
            format!("{} / {} {:?}", r.sessions, r.sessions_lost, r.lost_reasons),
        ),
        ("node kills / drains", format!("{} / {}", r.kills, r.drains)),
        ("resumes on another node", r.resumes.to_string()),
        (
            "rewind after a kill, frames p50 / p99 / max",
            format!(
                "{} / {} / {}",
                p(&f(&r.rewind_frames_kill), 50.0),
                p(&f(&r.rewind_frames_kill), 99.0),
                p(&f(&r.rewind_frames_kill), 100.0)
            ),
        ),
        (
            "rewind after a drain, frames max",
            p(&f(&r.rewind_frames_drain), 100.0),
        ),
        (
            "time to resume, ms p50 / p99",
            format!(
                "{} / {}",
                p(&r.time_to_resume_ms, 50.0),
                p(&r.time_to_resume_ms, 99.0)
            ),
        ),
        (
            "continuity violations",
            format!("{} {:?}", r.continuity_violations, r.violation_examples),
        ),
        ("state_update frames received", r.frames.to_string()),
        (
            "duplicated tabs (each takes its session over)",
            r.duplicates.to_string(),
        ),
        (
            "rewind for a duplicated tab, frames max",
            p(&f(&r.rewind_frames_duplicate), 100.0),
        ),
        (
            "watchers (through haproxy): frames / failures",
            format!("{} / {}", r.watcher_frames, r.watcher_failures),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<44} {v}");
    }
    let dir = hamlet_tests::root().join("target/chaos");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join("cluster-latest.json"),
        serde_json::to_string_pretty(&r).unwrap(),
    );
    let failures = r.failures();
    if failures.is_empty() {
        println!("PASS");
    } else {
        println!("FAIL: {}", failures.join("; "));
        std::process::exit(1);
    }
}
