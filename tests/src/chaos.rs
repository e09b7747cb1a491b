//! Chaos run: sessions playing at full speed and a watched training run while workers are killed
//! (`kill -9`) or stopped (SIGSTOP) at random, and browser connections are dropped without a close
//! frame (the load generator then reconnects with the session's resume token, as the UI does).
//! Loopback only; bounded in time; stops by itself.
//!
//! The killer respects the restart budget (at most 3 hits per target in any 60 s, the budget being
//! 5), so every lost session is a defect, not the policy working as designed. A session is lost
//! when it is closed, gets `worker_failed`, or goes without a frame for longer than a hang can
//! explain ([`MAX_GAP`]); a crash may neither skip nor cut short an episode.

use crate::{rss_mib, signal, Server, ServerOpts, Ws};
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest a session may go without a frame: a SIGSTOPped worker is found by the heartbeat
/// (hang timeout 5 s, pings every 1 s), replaced after at most the longest backoff (2 s); plus 1 s.
pub const MAX_GAP: Duration = Duration::from_secs(5 + 1 + 2 + 1);

/// Frames per second of a session at speed 10 (one step per 10 ms).
const FRAMES_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub duration: Duration,
    pub sessions: usize,
    pub viewers: usize,
    pub kill_every: Duration,
    /// Share of hits that are SIGSTOP (detected by heartbeat) rather than SIGKILL.
    pub stop_share: f64,
    /// Share of hits that drop a browser's connection instead of hitting a worker (the rest
    /// split by `stop_share`).
    pub drop_share: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChaosReport {
    pub duration_secs: f64,
    pub sessions_started: usize,
    pub sessions_lost: usize,
    pub lost_reasons: Vec<String>,
    pub sigkills: usize,
    pub sigstops: usize,
    pub connections_dropped: usize,
    /// Reconnections that came back to their session (same id, `resumed: true`).
    pub resumes: usize,
    pub restarts_reported: u64,
    pub worker_restarted_seen: usize,
    pub longest_gap_ms: f64,
    pub continuity_violations: usize,
    pub violation_examples: Vec<String>,
    pub frames: u64,
    /// What the sessions would have received at full pace, less what each hit may cost (a SIGSTOP
    /// 6 s, a SIGKILL 0.5 s).
    pub frames_expected: f64,
    /// Hits on the training worker (SIGKILL or SIGSTOP), and the restarts its viewers were told of.
    pub training_hits: usize,
    pub training_restarts: usize,
    pub training_episodes_lost: u64,
    /// The most episodes one restart took back (at most `checkpoint_every` + 1).
    pub training_most_lost_in_a_restart: u64,
    pub training_episodes_completed: u64,
    /// The longest time the run went without completing an episode, ms.
    pub training_longest_gap_ms: f64,
    pub metaserver_rss_before_mib: f64,
    pub metaserver_rss_after_mib: f64,
}

/// The run's `checkpoint_every`: a restart may take back at most this many episodes plus the one
/// in progress.
pub const TRAINING_CHECKPOINT_EVERY: u64 = 2;

/// How much the metaserver may grow over a chaos run: 3.4 MiB measured over the short run (20 s),
/// 6.7 MiB over five minutes (RELIABILITY.md); a leak of a frame per hit or per reconnection would
/// pass this within minutes.
pub const MAX_RSS_GROWTH_MIB: f64 = 32.0;

/// The longest the training run may go without completing an episode: a hang found by the
/// heartbeat and its replacement (as for a session, [`MAX_GAP`]), plus the new worker's start and
/// checkpoint load, plus the episodes taken back (each of at most 200 steps, well under a second).
pub const MAX_TRAINING_GAP: Duration = Duration::from_secs(9 + 3);

/// What failed in a chaos run, collected check by check; it passed when nothing did. Shared by the
/// one-machine and the cluster runs, and by their tests and `scripts/chaos`.
#[derive(Default)]
pub struct Verdict(Vec<String>);

