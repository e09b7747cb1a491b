//! Cluster chaos (`scripts/chaos --cluster`): a real local cluster (Redis, 3 nodes, HAProxy) with
//! sessions playing through HAProxy while each node in turn is killed (`kill -9`) or drained
//! (SIGTERM), chosen at random, and started again on the same address. Each browser reconnects through HAProxy with its
//! resume token, as the UI does. Loopback only; bounded in time; stops by itself.
//!
//! A session is lost when a reconnection is not `resumed` into the same session, or it cannot get
//! back within [`RESUME_DEADLINE`]. Rewind is counted in frames: how far before the last frame
//! the browser saw its session came back (exact after a drain; at most one flush interval after
//! a kill).

use crate::cluster::{follows, node_opts, rewind, Haproxy, Redis};
use crate::{free_port, Server, Ws};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const RESUME_DEADLINE: Duration = Duration::from_secs(30);
const NODES: usize = 3;

#[derive(Debug, Clone)]
pub struct ClusterChaosConfig {
    pub duration: Duration,
    pub sessions: usize,
    pub hit_every: Duration,
    /// Share of hits that drain (SIGTERM) rather than kill.
    pub drain_share: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterChaosReport {
    pub duration_secs: f64,
    pub nodes: usize,
    pub sessions: usize,
    pub sessions_lost: usize,
    pub lost_reasons: Vec<String>,
    pub kills: usize,
    pub drains: usize,
    pub resumes: usize,
    /// Frames back, after kills and after drains.
    pub rewind_frames_kill: Vec<usize>,
    pub rewind_frames_drain: Vec<usize>,
    /// From the connection's end to the first frame of the resumed session, milliseconds.
    pub time_to_resume_ms: Vec<f64>,
    pub continuity_violations: usize,
    pub violation_examples: Vec<String>,
    pub frames: u64,
}

/// What one followed session saw.
#[derive(Default)]
struct Followed {
    lost: Option<String>,
    resumes: Vec<(bool, usize, f64)>,
    violations: Vec<String>,
    frames: u64,
}

fn position(v: &Value) -> Option<(u64, u64)> {
    if v["type"] != "state_update" {
        return None;
    }
    Some((v["episode"].as_u64()?, v["step"].as_u64()?))
}

/// Opens a session through the proxy, plays it at speed 5, and follows it until `until`,
/// resuming it whenever its connection ends.
async fn follow(lb: String, until: Instant) -> Followed {
    let mut out = Followed::default();
    let Ok(mut ws) = Ws::connect(&format!("ws://{lb}/ws")).await else {
        out.lost = Some("could not connect".into());
        return out;
    };
    let c = ws.expect("connected", crate::T).await;
    let (token, id) = (
        c["resume_token"].as_str().unwrap_or("").to_owned(),
        c["session_id"].clone(),
    );
    ws.send(json!({"command":"set_speed","speed":5})).await;
    ws.send(json!({"command":"play"})).await;
    let mut seen: Vec<(u64, u64)> = Vec::new();
    while Instant::now() < until {
        match ws.next(Duration::from_secs(1)).await {
            Ok(v) => {
                if let Some(p) = position(&v) {
                    if let Some(prev) = seen.last().copied().filter(|q| !follows(*q, p)) {
                        out.violations.push(format!("{prev:?} then {p:?}"));
                    }
                    seen.push(p);
                    out.frames += 1;
                }
            }
            // A quiet second (a node being replaced behind a live connection cannot happen: its
            // connections end with it).
            Err(e) if e.to_string().starts_with("timeout") => continue,
            Err(_) => {
                if Instant::now() >= until {
                    break;
                }
                let drained = ws.closed.as_ref().is_some_and(|c| c.0 == 1012);
                match resume(&lb, &token, &id).await {
                    Ok((next, at, ms)) => {
                        let back = match rewind(&seen, at) {
                            Ok(r) => r,
                            Err(e) => {
                                out.violations.push(e);
                                0
                            }
                        };
                        out.resumes.push((drained, back, ms));
                        seen.push(at);
                        ws = next;
                    }
                    Err(e) => {
                        out.lost = Some(e);
                        return out;
                    }
                }
            }
        }
        if seen.len() > 4000 {
            seen.drain(..2000);
        }
    }
    out
}

/// Reconnects through the proxy until the session is back: the new connection, where it
/// resumed, and how long it took.
async fn resume(lb: &str, token: &str, id: &Value) -> Result<(Ws, (u64, u64), f64), String> {
    let t = Instant::now();
    while t.elapsed() < RESUME_DEADLINE {
        if let Ok(mut ws) = Ws::connect(&format!("ws://{lb}/ws?resume={token}")).await {
            if let Ok(c) = ws.next(Duration::from_secs(10)).await {
                if c["type"] == "connected" {
                    if c["resumed"] != true || c["session_id"] != *id {
                        return Err(format!("came back to another session: {c}"));
                    }
                    let f = ws.expect("state_update", crate::T).await;
                    let at = position(&f).ok_or("no position")?;
                    return Ok((ws, at, t.elapsed().as_secs_f64() * 1000.0));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("not back within {RESUME_DEADLINE:?}"))
}

/// Node `i` (1-based) on its fixed address.
fn start_node(redis: &str, i: usize, port: u16) -> Server {
    let port = port.to_string();
    Server::start_with(node_opts(redis, i, &["--port", &port]))
}

pub async fn run(cfg: ClusterChaosConfig) -> ClusterChaosReport {
    let redis = Redis::start();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Option<Server>> = (0..NODES)
        .map(|i| Some(start_node(&redis.url(), i + 1, ports[i])))
        .collect();
    let lb = Haproxy::start(&nodes.iter().flatten().collect::<Vec<_>>());
    let start = Instant::now();
    let until = start + cfg.duration;
    let followers: Vec<_> = (0..cfg.sessions)
        .map(|_| tokio::spawn(follow(lb.addr.clone(), until)))
        .collect();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(cfg.seed);
    let mut rep = ClusterChaosReport {
        nodes: NODES,
        sessions: cfg.sessions,
        ..Default::default()
    };
    // Leave the last stretch quiet so every hit's sessions can come back before the end.
    while Instant::now() + cfg.hit_every + Duration::from_secs(8) < until {
        tokio::time::sleep(cfg.hit_every).await;
        // Each node in turn: a restarted node is empty, and leastconn fills it with the next
        // resumes, so every node carries sessions when its turn comes.
        let i = (rep.kills + rep.drains) % NODES;
        let Some(mut victim) = nodes[i].take() else {
            continue;
        };
        if rng.random_bool(cfg.drain_share) {
            rep.drains += 1;
            let _ = tokio::task::spawn_blocking(move || victim.terminate()).await;
        } else {
            rep.kills += 1;
            victim.kill9();
        }
        let url = redis.url();
        let port = ports[i];
        // On this (long-lived) worker thread, not a blocking-pool one: the node's parent-death
        // signal fires when the thread that started it exits.
        nodes[i] = Some(tokio::task::block_in_place(|| {
            start_node(&url, i + 1, port)
        }));
    }
    for f in followers {
        let o = f.await.unwrap_or_default();
        rep.frames += o.frames;
        rep.continuity_violations += o.violations.len();
        rep.violation_examples
            .extend(o.violations.into_iter().take(2));
        for (drained, back, ms) in o.resumes {
            rep.resumes += 1;
            rep.time_to_resume_ms.push(ms);
            if drained {
                rep.rewind_frames_drain.push(back);
            } else {
                rep.rewind_frames_kill.push(back);
            }
        }
        if let Some(reason) = o.lost {
            rep.sessions_lost += 1;
            rep.lost_reasons.push(reason);
        }
    }
    rep.duration_secs = start.elapsed().as_secs_f64();
    drop(lb);
    drop(nodes);
    rep
}
