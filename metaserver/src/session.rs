//! One `/ws` connection: a private inference session in its own worker process.
//!
//! **Architecture Invariant: sessions survive their worker.** The worker sends a snapshot after every
//! step; when it dies (crash, `kill -9`, hang) a replacement is started from the last snapshot and
//! the browser is told `worker_restarted`. The browser connection is closed only when the restart
//! budget is spent (`error`, then close 1011).

use crate::app::App;
use crate::budget::{RestartBudget, Verdict};
use crate::client::{self, close, Client, Incoming};
use crate::pool::InferenceWorker;
use crate::supervisor::{SendError, WorkerControl};
use crate::validate;
use axum::extract::ws::WebSocket;
use hamlet_onnx::catalog;
use ipc_proto::browser::{ErrorCode, ServerMessage, WorkerRestarted};
use ipc_proto::inference::{
    FromInference, SessionCommand, SessionSnapshot, SessionStart, ToInference,
};
use ipc_proto::WorkerKind;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{info, warn};

/// A row of `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub model: Option<String>,
    pub episode: u32,
    pub step: u32,
    pub playing: bool,
    pub speed: f64,
    pub worker_id: Option<String>,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub connected_at: u64,
}

/// Why a worker is being replaced.
enum Replace {
    Crash(String),
    Unresponsive,
    Operator,
}

struct Relay {
    app: Arc<App>,
    id: String,
    client: Client,
    snapshot: Option<SessionSnapshot>,
    budget: RestartBudget,
    control_tx: mpsc::Sender<WorkerControl>,
    /// When the client was last told its commands are being dropped (told at most once a second,
    /// so a flood cannot turn into a flood of undroppable error frames).
    last_busy_notice: Option<Instant>,
    /// The browser has been sent `connected` (by the first worker).
    announced: bool,
    /// Number of the last command sent to a worker.
    last_seq: u64,
    /// Commands sent but not yet covered by a snapshot: replayed to a replacement worker so that
    /// none is lost with a dying one. Queries (`status`) are not kept.
    unacked: VecDeque<(u64, SessionCommand)>,
}

/// At most this many unacknowledged commands are kept (more than a worker's queue holds).
const MAX_UNACKED: usize = 2 * crate::supervisor::WORKER_QUEUE;

pub async fn run(socket: WebSocket, app: Arc<App>, permit: Option<OwnedSemaphorePermit>) {
    let (client, stream) = client::start(socket, app.cfg.client_queue, app.metrics.clone());
    let Some(_permit) = permit else {
        app.metrics.sessions_refused.fetch_add(1, Relaxed);
        client.send(&ServerMessage::error(
            ErrorCode::TooManySessions,
            format!(
                "the server is at its limit of {} sessions; try again later",
                app.cfg.max_sessions
            ),
        ));
        client.close(close::TRY_AGAIN_LATER, "too many sessions");
        return;
    };
    let id: String = (0..12)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect();
    app.metrics.sessions_started.fetch_add(1, Relaxed);
    app.metrics.sessions_active.fetch_add(1, Relaxed);
    app.sessions.lock().expect("sessions").insert(
        id.clone(),
        SessionInfo {
            id: id.clone(),
            model: None,
            episode: 0,
            step: 0,
            playing: false,
            speed: 1.0,
            worker_id: None,
            worker_pid: None,
            restarts: 0,
            connected_at: crate::supervisor::unix_now(),
        },
    );
    let (tx, rx) = mpsc::channel(32);
    let models_dir = app.sup.models_dir().to_path_buf();
    tokio::spawn(client::read_loop(
        stream,
        client.clone(),
        app.cfg.client_rate,
        tx,
        move |t| validate::parse_inference(t, |name| catalog::resolve(&models_dir, name).is_ok()),
    ));
    let (control_tx, control_rx) = mpsc::channel(4);
    let mut relay = Relay {
        budget: RestartBudget::new(app.cfg.restart_policy()),
        app: app.clone(),
        id: id.clone(),
        client,
        snapshot: None,
        control_tx,
        last_busy_notice: None,
        announced: false,
        last_seq: 0,
        unacked: VecDeque::new(),
    };
    info!(session = %id, "session opened");
    relay.serve(rx, control_rx).await;
    app.sessions.lock().expect("sessions").remove(&id);
    app.metrics.sessions_active.fetch_sub(1, Relaxed);
    info!(session = %id, "session closed");
}