impl Verdict {
    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.0.push(what);
        }
    }

    /// What every chaos run asks first: no session lost (with the reasons), no continuity
    /// violation (with examples).
    pub fn nothing_lost(&mut self, lost: (usize, &[String]), violations: (usize, &[String])) {
        let what = format!("{} session(s) lost: {:?}", lost.0, lost.1);
        self.check(lost.0 == 0, what);
        let what = format!(
            "{} continuity violation(s): {:?}",
            violations.0, violations.1
        );
        self.check(violations.0 == 0, what);
    }

    pub fn failures(self) -> Vec<String> {
        self.0
    }
}

impl ChaosReport {
    /// The one verdict of a chaos run, for the test and for `scripts/chaos`: what failed, or
    /// nothing. Nothing is lost (sessions, frames beyond what the hits cost, continuity, dropped
    /// connections that did not come back), the run's hits happened, and the training run kept
    /// learning: it completed episodes, never fell silent longer than [`MAX_TRAINING_GAP`], and
    /// no restart took back more than `checkpoint_every` + 1 episodes.
    pub fn failures(&self, cfg: &ChaosConfig) -> Vec<String> {
        let mut v = Verdict::default();
        v.nothing_lost(
            (self.sessions_lost, &self.lost_reasons),
            (self.continuity_violations, &self.violation_examples),
        );
        v.check(
            self.frames as f64 >= 0.8 * self.frames_expected,
            format!(
                "{} frames, fewer than 80 % of the {:.0} expected",
                self.frames, self.frames_expected
            ),
        );
        v.check(
            self.longest_gap_ms <= MAX_GAP.as_secs_f64() * 1e3,
            format!(
                "a session went {:.0} ms without a frame",
                self.longest_gap_ms
            ),
        );
        v.check(
            self.resumes == self.connections_dropped,
            format!(
                "{} of {} dropped connections came back",
                self.resumes, self.connections_dropped
            ),
        );
        // The killer ticks every `kill_every` until 7 s before the end; at least a quarter of the
        // ticks that could hit a worker did (the rest found every target at its limit).
        let ticks = (cfg
            .duration
            .saturating_sub(Duration::from_secs(7))
            .as_secs_f64()
            / cfg.kill_every.as_secs_f64())
            * (1.0 - cfg.drop_share);
        let hits = self.sigkills + self.sigstops;
        v.check(
            hits as f64 >= 0.25 * ticks,
            format!("the killer hit {hits} times in {ticks:.0} chances"),
        );
        v.check(
            cfg.drop_share == 0.0 || self.connections_dropped > 0,
            "no connection was dropped".into(),
        );
        v.check(
            hits == 0 || self.worker_restarted_seen > 0,
            "no session saw `worker_restarted`".into(),
        );
        let grew = self.metaserver_rss_after_mib - self.metaserver_rss_before_mib;
        v.check(
            grew <= MAX_RSS_GROWTH_MIB,
            format!("the metaserver grew by {grew:.1} MiB"),
        );
        v.check(
            self.training_episodes_completed > 0,
            "the training run completed no episode".into(),
        );
        v.check(
            self.training_longest_gap_ms <= MAX_TRAINING_GAP.as_secs_f64() * 1e3,
            format!(
                "the training run went {:.0} ms without an episode",
                self.training_longest_gap_ms
            ),
        );
        v.check(
            self.training_most_lost_in_a_restart <= TRAINING_CHECKPOINT_EVERY + 1,
            format!(
                "a training restart took back {} episodes",
                self.training_most_lost_in_a_restart
            ),
        );
        v.check(
            self.training_restarts >= self.training_hits.min(1),
            format!(
                "the training worker was hit {} times and no restart was told",
                self.training_hits
            ),
        );
        v.failures()
    }
}

#[derive(Default)]
struct SessionOutcome {
    lost: Option<String>,
    frames: u64,
    longest_gap: f64,
    violations: Vec<String>,
    restarts_seen: usize,
    resumes: usize,
}

/// What a session's follower needs to come back after its connection is dropped.
pub struct Reconnect {
    pub url: String,
    pub token: String,
    pub session_id: Value,
    /// A message here: drop the connection now (no close frame) and resume with the token.
    pub drop_now: tokio::sync::mpsc::Receiver<()>,
}

