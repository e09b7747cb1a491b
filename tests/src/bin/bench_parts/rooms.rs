//! `scripts/bench rooms`: how the pool shares the cores (rooms.md). 1, 2 and 4 rooms train at
//! once (the same settings, each room its own seed), each watched by one viewer: env steps per
//! second per room and in all, and the metaserver's CPU per room. A training run keeps a core
//! busy, so on this 2-core machine the total is the number to read: rooms beyond the cores share.

use super::{cpu_secs, pct, Report};
use hamlet_tests::{Server, ServerOpts, Ws, T};
use serde_json::json;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(8);

pub async fn rooms(r: &mut Report) {
    for n in [1usize, 2, 4] {
        let s = Server::start_with(ServerOpts::default_model(&[
            "--max-training-runs",
            &n.to_string(),
        ]));
        let mut viewers = Vec::new();
        for i in 0..n {
            let mut v = Ws::connect(&s.url(&format!("/ws/training?room=r{i}")))
                .await
                .unwrap();
            v.expect("training_status", T).await;
            v.send(
                json!({"command":"start_training","num_episodes":100000,"max_steps":200,
                          "show_every":100000,"step_delay":0,"seed":i + 1}),
            )
            .await;
            v.expect("training_started", T).await;
            viewers.push(v);
        }
        // Past the first episodes (the replay memory filling), then a window for all at once.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = cpu_secs(s.pid);
        let until = Instant::now() + WINDOW;
        let counts =
            futures_util::future::join_all(viewers.iter_mut().map(|v| steps_until(v, until))).await;
        let cpu = (cpu_secs(s.pid) - cpu0) / WINDOW.as_secs_f64() * 100.0;
        let mut per: Vec<f64> = counts
            .iter()
            .map(|c| *c as f64 / WINDOW.as_secs_f64())
            .collect();
        let total: f64 = per.iter().sum();
        let median = pct(&mut per, 0.5);
        r.add(
            &format!("rooms_{n}"),
            &format!("{n} room(s) training at once: env steps/s per room (median), in all"),
            format!("{median:.0}, {total:.0}"),
            &format!(
                "{:.0} s window, 1 viewer each; metaserver {:.1} % CPU in all, {:.1} % per room",
                WINDOW.as_secs_f64(),
                cpu,
                cpu / n as f64
            ),
            json!({"rooms": n, "per_room_median": median, "per_room": per, "total": total, "metaserver_cpu_pct": cpu}),
        );
        for v in viewers.iter_mut() {
            v.send(json!({"command":"stop"})).await;
        }
    }
}

/// Env steps of the episodes a room's viewer sees completed before `until`.
async fn steps_until(v: &mut Ws, until: Instant) -> u64 {
    let mut steps = 0;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(m) = v.next(left).await else { break };
        if m["type"] == "episode_complete" {
            steps += m["length"].as_u64().unwrap_or(0);
        }
        v.seen.clear();
    }
    steps
}
