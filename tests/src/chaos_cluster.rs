//! Cluster chaos (`scripts/chaos --cluster`): a real local cluster (Redis, 3 nodes, HAProxy) with
//! sessions playing through HAProxy while each node in turn is killed (`kill -9`) or drained
//! (SIGTERM), chosen at random, and started again on the same address. Each browser reconnects through HAProxy with its
//! resume token, as the UI does. Loopback only; bounded in time; stops by itself.
//!
//! A session is lost when a reconnection is not `resumed` into the same session, or it cannot get
//! back within [`RESUME_DEADLINE`]. Rewind is counted in frames: how far before the last frame
//! the browser saw its session came back (exact after a drain; at most one flush interval after
//! a kill).
//!
//! Where features meet (issue 31): every session also has a watcher, connected through HAProxy
//! (so usually on another node) and reconnecting when its node goes; and every few seconds a
//! session is opened a second time with its own token (a duplicated tab), which must take it over
//! (4001 to the first) and keep it. A watcher never takes a session over: an owner closed with
//! 4001 that did not duplicate itself is a loss.

use crate::chaos::Verdict;
use crate::cluster::{follows, node_opts, rewind, Haproxy, Redis};
use crate::{free_port, Server, Ws};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const RESUME_DEADLINE: Duration = Duration::from_secs(30);

/// The longest an open connection may stay silent: at speed 5 a frame comes every 200 ms, and a
/// node that dies or drains ends its connections (then the session resumes elsewhere). A
/// connection that stays open without frames is a lost session.
pub const MAX_SILENCE: Duration = Duration::from_secs(5);

/// The longest a watcher may go without a frame: its owner's node lost, the owner back on
/// another node ([`RESUME_DEADLINE`] at worst, about 100 ms measured) and the watcher's own
/// reconnection; more than this is a failure.
pub const MAX_WATCHER_SILENCE: Duration = Duration::from_secs(15);
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
    /// Duplicated resumes (a second tab): each must take the session over and keep it.
    pub duplicates: usize,
    /// How far back (frames) the second tab found the session.
    pub rewind_frames_duplicate: Vec<usize>,
    /// Watchers' frames, and how many watchers were ever refused or taken over.
    pub watcher_frames: u64,
    pub watcher_failures: usize,
    pub watcher_failure_reasons: Vec<String>,
}

impl ClusterChaosReport {
    /// The one verdict of a cluster chaos run, for the test and for `scripts/chaos --cluster`:
    /// what failed, or nothing. Nothing lost (a session closed, refused, taken over by a stranger
    /// or silent on an open connection), steps in order, watchers never refused or silent,
    /// duplicated tabs exercised, a drain rewinds nothing, and a kill at most one flush interval
    /// (250 ms = 12.5 frames at speed 5) plus the write in flight.
    pub fn failures(&self) -> Vec<String> {
        let mut v = Verdict::default();
        let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        v.nothing_lost(
            (self.sessions_lost, &self.lost_reasons),
            (self.continuity_violations, &self.violation_examples),
        );
        v.check(
            self.watcher_failures == 0,
            format!(
                "{} watcher failure(s): {:?}",
                self.watcher_failures, self.watcher_failure_reasons
            ),
        );
        v.check(
            self.kills + self.drains > 0 && self.resumes > 0,
            format!(
                "{} hits, {} resumes: nothing was exercised",
                self.kills + self.drains,
                self.resumes
            ),
        );
        v.check(self.duplicates > 0, "no duplicated tab".into());
        v.check(
            self.frames > 0 && self.watcher_frames > 0,
            "no frames".into(),
        );
        v.check(
            max(&self.rewind_frames_drain) == 0,
            format!(
                "a drain took back {} frames",
                max(&self.rewind_frames_drain)
            ),
        );
        v.check(
            max(&self.rewind_frames_kill) <= 20,
            format!("a kill took back {} frames", max(&self.rewind_frames_kill)),
        );
        v.check(
            max(&self.rewind_frames_duplicate) <= 40,
            format!(
                "a duplicated tab took back {} frames",
                max(&self.rewind_frames_duplicate)
            ),
        );
        v.failures()
    }
}

/// What one followed session saw.
#[derive(Default)]
struct Followed {
    lost: Option<String>,
    resumes: Vec<(bool, usize, f64)>,
    violations: Vec<String>,
    frames: u64,
    duplicates: usize,
    duplicate_rewinds: Vec<usize>,
    watcher_frames: u64,
    watcher_failures: Vec<String>,
}

