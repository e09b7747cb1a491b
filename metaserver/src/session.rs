//! One `/ws` connection: a private inference session in its own worker process.
//!
//! **Architecture Invariant: sessions survive their worker.** The worker sends a snapshot after every
//! step; when it dies (crash, `kill -9`, hang, a frame that is not a valid message) a replacement is
//! started from the last snapshot and the browser is told `worker_restarted`. The browser
//! connection is closed only when the restart budget is spent (`error`, then close 1011).

use crate::app::App;
use crate::budget::{RestartBudget, Verdict};
use crate::client::{self, close, Client, Incoming};
use crate::metrics::RestartReason;
use crate::pool::InferenceWorker;
use crate::registry::{WorkerControl, WorkerState};
use crate::validate;
use axum::extract::ws::WebSocket;
use hamlet_onnx::catalog;
use ipc_proto::browser::{ErrorCode, ServerMessage, WorkerRestarted};
use ipc_proto::inference::{
    FromInference, SessionCommand, SessionSnapshot, SessionStart, ToInference,
};
use ipc_proto::link::{LinkEnd, LinkEvent, SendError};
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

/// Why a worker is being replaced, and since when the one that failed had been running.
struct Replace {
    reason: RestartReason,
    text: String,
    /// The failed worker's start: one that lived `--stable-after-secs` resets the budget.
    started: Instant,
}

impl Replace {
    fn new(reason: RestartReason, text: impl Into<String>, started: Instant) -> Self {
        Replace {
            reason,
            text: text.into(),
            started,
        }
    }
}

/// What ended the relay's wait for something to do.
enum Wake {
    /// Keep relaying with the same worker.
    Continue,
    /// Replace the worker.
    Replace(Replace),
    /// The browser left or the server is stopping.
    Stop,
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
    /// Seed of the session's random numbers (ε-greedy, random starts), drawn once per session.
    seed: u64,
}

/// At most this many unacknowledged commands are kept (more than a worker's queue holds).
const MAX_UNACKED: usize = 2 * crate::supervisor::WORKER_QUEUE;

pub async fn run(socket: WebSocket, app: Arc<App>, permit: Option<OwnedSemaphorePermit>) {
    let (client, stream) = client::start(socket, app.cfg.client_queue, None, app.metrics.clone());
    let Some(_permit) = permit else {
        refuse_full(&app, &client);
        return;
    };
    let id = uuid::Uuid::new_v4().to_string();
    app.metrics.sessions_started.fetch_add(1, Relaxed);
    app.metrics.sessions_active.fetch_add(1, Relaxed);
    app.sessions.lock().insert(id.clone(), new_row(&id));
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
        seed: rand::random(),
    };
    info!(session = %id, "session opened");
    relay.serve(rx, control_rx).await;
    app.sessions.lock().remove(&id);
    app.metrics.sessions_active.fetch_sub(1, Relaxed);
    info!(session = %id, "session closed");
}

fn refuse_full(app: &App, client: &Client) {
    app.metrics.sessions_refused.fetch_add(1, Relaxed);
    client.send(&ServerMessage::error(
        ErrorCode::TooManySessions,
        format!(
            "the server is at its limit of {} sessions; try again later",
            app.cfg.max_sessions
        ),
    ));
    client.close(close::TRY_AGAIN_LATER, "too many sessions");
}

fn new_row(id: &str) -> SessionInfo {
    SessionInfo {
        id: id.to_owned(),
        model: None,
        episode: 0,
        step: 0,
        playing: false,
        speed: 1.0,
        worker_id: None,
        worker_pid: None,
        restarts: 0,
        connected_at: crate::supervisor::unix_now(),
    }
}

impl Relay {
    fn start_message(&self) -> ToInference {
        ToInference::Start(Box::new(SessionStart {
            session_id: self.id.clone(),
            model: self.app.default_model(),
            max_steps: self.app.cfg.max_steps,
            snapshot: self.snapshot.clone(),
            announce: !self.announced,
            seed: self.seed,
        }))
    }