/// Drops the connection and comes back with the token; checks it is the same session. The frames
/// that follow are checked by the caller like those after a worker restart.
async fn drop_and_resume(ws: Ws, r: &Reconnect) -> Result<Ws, String> {
    ws.drop_connection();
    let url = format!("{}?resume={}", r.url, r.token);
    let mut ws = Ws::connect(&url)
        .await
        .map_err(|e| format!("reconnect: {e}"))?;
    let c = ws
        .next(crate::T)
        .await
        .map_err(|e| format!("no `connected` after reconnecting: {e}"))?;
    if c["type"] != "connected" || c["resumed"] != true || c["session_id"] != r.session_id {
        return Err(format!("reconnected to something else: {c}"));
    }
    ws.seen.clear();
    Ok(ws)
}

/// Follows one session's frames and checks that crashes never restart, skip or cut short an
/// episode, and that the session never falls silent.
async fn watch_session(mut ws: Ws, mut re: Reconnect, until: Instant) -> SessionOutcome {
    let mut o = SessionOutcome::default();
    let mut last: Option<(u64, u64)> = None;
    let mut last_at = Instant::now();
    let mut resumed: Option<(u64, u64)> = None;
    // The last episode whose `episode_end` was seen: only after it may the next one begin.
    let mut ended: Option<u64> = None;
    // After a reconnect, the first frame is the session as it was put away: the step last seen
    // or a later one (frames sent while the drop was noticed were lost with the connection).
    let mut reattached = false;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now()).min(MAX_GAP);
        let next = tokio::select! {
            v = ws.next(left) => Some(v),
            Some(()) = re.drop_now.recv() => None,
        };
        let Some(next) = next else {
            match drop_and_resume(ws, &re).await {
                Ok(back) => {
                    ws = back;
                    o.resumes += 1;
                    reattached = true;
                    continue;
                }
                Err(e) => {
                    o.lost = Some(e);
                    break;
                }
            }
        };
        let v = match next {
            Ok(v) => v,
            Err(e) => {
                if last_at.elapsed() >= MAX_GAP {
                    o.lost = Some(format!("silent for {:?}", last_at.elapsed()));
                } else if Instant::now() < until {
                    o.lost = Some(format!("{e}"));
                }
                if o.lost.is_some() {
                    break;
                }
                continue;
            }
        };
        ws.seen.clear();
        match v["type"].as_str() {
            Some("state_update") => {
                o.frames += 1;
                o.longest_gap = o.longest_gap.max(last_at.elapsed().as_secs_f64() * 1e3);
                last_at = Instant::now();
                let cur = (
                    v["episode"].as_u64().unwrap_or(0),
                    v["step"].as_u64().unwrap_or(0),
                );
                if let (true, Some((e, s))) = (std::mem::take(&mut reattached), last) {
                    let ok = (cur.0 == e && cur.1 >= s) || cur.0 > e;
                    if !ok {
                        o.violations
                            .push(format!("resumed at {cur:?} after {:?}", (e, s)));
                    }
                    // What happened while the drop was noticed is not seen: start afresh here.
                    // A session put away between episodes resumes on the last frame of the one
                    // that ended (its `episode_end` went to the dropped connection).
                    let over = v["done"] == true || v["step"].as_u64() >= Some(500);
                    ended = over.then_some(cur.0);
                    last = Some(cur);
                    continue;
                }
                if let Some((e, s)) = last {
                    let next_episode =
                        |prev: u64| cur.0 == prev + 1 && cur.1 == 0 && ended == Some(prev);
                    let ok = match resumed.take() {
                        // After a restart: the resumed step follows (a step whose snapshot was lost
                        // with the worker is replayed, so `s` itself may come again); a worker
                        // killed after an episode ended resumes by starting the next one.
                        Some((re, rs)) => {
                            (cur.0 == re && cur.1 == rs + 1 && rs + 1 >= s) || next_episode(re)
                        }
                        None => (cur.0 == e && cur.1 == s + 1) || next_episode(e),
                    };
                    if !ok && o.violations.len() < 5 {
                        o.violations.push(format!("{:?} after {:?}", cur, (e, s)));
                    } else if !ok {
                        o.violations.push(String::new());
                    }
                }
                last = Some(cur);
            }
            Some("episode_end") => ended = v["episode"].as_u64(),
            Some("worker_restarted") => {
                o.restarts_seen += 1;
                resumed = Some((
                    v["resumed_episode"].as_u64().unwrap_or(0),
                    v["resumed_step"].as_u64().unwrap_or(0),
                ));
            }
            Some("error") if v["code"] == "worker_failed" => {
                o.lost = Some(v["message"].to_string());
            }
            _ => {}
        }
    }
    if o.lost.is_none() && last_at.elapsed() >= MAX_GAP {
        o.lost = Some(format!("silent for the last {:?}", last_at.elapsed()));
    }
    o
}