/// A watcher of a session through the proxy, reconnecting when its node goes: frames it saw, and
/// why it failed, each time (refused — anything but a node going away or being drained —, taken
/// over, or silent longer than [`MAX_WATCHER_SILENCE`]).
async fn watch(lb: String, link: String, until: Instant) -> (u64, Vec<String>) {
    let (mut frames, mut failures) = (0, Vec::new());
    let mut last_frame = Instant::now();
    // What the watcher saw last besides frames, to say where a silence happened.
    let mut last_other = String::from("nothing yet");
    let silent = |last: &mut Instant, failures: &mut Vec<String>, connected: bool, other: &str| {
        if last.elapsed() > MAX_WATCHER_SILENCE {
            let at = if connected {
                "connected"
            } else {
                "while (re)connecting"
            };
            failures.push(format!(
                "a watcher went {:?} without a frame, {at}; last other message: {other}",
                last.elapsed()
            ));
            *last = Instant::now();
        }
    };
    while Instant::now() < until {
        silent(&mut last_frame, &mut failures, false, &last_other);
        let Ok(mut w) = Ws::connect(&format!("ws://{lb}/ws?watch={link}")).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            match w.next(Duration::from_secs(1)).await {
                Ok(v) if v["type"] == "state_update" => {
                    frames += 1;
                    last_frame = Instant::now();
                }
                Ok(v) if v["type"] == "error" && v["code"] != "store_unavailable" => {
                    failures.push(format!("a watcher was told: {v}"));
                }
                Ok(v) => last_other = v.to_string().chars().take(160).collect(),
                Err(e) if e.to_string().starts_with("timeout") => {
                    silent(&mut last_frame, &mut failures, true, &last_other)
                }
                Err(e) => {
                    last_other = format!("connection ended: {e} {:?}", w.closed);
                    break;
                }
            }
            w.seen.clear();
            if Instant::now() >= until {
                return (frames, failures);
            }
        }
        if w.closed.as_ref().is_some_and(|c| c.0 == 4001) {
            failures.push("a watcher was taken over (4001)".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (frames, failures)
}

fn position(v: &Value) -> Option<(u64, u64)> {
    if v["type"] != "state_update" {
        return None;
    }
    Some((v["episode"].as_u64()?, v["step"].as_u64()?))
}

/// Opens a session through the proxy, plays it at speed 5, and follows it until `until`,
/// resuming it whenever its connection ends; a watcher follows it too, and every `dup_every` it
/// is opened a second time (a duplicated tab), which takes it over.
async fn follow(lb: String, until: Instant, dup_every: Duration) -> Followed {
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
    let watcher = tokio::spawn(watch(
        lb.clone(),
        c["watch_token"].as_str().unwrap_or("").to_owned(),
        until,
    ));
    ws.send(json!({"command":"set_speed","speed":5})).await;
    ws.send(json!({"command":"play"})).await;
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut next_dup = Instant::now() + dup_every;
    let mut last_frame = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_dup && Instant::now() + Duration::from_secs(5) < until {
            next_dup = Instant::now() + dup_every;
            match duplicate(&lb, &token, &id, &mut ws, &mut seen).await {
                Ok((next, at)) => {
                    out.duplicates += 1;
                    // Resumed from the store on another node, or taken over live on the same one:
                    // at most a flush interval (and the wait for the first tab's close) back.
                    match rewind(&seen, at) {
                        Ok(back) => out.duplicate_rewinds.push(back),
                        Err(e) => out.violations.push(format!("duplicate: {e}")),
                    }
                    seen.push(at);
                    ws = next;
                    last_frame = Instant::now();
                }
                Err(e) => {
                    out.lost = Some(e);
                    return out;
                }
            }
        }
        match ws.next(Duration::from_secs(1)).await {
            Ok(v) => {
                if let Some(p) = position(&v) {
                    if let Some(prev) = seen.last().copied().filter(|q| !follows(*q, p)) {
                        out.violations.push(format!("{prev:?} then {p:?}"));
                    }
                    seen.push(p);
                    out.frames += 1;
                    last_frame = Instant::now();
                }
            }
            // A quiet second is allowed; a connection open and silent for longer is a loss (a
            // node being replaced ends its connections: it cannot leave one open).
            Err(e) if e.to_string().starts_with("timeout") => {
                if last_frame.elapsed() > MAX_SILENCE {
                    out.lost = Some(format!(
                        "silent for {:?} on an open connection",
                        last_frame.elapsed()
                    ));
                    return out;
                }
                continue;
            }
            Err(_) => {
                if Instant::now() >= until {
                    break;
                }
                if ws.closed.as_ref().is_some_and(|c| c.0 == 4001) {
                    out.lost = Some("taken over by someone who was not its owner's own tab".into());
                    return out;
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
                        last_frame = Instant::now();
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
    let (frames, failures) = watcher
        .await
        .unwrap_or_else(|e| (0, vec![format!("the watcher panicked: {e}")]));
    out.watcher_frames = frames;
    out.watcher_failures = failures;
    out
}

/// A second tab with the session's token: it must take the session over — the first connection
/// is told so (4001), or its node went away meanwhile — and the session goes on in it. Returns
/// the new connection and where it came back (a node other than the first tab's resumes from
/// the store: up to one flush interval back, as after a kill). The first tab's frames while it
/// waits are recorded in `seen`.
async fn duplicate(
    lb: &str,
    token: &str,
    id: &Value,
    old: &mut Ws,
    seen: &mut Vec<(u64, u64)>,
) -> Result<(Ws, (u64, u64)), String> {
    let (next, at, _) = resume(lb, token, id).await?;
    let t = Instant::now();
    let mut ended = false;
    while t.elapsed() < crate::T {
        match old.next(Duration::from_secs(1)).await {
            Ok(v) => seen.extend(position(&v)),
            Err(e) if e.to_string().starts_with("timeout") => continue,
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    match old.closed.as_ref().map(|c| c.0) {
        Some(4001) => Ok((next, at)),
        // Its node was killed or drained meanwhile: the second tab has the session anyway.
        _ if ended => Ok((next, at)),
        other => Err(format!(
            "the first tab was not told it was taken over (close {other:?})"
        )),
    }
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
        .map(|i| {
            // Duplicated tabs every 6 to 11 s, staggered.
            let dup_every = Duration::from_secs(6 + (i as u64 % 6));
            tokio::spawn(follow(lb.addr.clone(), until, dup_every))
        })
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
        // A follower that panicked saw something it could not handle: a loss, not nothing.
        let o = f.await.unwrap_or_else(|e| Followed {
            lost: Some(format!("the follower panicked: {e}")),
            ..Followed::default()
        });
        rep.frames += o.frames;
        rep.duplicates += o.duplicates;
        rep.rewind_frames_duplicate.extend(o.duplicate_rewinds);
        rep.watcher_frames += o.watcher_frames;
        rep.watcher_failures += o.watcher_failures.len();
        rep.watcher_failure_reasons
            .extend(o.watcher_failures.into_iter().take(3));
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