impl Relay {
    fn start_message(&self) -> ToInference {
        ToInference::Start(Box::new(SessionStart {
            session_id: self.id.clone(),
            model: self.app.default_model(),
            max_steps: self.app.cfg.max_steps,
            snapshot: self.snapshot.clone(),
            announce: !self.announced,
        }))
    }

    /// Gets a worker (warm if possible) and gives it this session; failures count against the budget.
    async fn attach(&mut self, mut reason: Option<Replace>) -> Option<InferenceWorker> {
        let mut started = Instant::now();
        loop {
            if let Some(r) = reason.take() {
                let (label, text) = match &r {
                    Replace::Crash(t) => ("crash", t.clone()),
                    Replace::Unresponsive => (
                        "unresponsive",
                        "worker stopped answering heartbeats".to_owned(),
                    ),
                    Replace::Operator => ("operator", "restarted by an operator".to_owned()),
                };
                self.app.metrics.restart(WorkerKind::Inference, label);
                if !matches!(r, Replace::Operator) {
                    match self.budget.record(Instant::now(), started) {
                        Verdict::GiveUp => {
                            warn!(session = %self.id, last_exit = %text, "restart budget spent: closing session");
                            self.client.send(&ServerMessage::error(
                                ErrorCode::WorkerFailed,
                                format!(
                                    "the worker behind this session failed {} times in {} s; giving up. Last exit: {text}",
                                    self.app.cfg.max_restarts + 1,
                                    self.app.cfg.restart_window_secs
                                ),
                            ));
                            self.client.close(close::INTERNAL, "worker keeps failing");
                            return None;
                        }
                        Verdict::RestartAfter(d) => tokio::time::sleep(d).await,
                    }
                }
                self.app.update_session(&self.id, |s| s.restarts += 1);
                reason = Some(Replace::Crash(text)); // for the notice below, once attached
            }
            match self.app.pool.get(&self.app.sup).await {
                Ok(w) => {
                    let msg = self.start_message();
                    // The new worker gets the session, then every command its predecessor had not
                    // confirmed, in order.
                    let delivered = w.sender.send(&msg).is_ok()
                        && self.unacked.iter().all(|(seq, c)| {
                            let m = ToInference::Command {
                                seq: *seq,
                                command: c.clone(),
                            };
                            w.sender.send(&m).is_ok()
                        });
                    if !delivered {
                        w.kill();
                        started = w.started;
                        reason = Some(Replace::Crash("worker closed its socket on start".into()));
                        continue;
                    }
                    let predecessor_exit = match &reason {
                        Some(Replace::Crash(text)) => Some(text.clone()),
                        _ => None,
                    };
                    self.app.sup.registry.update(&w.id, |i| {
                        i.state = "active";
                        i.session = Some(self.id.clone());
                        i.restarts = self.budget.total;
                        // The row of the worker that died is gone with it; its successor says why.
                        i.last_exit = predecessor_exit;
                    });
                    self.app
                        .sup
                        .registry
                        .set_control(&w.id, self.control_tx.clone());
                    self.app.update_session(&self.id, |s| {
                        s.worker_id = Some(w.id.clone());
                        s.worker_pid = Some(w.pid);
                    });
                    if let (Some(Replace::Crash(text)), true) = (reason, self.announced) {
                        info!(session = %self.id, worker = %w.id, pid = w.pid, "worker restarted");
                        // Without a snapshot yet, the session restarts at its beginning.
                        let (episode, step) = self
                            .snapshot
                            .as_ref()
                            .map_or((1, 0), |s| (s.episode, s.world.step));
                        self.client
                            .send(&ServerMessage::WorkerRestarted(WorkerRestarted {
                                reason: text,
                                resumed_episode: episode,
                                resumed_step: step,
                            }));
                    }
                    self.announced = true;
                    return Some(w);
                }
                Err(e) => {
                    started = Instant::now();
                    reason = Some(Replace::Crash(e.to_string()));
                }
            }
        }
    }