/// What the training run's starter saw.
#[derive(Default)]
struct TrainingOutcome {
    restarts: usize,
    lost: u64,
    most_lost: u64,
    completed: u64,
    longest_gap_ms: f64,
}

/// Starts a long training run watched by `viewers` readers; the returned task follows it until
/// `until`.
async fn watch_training(
    s: &Server,
    viewers: usize,
    until: Instant,
) -> tokio::task::JoinHandle<TrainingOutcome> {
    let mut starter = Ws::connect(&s.url("/ws/training")).await.unwrap();
    starter.expect("training_status", crate::T).await;
    starter
        .send(
            json!({"command":"start_training","num_episodes":100000,"max_steps":200,"show_every":10,
                     "step_delay":0,"checkpoint_every":TRAINING_CHECKPOINT_EVERY,"batch_size":32,"seed":7}),
        )
        .await;
    starter.expect("training_started", crate::T).await;
    for _ in 0..viewers {
        let mut v = Ws::connect(&s.url("/ws/training")).await.unwrap();
        tokio::spawn(async move {
            while v.next(Duration::from_secs(30)).await.is_ok() {
                v.seen.clear();
            }
        });
    }
    tokio::spawn(async move {
        let mut o = TrainingOutcome::default();
        let (mut last_ep, mut last_at) = (0u64, Instant::now());
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(v) = starter.next(left).await else {
                break;
            };
            starter.seen.clear();
            match v["type"].as_str() {
                Some("episode_complete") => {
                    last_ep = v["episode"].as_u64().unwrap_or(0);
                    o.completed += 1;
                    o.longest_gap_ms = o.longest_gap_ms.max(last_at.elapsed().as_secs_f64() * 1e3);
                    last_at = Instant::now();
                }
                Some("training_restarted") => {
                    o.restarts += 1;
                    let from = v["resumed_from_episode"].as_u64().unwrap_or(0);
                    let lost = last_ep.saturating_sub(from);
                    o.lost += lost;
                    o.most_lost = o.most_lost.max(lost);
                }
                _ => {}
            }
        }
        // Silence until the end counts too (a run that stalled for good).
        o.longest_gap_ms = o.longest_gap_ms.max(last_at.elapsed().as_secs_f64() * 1e3);
        starter.send(json!({"command":"stop"})).await;
        o
    })
}