    /// Gets a worker (warm if possible) and gives it this session. `replacing` says why the
    /// previous worker went; every failure on the way counts against the budget, except an
    /// operator's restart.
    async fn attach(&mut self, mut replacing: Option<Replace>) -> Option<InferenceWorker> {
        loop {
            if let Some(r) = &replacing {
                if !self.allow_restart(r).await {
                    return None;
                }
            }
            let w = match self.app.pool.get(&self.app.sup).await {
                Ok(w) => w,
                Err(e) => {
                    let reason = RestartReason::StartFailed;
                    replacing = Some(Replace::new(reason, e.to_string(), Instant::now()));
                    continue;
                }
            };
            if !self.hand_over(&w) {
                w.kill();
                let text = "worker closed its socket on start";
                replacing = Some(Replace::new(RestartReason::Crash, text, w.started));
                continue;
            }
            self.adopt(&w, replacing.as_ref());
            return Some(w);
        }
    }

    /// Records a restart; sleeps the backoff, or ends the session when the budget is spent.
    async fn allow_restart(&mut self, r: &Replace) -> bool {
        if r.reason != RestartReason::StartFailed {
            self.app.metrics.restart(WorkerKind::Inference, r.reason);
        }
        self.app.update_session(&self.id, |s| s.restarts += 1);
        if r.reason == RestartReason::Operator {
            return true;
        }
        match self.budget.record(Instant::now(), r.started) {
            Verdict::RestartAfter(d) => {
                tokio::time::sleep(d).await;
                true
            }
            Verdict::GiveUp => {
                warn!(session = %self.id, last_exit = %r.text, "restart budget spent: closing session");
                let c = &self.app.cfg;
                self.client.send(&ServerMessage::error(
                    ErrorCode::WorkerFailed,
                    format!(
                        "the worker behind this session failed {} times in {} s; giving up. Last exit: {}",
                        c.max_restarts + 1,
                        c.restart_window_secs,
                        r.text
                    ),
                ));
                self.client.close(close::INTERNAL, "worker keeps failing");
                false
            }
        }
    }

    /// Gives the new worker the session, then every command its predecessor had not confirmed,
    /// in order. False if the worker's queue is already closed.
    fn hand_over(&self, w: &InferenceWorker) -> bool {
        w.send(self.start_message()).is_ok()
            && self.unacked.iter().all(|(seq, c)| {
                let m = ToInference::Command {
                    seq: *seq,
                    command: c.clone(),
                };
                w.send(m).is_ok()
            })
    }

    /// Registers the worker as this session's and tells the browser, if this is a replacement.
    fn adopt(&mut self, w: &InferenceWorker, replacing: Option<&Replace>) {
        let registry = &self.app.sup.registry;
        registry.update(&w.id, |i| {
            i.state = WorkerState::Active;
            i.session = Some(self.id.clone());
            i.restarts = self.budget.total;
            // The row of the worker that died is gone with it; its successor says why.
            i.last_exit = replacing.map(|r| r.text.clone());
        });
        registry.set_control(&w.id, self.control_tx.clone());
        self.app.update_session(&self.id, |s| {
            s.worker_id = Some(w.id.clone());
            s.worker_pid = Some(w.pid());
        });
        if let (Some(r), true) = (replacing, self.announced) {
            info!(session = %self.id, worker = %w.id, pid = w.pid(), "worker restarted");
            // Without a snapshot yet, the session restarts at its beginning.
            let (episode, step) = self
                .snapshot
                .as_ref()
                .map_or((1, 0), |s| (s.episode, s.world.step));
            self.client
                .send(&ServerMessage::WorkerRestarted(WorkerRestarted {
                    reason: r.text.clone(),
                    resumed_episode: episode,
                    resumed_step: step,
                }));
        }
        self.announced = true;
    }

