//! `scripts/bench sessions`: what durable sessions cost (sessions.md): resume latency, the store's
//! write cost per session (through a server, and one write alone against the atomic file write the
//! store used before), and the memory a detached session takes.

use super::{pct, Report};
use futures_util::future::join_all;
use hamlet_tests::{rss_kib, Server, ServerOpts, Ws, T};
use ipc_proto::browser::{EndReason, EpisodeSummary};
use metaserver::session::dir_store::DirStore;
use metaserver::session::store::{SessionStore, StoredSession};
use metaserver::tokens::TokenHash;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn sessions(r: &mut Report) {
    resume_latency(r).await;
    flush_cost(r).await;
    store_write_cpu(r);
    detached_memory(r).await;
}

/// One write of the directory store (two copies per session, rewritten in place) made durable
/// three ways: in a round of 256 with one `syncfs` (how live sessions write, `store_writer.rs`),
/// one by one with an `fdatasync` each (`put`: migrations, and how the store wrote before
/// rounds), and as the store wrote before copies (`hamlet_onnx::write_atomic`: a new file, fsync,
/// rename, fsync of the directory); each encodes the session as it writes. Per write: the whole
/// machine's CPU (`/proc/stat`: a `syncfs` has kernel threads write the pages back) and the wall
/// time; 256 sessions, 8 rounds after two that create the files; for a session just begun and
/// for one with 100 episodes behind it (its `recent` list full).
fn store_write_cpu(r: &mut Report) {
    let dir = hamlet_tests::temp_dir("store-writes");
    for episodes in [0, 100] {
        let sub = |name: &str| dir.join(format!("{name}-{episodes}"));
        let (rounds, one_by_one) = (
            DirStore::open(&sub("rounds")).unwrap(),
            DirStore::open(&sub("one-by-one")).unwrap(),
        );
        let atomic = sub("atomic");
        std::fs::create_dir_all(&atomic).unwrap();
        let entries: Vec<StoredSession> = (0..256).map(|i| stored_session(i, episodes)).collect();
        let mut round = || assert!(rounds.put_round(&entries).iter().all(|o| o.is_ok()));
        let (round_cpu, round_wall) = per_write(&mut round, entries.len());
        let mut each = || {
            for e in &entries {
                one_by_one.put(e).unwrap();
            }
        };
        let (each_cpu, each_wall) = per_write(&mut each, entries.len());
        let mut files = || {
            for (i, e) in entries.iter().enumerate() {
                let bytes = serde_json::to_vec(e).unwrap();
                hamlet_onnx::write_atomic(&atomic.join(format!("{i}.session")), &bytes).unwrap();
            }
        };
        let (files_cpu, files_wall) = per_write(&mut files, entries.len());
        let bytes = serde_json::to_vec(&entries[0]).unwrap().len();
        r.add(
            &format!("store_write_{episodes}"),
            &format!("store: CPU | wall per write, {episodes:>3} episodes: round, one by one, new file"),
            format!("{round_cpu:.0} | {round_wall:.0}, {each_cpu:.0} | {each_wall:.0}, {files_cpu:.0} | {files_wall:.0} µs"),
            &format!("{bytes} bytes a session, 256 sessions, 8 rounds; the machine's CPU (/proc/stat); copies in a round of 256 + one syncfs, copies + fdatasync each, write_atomic"),
            json!({"episodes": episodes, "bytes": bytes, "round_cpu_us": round_cpu, "round_wall_us": round_wall, "copies_cpu_us": each_cpu, "copies_wall_us": each_wall, "atomic_cpu_us": files_cpu, "atomic_wall_us": files_wall}),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// µs of the machine's CPU and of wall time per write: two rounds first (the store's second copy
/// of each session is created in its second), then 8 timed.
fn per_write(round: &mut dyn FnMut(), writes: usize) -> (f64, f64) {
    round();
    round();
    let (cpu0, t0) = (machine_busy(), Instant::now());
    for _ in 0..8 {
        round();
    }
    let n = (8 * writes) as f64;
    let cpu = (machine_busy() - cpu0).as_secs_f64() * 1e6 / n;
    (cpu, t0.elapsed().as_secs_f64() * 1e6 / n)
}

/// CPU time the whole machine has spent busy (`/proc/stat`'s first line: everything but idle
/// and iowait), in its clock ticks of 10 ms.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Duration::from_millis((ticks.iter().sum::<u64>() - idle) * 10)
}

/// A session as the store keeps it after `episodes` episodes (the last ≤ 100 in its `recent`
/// list), without its world's snapshot (about a kilobyte more).
fn stored_session(i: usize, episodes: u32) -> StoredSession {
    let recent = (1..=episodes.min(100))
        .map(|episode| EpisodeSummary {
            episode,
            length: 180 + episode,
            reward: -3.25 + f64::from(episode) * 0.01,
            reason: EndReason::MeterDepleted,
            meter: Some("energy".into()),
        })
        .collect();
    StoredSession {
        id: format!("session-{i}"),
        token: TokenHash::of(&format!("token-{i}")),
        watch: TokenHash::of(&format!("watch-{i}")),
        seed: i as u64,
        snapshot: None,
        epoch: 1,
        saved_at_ms: 0,
        running: true,
        recent,
    }
}

/// A session opened on `servers[0]`, dropped `n` times and resumed each time on the next server
/// in turn (round robin): milliseconds from each reconnect to its first `state_update`. Each
/// resume waits until the session was put away where it ran (as after a real network drop).
pub async fn resume_times(servers: &[&Server], n: usize) -> Vec<f64> {
    let mut ws = Ws::connect(&servers[0].url("/ws")).await.unwrap();
    let token = ws.expect("connected", T).await["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();
    ws.expect("state_update", T).await;
    let mut lat = Vec::new();
    for i in 0..n {
        ws.drop_connection();
        let (from, to) = (servers[i % servers.len()], servers[(i + 1) % servers.len()]);
        from.wait_for("the session detached", T, |s| {
            s.get_json("/api/status")["sessions"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        });
        let t = Instant::now();
        ws = Ws::connect(&to.url(&format!("/ws?resume={token}")))
            .await
            .unwrap();
        ws.expect("state_update", T).await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        ws.seen.clear();
    }
    lat
}

/// Drop the connection (no close frame), reconnect with the token: time to the first
/// `state_update`. Each resume finds the session put away in the store and starts its worker.
async fn resume_latency(r: &mut Report) {
    let s = Server::start_with(ServerOpts::default_model(&[]));
    let mut lat = resume_times(&[&s], 60).await;
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    r.add(
        "resume_latency_ms",
        "resume: reconnect with the token → first state_update",
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        "60 resumes of a detached session (a worker starts from the snapshot)",
        json!({"p50": p50, "p99": p99}),
    );
}

/// 16 sessions at speed 10 for 10 s, flushed every 250 ms: writes per session per second and
/// their time (from `/metrics`).
async fn flush_cost(r: &mut Report) {
    let s = Server::start_with(ServerOpts::default_model(&["--snapshot-flush-ms", "250"]));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        ws.expect("state_update", T).await;
        ws.send(json!({"command":"set_speed","speed":10})).await;
        ws.send(json!({"command":"play"})).await;
        clients.push(ws);
    }
    let (n0, sum0) = (
        s.metric("hamlet_store_flush_seconds_count"),
        s.metric("hamlet_store_flush_seconds_sum"),
    );
    let window = Duration::from_secs(10);
    let until = Instant::now() + window;
    join_all(clients.iter_mut().map(|ws| async move {
        while Instant::now() < until {
            if ws.next(Duration::from_secs(1)).await.is_err() {
                break;
            }
            ws.seen.clear();
        }
    }))
    .await;
    let n = s.metric("hamlet_store_flush_seconds_count") - n0;
    let secs = s.metric("hamlet_store_flush_seconds_sum") - sum0;
    let per_session_per_sec = n / 16.0 / window.as_secs_f64();
    let mean_ms = secs / n.max(1.0) * 1e3;
    let cost_ms_per_sec = per_session_per_sec * mean_ms;
    r.add(
        "store_flush",
        "store: writes per session per second | time per write",
        format!("{per_session_per_sec:.2} | {mean_ms:.2} ms ({cost_ms_per_sec:.2} ms/s per session)"),
        "16 sessions at speed 10, --snapshot-flush-ms 250, 10 s; from a session's ask to its copy durable: the store writer's round (5 ms of gathering, one syncfs) included",
        json!({"writes_per_session_per_sec": per_session_per_sec, "mean_ms": mean_ms, "ms_per_session_per_sec": cost_ms_per_sec}),
    );
}

/// 1000 sessions opened and left (each detached: snapshot in the store, no process): the
/// metaserver's memory before and after, per detached session.
async fn detached_memory(r: &mut Report) {
    let s = Server::start_with(ServerOpts::default_model(&["--max-detached", "4096"]));
    // Warm up the allocator and the paths once, then measure.
    open_and_leave(&s, 32).await;
    let before = rss_kib(s.pid);
    open_and_leave(&s, 1000).await;
    s.wait_for("1000 detached sessions", Duration::from_secs(60), |s| {
        // The listing shows the newest 100; the total counts them all.
        s.get_json("/api/status")["detached_total"]
            .as_u64()
            .is_some_and(|n| n >= 1032)
    });
    let after = rss_kib(s.pid);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / 1000.0;
    r.add(
        "detached_bytes",
        "memory of a detached session (metaserver RSS growth)",
        format!("{per:.0} bytes each"),
        &format!("1000 detached; RSS {before} → {after} KiB; the snapshot itself is on disk"),
        json!({"bytes_per_detached": per, "rss_before_kib": before, "rss_after_kib": after}),
    );
}

/// Opens `n` sessions (32 at a time), each taking its first frame, and leaves them.
async fn open_and_leave(s: &Server, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        join_all(chunk.iter().map(|_| async {
            let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
            ws.expect("state_update", T).await;
            ws.drop_connection();
        }))
        .await;
    }
}