/// Hits active workers at random until shortly before `until` (a SIGSTOPped worker needs ~6 s to
/// be replaced), never more than 3 times per session in a minute. Counts into `rep`.
async fn kill_at_random(
    s: &Server,
    cfg: &ChaosConfig,
    until: Instant,
    rep: &mut ChaosReport,
    drops: &HashMap<String, tokio::sync::mpsc::Sender<()>>,
) {
    let mut rng = rand_pcg::Pcg64::seed_from_u64(cfg.seed);
    let mut hits: HashMap<String, Vec<Instant>> = HashMap::new();
    let stop_leeway = Duration::from_secs(7);
    while Instant::now() + cfg.kill_every + stop_leeway < until {
        tokio::time::sleep(cfg.kill_every).await;
        let active: Vec<Value> = s
            .workers()
            .into_iter()
            .filter(|w| w["state"] == "active")
            .collect();
        // A dropped connection costs the session no restart: any session may get one.
        if rng.random::<f64>() < cfg.drop_share {
            let sessions: Vec<&str> = active
                .iter()
                .filter_map(|w| w["session"].as_str())
                .filter(|id| drops.contains_key(*id))
                .collect();
            if !sessions.is_empty() {
                let id = sessions[rng.random_range(0..sessions.len())];
                if drops[id].try_send(()).is_ok() {
                    rep.connections_dropped += 1;
                }
            }
            continue;
        }
        let workers: Vec<&Value> = active
            .iter()
            .filter(|w| {
                let key = w["session"].as_str().unwrap_or("");
                hits.get(key).is_none_or(|h| {
                    h.iter()
                        .filter(|t| t.elapsed() < Duration::from_secs(60))
                        .count()
                        < 3
                })
            })
            .collect();
        if workers.is_empty() {
            continue;
        }
        let w = workers[rng.random_range(0..workers.len())];
        let pid = w["pid"].as_u64().unwrap() as u32;
        hits.entry(w["session"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(Instant::now());
        if w["kind"] == "training" {
            rep.training_hits += 1;
        }
        if rng.random::<f64>() < cfg.stop_share {
            rep.sigstops += 1;
            signal(pid, Signal::SIGSTOP);
        } else {
            rep.sigkills += 1;
            signal(pid, Signal::SIGKILL);
        }
    }
}

fn add_outcome(rep: &mut ChaosReport, o: SessionOutcome) {
    rep.frames += o.frames;
    rep.longest_gap_ms = rep.longest_gap_ms.max(o.longest_gap);
    rep.worker_restarted_seen += o.restarts_seen;
    rep.resumes += o.resumes;
    rep.continuity_violations += o.violations.len();
    rep.violation_examples
        .extend(o.violations.into_iter().filter(|v| !v.is_empty()).take(3));
    if let Some(l) = o.lost {
        rep.sessions_lost += 1;
        rep.lost_reasons.push(l);
    }
}

pub async fn run(cfg: ChaosConfig) -> ChaosReport {
    let s = Server::start_with(ServerOpts::default_model(&[
        "--default-model",
        "hamlet-default.onnx",
    ]));
    let mut rep = ChaosReport {
        metaserver_rss_before_mib: rss_mib(s.pid),
        ..Default::default()
    };
    let t0 = Instant::now();
    let until = t0 + cfg.duration;
    let training = watch_training(&s, cfg.viewers, until).await;

    // Sessions playing at full speed.
    let mut watchers = Vec::new();
    let watch_from = Instant::now();
    let mut drops = HashMap::new();
    for _ in 0..cfg.sessions {
        let mut ws = Ws::connect(&s.url("/ws")).await.unwrap();
        let c = ws.expect("connected", crate::T).await;
        ws.expect("state_update", crate::T).await;
        ws.send(json!({"command":"set_speed","speed":10})).await;
        ws.send(json!({"command":"play"})).await;
        rep.sessions_started += 1;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drops.insert(c["session_id"].as_str().unwrap().to_owned(), tx);
        let re = Reconnect {
            url: s.url("/ws"),
            token: c["resume_token"].as_str().unwrap().to_owned(),
            session_id: c["session_id"].clone(),
            drop_now: rx,
        };
        watchers.push(tokio::spawn(watch_session(ws, re, until)));
    }
    kill_at_random(&s, &cfg, until, &mut rep, &drops).await;
    for w in watchers {
        add_outcome(&mut rep, w.await.unwrap());
    }
    let watched = until.saturating_duration_since(watch_from).as_secs_f64();
    // A SIGSTOP costs up to the hang timeout plus a ping interval; a SIGKILL is seen at once and,
    // with at most 3 hits per session a minute, restarted within a short backoff.
    let hit_cost = rep.sigstops as f64 * 6.0
        + rep.sigkills as f64 * 0.5
        + rep.connections_dropped as f64 * 0.5;
    rep.frames_expected =
        (rep.sessions_started as f64 * watched - hit_cost).max(0.0) * FRAMES_PER_SEC;
    let t = training.await.unwrap();
    rep.training_restarts = t.restarts;
    rep.training_episodes_lost = t.lost;
    rep.training_most_lost_in_a_restart = t.most_lost;
    rep.training_episodes_completed = t.completed;
    rep.training_longest_gap_ms = t.longest_gap_ms;
    let (_, body) = s.get("/metrics");
    rep.restarts_reported = body
        .lines()
        .filter(|l| l.starts_with("hamlet_worker_restarts_total{") && !l.contains("start_failed"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    rep.metaserver_rss_after_mib = rss_mib(s.pid);
    rep.duration_secs = t0.elapsed().as_secs_f64();
    rep
}