    fn on_event(&mut self, ev: FromInference, last_pong: &mut Instant) {
        match ev {
            FromInference::Message(m) => {
                self.client.send(&m);
            }
            FromInference::Snapshot(s) => {
                self.app.update_session(&self.id, |i| {
                    i.model = s.model.clone();
                    i.episode = s.episode;
                    i.step = s.world.step;
                    i.playing = s.playing;
                    i.speed = s.speed;
                });
                let applied = s.commands_applied;
                while self.unacked.front().is_some_and(|(seq, _)| *seq <= applied) {
                    self.unacked.pop_front();
                }
                self.snapshot = Some(*s);
            }
            FromInference::Pong { .. } => *last_pong = Instant::now(),
            FromInference::Ready => {}
            FromInference::Fatal { reason } => {
                warn!(session = %self.id, %reason, "worker reported a fatal error")
            }
        }
    }

    async fn serve(
        &mut self,
        mut rx: mpsc::Receiver<Incoming<SessionCommand>>,
        mut control: mpsc::Receiver<WorkerControl>,
    ) {
        let mut shutdown = self.app.shutdown.clone();
        let Some(mut w) = self.attach(None).await else {
            return;
        };
        let ping_every = Duration::from_millis(self.app.cfg.ping_interval_ms);
        let hang = Duration::from_millis(self.app.cfg.hang_timeout_ms);
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pong = Instant::now();
        let mut seq = 0u64;
        let mut events_open = true;
        loop {
            let replace: Replace = tokio::select! {
                inc = rx.recv() => match inc {
                    Some(Incoming::Valid(cmd)) => {
                        self.last_seq += 1;
                        let seq = self.last_seq;
                        let sent = w.sender.send(&ToInference::Command { seq, command: cmd.clone() });
                        if sent.is_ok() && cmd != SessionCommand::Status {
                            if self.unacked.len() == MAX_UNACKED {
                                self.unacked.pop_front();
                            }
                            self.unacked.push_back((seq, cmd));
                        }
                        match sent {
                            Err(SendError::Full) => {
                                if self.last_busy_notice.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                                    self.last_busy_notice = Some(Instant::now());
                                    self.client.send(&ServerMessage::error(ErrorCode::RateLimited, "the session is busy: too many commands in flight; excess commands are dropped"));
                                }
                            }
                            // A closed connection: the exit branch reports why.
                            Err(SendError::Closed) | Ok(()) => {}
                        }
                        continue;
                    }
                    _ => break,
                },
                ev = w.events.recv(), if events_open => {
                    match ev {
                        Some(ev) => self.on_event(ev, &mut last_pong),
                        None => events_open = false,
                    }
                    continue;
                }
                _ = w.exit.changed() => {
                    while let Ok(ev) = w.events.try_recv() {
                        self.on_event(ev, &mut last_pong);
                    }
                    let exit = w.wait_exit().await;
                    warn!(session = %self.id, worker = %w.id, pid = w.pid, %exit, "worker died");
                    self.app.sup.registry.update(&w.id, |i| i.last_exit = Some(exit.to_string()));
                    Replace::Crash(exit.to_string())
                }
                _ = ping.tick() => {
                    if last_pong.elapsed() > hang {
                        warn!(session = %self.id, worker = %w.id, pid = w.pid, "worker unresponsive: killing it");
                        w.kill();
                        let _ = w.wait_exit().await;
                        Replace::Unresponsive
                    } else {
                        seq += 1;
                        // A full queue means the worker is not keeping up: no pong, and the
                        // hang timeout decides.
                        let _ = w.sender.send(&ToInference::Ping { seq });
                        continue;
                    }
                }
                c = control.recv() => match c {
                    Some(WorkerControl::Restart) => {
                        self.retire(w).await;
                        Replace::Operator
                    }
                    None => continue,
                },
                _ = shutdown.changed() => {
                    self.client.close(close::GOING_AWAY, "server shutting down");
                    break;
                }
            };
            let Some(next) = self.attach(Some(replace)).await else {
                return;
            };
            w = next;
            events_open = true;
            last_pong = Instant::now();
        }
        self.retire(w).await;
    }

    /// Ends a worker gracefully, relaying what it still sends.
    async fn retire(&mut self, w: InferenceWorker) {
        let grace = Duration::from_millis(self.app.cfg.shutdown_grace_ms);
        let mut pong = Instant::now();
        w.retire(&ToInference::Shutdown, grace, |ev| {
            self.on_event(ev, &mut pong)
        })
        .await;
    }
}