    fn on_event(&mut self, ev: FromInference) {
        match ev {
            FromInference::Message(m) => {
                self.client.relay(&m, Instant::now());
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
            FromInference::Pong { .. } | FromInference::Ready => {}
            FromInference::Fatal { reason } => {
                warn!(session = %self.id, %reason, "worker reported a fatal error")
            }
        }
    }

    /// Numbers a browser command and queues it for the worker (kept until a snapshot confirms it).
    fn forward(&mut self, w: &InferenceWorker, cmd: SessionCommand) {
        self.last_seq += 1;
        let seq = self.last_seq;
        let sent = w.send(ToInference::Command {
            seq,
            command: cmd.clone(),
        });
        if sent.is_ok() && cmd != SessionCommand::Status {
            if self.unacked.len() == MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back((seq, cmd));
        }
        if sent == Err(SendError::Full) {
            let quiet = self
                .last_busy_notice
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if !quiet {
                self.last_busy_notice = Some(Instant::now());
                self.client.send(&ServerMessage::error(
                    ErrorCode::RateLimited,
                    "the session is busy: too many commands in flight; excess commands are dropped",
                ));
            }
        }
        // A closed queue: the link's end reports why.
    }

    /// Turns the end of a worker's link into the reason to replace it.
    async fn link_ended(&mut self, w: &mut InferenceWorker, end: LinkEnd) -> Replace {
        let started = w.started;
        let (reason, text) = match end {
            LinkEnd::Closed => {
                let exit = w.wait_exit().await;
                (RestartReason::Crash, exit.to_string())
            }
            LinkEnd::Unresponsive => {
                w.kill();
                let _ = w.wait_exit().await;
                let text = "worker stopped answering heartbeats".to_owned();
                (RestartReason::Unresponsive, text)
            }
            LinkEnd::ProtocolError(e) => {
                w.kill();
                let _ = w.wait_exit().await;
                (RestartReason::ProtocolError, format!("protocol error: {e}"))
            }
        };
        warn!(session = %self.id, worker = %w.id, pid = w.pid(), reason = %text, "worker lost");
        Replace::new(reason, text, started)
    }

    /// Waits for the next thing to do with worker `w`.
    async fn wake(
        &mut self,
        w: &mut InferenceWorker,
        rx: &mut mpsc::Receiver<Incoming<SessionCommand>>,
        control: &mut mpsc::Receiver<WorkerControl>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Wake {
        tokio::select! {
            inc = rx.recv() => match inc {
                Some(Incoming::Valid(cmd)) => { self.forward(w, cmd); Wake::Continue }
                _ => Wake::Stop,
            },
            ev = w.recv() => match ev {
                LinkEvent::Event(ev) => { self.on_event(ev); Wake::Continue }
                LinkEvent::Ended(end) => Wake::Replace(self.link_ended(w, end).await),
            },
            Some(WorkerControl::Restart) = control.recv() => {
                let text = "restarted by an operator";
                Wake::Replace(Replace::new(RestartReason::Operator, text, w.started))
            }
            _ = shutdown.cancelled() => {
                self.client.close(close::GOING_AWAY, "server shutting down");
                Wake::Stop
            }
        }
    }

    async fn serve(
        &mut self,
        mut rx: mpsc::Receiver<Incoming<SessionCommand>>,
        mut control: mpsc::Receiver<WorkerControl>,
    ) {
        let shutdown = self.app.shutdown.clone();
        let Some(mut w) = self.attach(None).await else {
            return;
        };
        loop {
            match self.wake(&mut w, &mut rx, &mut control, &shutdown).await {
                Wake::Continue => continue,
                Wake::Stop => break,
                Wake::Replace(r) => {
                    if r.reason == RestartReason::Operator {
                        self.retire(w).await;
                    }
                    match self.attach(Some(r)).await {
                        Some(next) => w = next,
                        None => return,
                    }
                }
            }
        }
        self.retire(w).await;
    }

    /// Ends a worker gracefully, relaying what it still sends.
    async fn retire(&mut self, w: InferenceWorker) {
        let grace = Duration::from_millis(self.app.cfg.shutdown_grace_ms);
        w.retire(ToInference::Shutdown, grace, |ev| self.on_event(ev))
            .await;
    }
}
