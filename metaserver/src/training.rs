//! `/ws/training`: one shared DQN run in one `worker-training` process, watched by every viewer.
//!
//! The hub mirrors the run's status from the worker's events, so a late viewer is answered at once
//! without a round trip. Frames are encoded once and shared by all viewers; a slow viewer loses
//! `state_update`s only. When the worker dies mid-run, a replacement resumes from the last
//! checkpoint (`training_restarted`); when the budget is spent the run ends as failed.

use crate::app::App;
use crate::budget::{RestartBudget, Verdict};
use crate::client::{self, Client, Incoming};
use crate::supervisor::{Supervisor, WorkerControl, WorkerHandle};
use crate::validate::{self, TrainingRequest};
use axum::extract::ws::{Utf8Bytes, WebSocket};
use ipc_proto::browser::{ErrorCode, ServerMessage, TrainingRestarted, TrainingStatus};
use ipc_proto::training::{FromTraining, RunControl, ToTraining, TrainingConfig};
use ipc_proto::WorkerKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

type TrainingWorker = WorkerHandle<FromTraining>;

enum HubCmd {
    Start(Box<TrainingConfig>, Client),
    Control(RunControl, Client),
    Operator(WorkerControl),
}

/// The training part of `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingInfo {
    pub state: &'static str,
    pub is_training: bool,
    pub paused: bool,
    pub current_episode: u32,
    pub total_episodes: u32,
    pub viewers: usize,
    pub worker_id: Option<String>,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub last_checkpoint_episode: Option<u32>,
}

struct HubState {
    status: TrainingStatus,
    viewers: BTreeMap<u64, Client>,
    next_viewer: u64,
    label: &'static str,
    worker: Option<(String, u32)>,
    restarts: u32,
    last_error: Option<String>,
    checkpoint: Option<(u32, String)>,
    /// Why the worker was replaced, until the replacement reports where it resumed.
    pending_restart: Option<String>,
}

pub struct TrainingHub {
    sup: Arc<Supervisor>,
    state: Mutex<HubState>,
    cmd_tx: mpsc::Sender<HubCmd>,
    cmd_rx: Mutex<Option<mpsc::Receiver<HubCmd>>>,
    shutdown: watch::Receiver<bool>,
}

impl TrainingHub {
    pub fn new(sup: Arc<Supervisor>, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        Arc::new(TrainingHub {
            sup,
            state: Mutex::new(HubState {
                status: TrainingStatus {
                    is_training: false,
                    current_episode: 0,
                    total_episodes: 0,
                    paused: false,
                    config: None,
                    last_episode: None,
                },
                viewers: BTreeMap::new(),
                next_viewer: 1,
                label: "idle",
                worker: None,
                restarts: 0,
                last_error: None,
                checkpoint: None,
                pending_restart: None,
            }),
            cmd_tx,
            cmd_rx: Mutex::new(Some(cmd_rx)),
            shutdown,
        })
    }

    pub fn status(&self) -> TrainingStatus {
        self.state.lock().expect("hub").status.clone()
    }

    pub fn info(&self) -> TrainingInfo {
        let s = self.state.lock().expect("hub");
        TrainingInfo {
            state: s.label,
            is_training: s.status.is_training,
            paused: s.status.paused,
            current_episode: s.status.current_episode,
            total_episodes: s.status.total_episodes,
            viewers: s.viewers.len(),
            worker_id: s.worker.as_ref().map(|w| w.0.clone()),
            worker_pid: s.worker.as_ref().map(|w| w.1),
            restarts: s.restarts,
            last_error: s.last_error.clone(),
            last_checkpoint_episode: s.checkpoint.as_ref().map(|c| c.0),
        }
    }

    pub async fn operator_restart(&self) {
        let _ = self
            .cmd_tx
            .send(HubCmd::Operator(WorkerControl::Restart))
            .await;
    }

    /// Encodes once, queues for every viewer; viewers that are hopelessly behind are dropped.
    fn broadcast(&self, m: &ServerMessage) {
        let text = Utf8Bytes::from(m.to_json());
        let droppable = m.is_droppable();
        self.state
            .lock()
            .expect("hub")
            .viewers
            .retain(|_, c| c.send_encoded(text.clone(), droppable));
    }

    fn mirror(&self, m: &ServerMessage) {
        let mut s = self.state.lock().expect("hub");
        let st = &mut s.status;
        match m {
            ServerMessage::TrainingStarted(t) => {
                st.is_training = true;
                st.paused = false;
                st.total_episodes = t.num_episodes;
                st.current_episode = 0;
                st.config = Some(t.config.clone());
                st.last_episode = None;
                s.label = "running";
            }
            ServerMessage::EpisodeComplete(e) => {
                st.current_episode = e.episode;
                st.last_episode = Some(e.clone());
            }
            ServerMessage::Paused {} => st.paused = true,
            ServerMessage::Resumed {} => st.paused = false,
            ServerMessage::TrainingComplete(_) => {
                st.is_training = false;
                st.paused = false;
                s.label = "completed";
                s.checkpoint = None;
            }
            _ => {}
        }
    }

    fn fail_run(&self, reason: String) {
        {
            let mut s = self.state.lock().expect("hub");
            s.status.is_training = false;
            s.status.paused = false;
            s.label = "failed";
            s.last_error = Some(reason.clone());
            s.checkpoint = None;
        }
        warn!(%reason, "training run failed");
        self.broadcast(&ServerMessage::error(
            ErrorCode::TrainingFailed,
            format!("training failed: {reason}"),
        ));
        self.broadcast(&ServerMessage::TrainingStatus(Box::new(self.status())));
    }

    fn on_event(&self, ev: FromTraining, last_pong: &mut Instant) {
        match ev {
            FromTraining::Message(m) => {
                self.mirror(&m);
                self.broadcast(&m);
            }
            FromTraining::Checkpointed { episode, path } => {
                self.state.lock().expect("hub").checkpoint = Some((episode, path));
            }
            FromTraining::RunEnded {
                failed: Some(reason),
                ..
            } => self.fail_run(reason),
            FromTraining::RunEnded {
                failed: None,
                model_saved,
            } => {
                info!(model = ?model_saved, "training run ended");
                let mut s = self.state.lock().expect("hub");
                s.status.is_training = false;
                s.checkpoint = None;
            }
            FromTraining::Pong { .. } => *last_pong = Instant::now(),
            FromTraining::Resumed { episode } => {
                // The checkpoint file may be newer than the last `Checkpointed` we heard of (the
                // worker can die between writing it and saying so): announce where the
                // replacement really resumed.
                let reason = {
                    let mut st = self.state.lock().expect("hub");
                    st.status.current_episode = episode;
                    st.pending_restart.take()
                };
                if let Some(reason) = reason {
                    info!(
                        resumed_from_episode = episode,
                        "training resumed from its checkpoint"
                    );
                    self.broadcast(&ServerMessage::TrainingRestarted(TrainingRestarted {
                        reason,
                        resumed_from_episode: episode,
                    }));
                }
            }
            FromTraining::Ready => {}
        }
    }

    async fn spawn_worker(&self) -> Result<TrainingWorker, String> {
        let w = self
            .sup
            .spawn::<FromTraining>()
            .await
            .map_err(|e| e.to_string())?;
        self.sup.registry.update(&w.id, |i| {
            i.state = "active";
            i.session = Some("training".into());
        });
        self.sup.registry.set_control(&w.id, self.operator_sender());
        self.state.lock().expect("hub").worker = Some((w.id.clone(), w.pid));
        Ok(w)
    }

    fn operator_sender(&self) -> mpsc::Sender<WorkerControl> {
        // Operator restarts arrive through the registry; forward them into the hub's queue.
        let (tx, mut rx) = mpsc::channel::<WorkerControl>(2);
        let cmd = self.cmd_tx.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if cmd.send(HubCmd::Operator(c)).await.is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// Replaces a dead (or retired) worker mid-run: resume from the last checkpoint, or restart the
    /// run's configuration from scratch if no checkpoint exists yet.
    async fn resume_run(
        &self,
        budget: &mut RestartBudget,
        mut reason: String,
        mut started: Instant,
        count: bool,
    ) -> Option<TrainingWorker> {
        let config = self.state.lock().expect("hub").status.config.clone();
        loop {
            if count {
                match budget.record(Instant::now(), started) {
                    Verdict::GiveUp => {
                        self.fail_run(format!(
                            "the training worker failed repeatedly; last exit: {reason}"
                        ));
                        return None;
                    }
                    Verdict::RestartAfter(d) => tokio::time::sleep(d).await,
                }
            }
            self.state.lock().expect("hub").restarts += 1;
            let w = match self.spawn_worker().await {
                Ok(w) => {
                    let (exit, restarts) =
                        (reason.clone(), self.state.lock().expect("hub").restarts);
                    self.sup.registry.update(&w.id, |i| {
                        i.last_exit = Some(exit);
                        i.restarts = restarts;
                    });
                    w
                }
                Err(e) => {
                    reason = e;
                    started = Instant::now();
                    if !count {
                        self.fail_run(reason);
                        return None;
                    }
                    continue;
                }
            };
            let checkpoint = self.state.lock().expect("hub").checkpoint.clone();
            let (msg, from) = match (&checkpoint, &config) {
                (Some((ep, path)), _) => (
                    ToTraining::ResumeFrom {
                        checkpoint: path.clone(),
                    },
                    *ep,
                ),
                (None, Some(c)) => (ToTraining::Start(Box::new(c.clone())), 0),
                (None, None) => {
                    self.fail_run("no configuration to resume".into());
                    return Some(w);
                }
            };
            if w.sender.send(&msg).is_err() {
                reason = "replacement worker closed its socket".into();
                started = w.started;
                continue;
            }
            info!(worker = %w.id, pid = w.pid, "training worker restarted");
            if checkpoint.is_some() {
                // Announced when the worker says which episode it resumed after.
                self.state.lock().expect("hub").pending_restart = Some(reason);
            } else {
                self.broadcast(&ServerMessage::TrainingRestarted(TrainingRestarted {
                    reason,
                    resumed_from_episode: from,
                }));
            }
            return Some(w);
        }
    }

    /// Ends a worker gracefully; on `Shutdown` it saves a checkpoint and its model, whose notices
    /// are mirrored and broadcast like any other event.
    async fn retire(&self, w: TrainingWorker) {
        let grace = Duration::from_millis(self.sup.cfg.shutdown_grace_ms);
        let mut pong = Instant::now();
        w.retire(&ToTraining::Shutdown, grace, |ev| {
            self.on_event(ev, &mut pong)
        })
        .await;
    }

    pub async fn run(self: Arc<Self>) {
        let Some(mut cmds) = self.cmd_rx.lock().expect("hub").take() else {
            return;
        };
        let cfg = self.sup.cfg.clone();
        let mut shutdown = self.shutdown.clone();
        let mut worker: Option<TrainingWorker> = None;
        let mut budget = RestartBudget::new(cfg.restart_policy());
        let mut ping = tokio::time::interval(Duration::from_millis(cfg.ping_interval_ms));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let hang = Duration::from_millis(cfg.hang_timeout_ms);
        let mut last_pong = Instant::now();
        let mut seq = 0;
        loop {
            let is_training = self.state.lock().expect("hub").status.is_training;
            let died: Option<(String, &'static str)> = tokio::select! {
                c = cmds.recv() => match c {
                    None => return,
                    Some(HubCmd::Start(config, client)) => {
                        if is_training {
                            client.send(&ServerMessage::TrainingStatus(Box::new(self.status())));
                            client.send(&ServerMessage::error(ErrorCode::TrainingInProgress, "a training run is in progress: watch it, or stop it first"));
                            continue;
                        }
                        if worker.as_ref().is_none_or(|w| w.has_exited()) {
                            match self.spawn_worker().await {
                                Ok(w) => { worker = Some(w); last_pong = Instant::now(); }
                                Err(e) => {
                                    client.send(&ServerMessage::error(ErrorCode::TrainingFailed, format!("cannot start the training worker: {e}")));
                                    continue;
                                }
                            }
                        }
                        let w = worker.as_mut().expect("just ensured");
                        budget = RestartBudget::new(cfg.restart_policy());
                        {
                            let mut s = self.state.lock().expect("hub");
                            s.status.is_training = true;
                            s.status.config = Some((*config).clone());
                            s.status.total_episodes = config.num_episodes;
                            s.status.current_episode = 0;
                            s.status.last_episode = None;
                            s.checkpoint = None;
                            s.last_error = None;
                            s.restarts = 0;
                            s.label = "running";
                        }
                        info!(episodes = config.num_episodes, network = config.network.as_str(), seed = config.seed, "training run starting");
                        let _ = w.sender.send(&ToTraining::Start(config));
                        continue;
                    }
                    Some(HubCmd::Control(c, client)) => {
                        match worker.as_mut() {
                            Some(w) if is_training => { let _ = w.sender.send(&ToTraining::Control(c)); }
                            _ => { client.send(&ServerMessage::error(ErrorCode::NotTraining, "no training run is in progress")); }
                        }
                        continue;
                    }
                    Some(HubCmd::Operator(WorkerControl::Restart)) => {
                        let Some(w) = worker.take() else { continue };
                        // Graceful: the worker checkpoints on Shutdown, then a new one resumes.
                        self.retire(w).await;
                        self.sup.metrics.restart(WorkerKind::Training, "operator");
                        if self.state.lock().expect("hub").status.is_training {
                            worker = self.resume_run(&mut budget, "restarted by an operator".into(), Instant::now(), false).await;
                        } else {
                            self.state.lock().expect("hub").worker = None;
                        }
                        last_pong = Instant::now();
                        continue;
                    }
                },
                from = next_from(&mut worker) => match from {
                    FromWorker::Event(ev) => { self.on_event(ev, &mut last_pong); continue; }
                    FromWorker::Exited(exit) => Some((exit, "crash")),
                },
                _ = ping.tick() => {
                    match worker.as_mut() {
                        Some(w) if last_pong.elapsed() > hang => {
                            warn!(worker = %w.id, pid = w.pid, "training worker unresponsive: killing it");
                            w.kill();
                            let _ = w.wait_exit().await;
                            Some(("worker stopped answering heartbeats".to_owned(), "unresponsive"))
                        }
                        Some(w) => { seq += 1; let _ = w.sender.send(&ToTraining::Ping { seq }); continue; }
                        None => { last_pong = Instant::now(); continue; }
                    }
                }
                _ = shutdown.changed() => {
                    if let Some(w) = worker.take() {
                        // The worker checkpoints and saves its model on Shutdown.
                        self.retire(w).await;
                    }
                    for c in self.state.lock().expect("hub").viewers.values() {
                        c.close(client::close::GOING_AWAY, "server shutting down");
                    }
                    return;
                }
            };
            let Some((reason, label)) = died else {
                continue;
            };
            let Some(mut old) = worker.take() else {
                continue;
            };
            // Frames the worker sent before dying still count (a checkpoint notice, say).
            while let Ok(ev) = old.events.try_recv() {
                self.on_event(ev, &mut last_pong);
            }
            self.sup.metrics.restart(WorkerKind::Training, label);
            self.state.lock().expect("hub").worker = None;
            if self.state.lock().expect("hub").status.is_training {
                warn!(%reason, "training worker died mid-run");
                worker = self
                    .resume_run(&mut budget, reason, Instant::now(), true)
                    .await;
                last_pong = Instant::now();
            }
        }
    }
}

enum FromWorker {
    Event(FromTraining),
    Exited(String),
}

/// The worker's next event; once its event stream ends (socket closed), how it exited.
async fn next_from(w: &mut Option<TrainingWorker>) -> FromWorker {
    match w {
        Some(w) => match w.events.recv().await {
            Some(e) => FromWorker::Event(e),
            None => FromWorker::Exited(w.wait_exit().await.to_string()),
        },
        None => futures_util::future::pending().await,
    }
}

/// One `/ws/training` viewer.
pub async fn viewer(socket: WebSocket, app: Arc<App>) {
    let hub = app.training.clone();
    let (client, stream) = client::start(socket, app.cfg.client_queue, app.metrics.clone());
    let id = {
        let mut s = hub.state.lock().expect("hub");
        if s.viewers.len() >= app.cfg.max_training_viewers {
            drop(s);
            client.send(&ServerMessage::error(
                ErrorCode::TooManySessions,
                "too many training viewers; try again later",
            ));
            client.close(client::close::TRY_AGAIN_LATER, "too many viewers");
            return;
        }
        let id = s.next_viewer;
        s.next_viewer += 1;
        // Late joiners catch up at once from the mirror.
        client.send(&ServerMessage::TrainingStatus(Box::new(s.status.clone())));
        s.viewers.insert(id, client.clone());
        id
    };
    app.metrics.training_viewers.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::channel(32);
    tokio::spawn(client::read_loop(
        stream,
        client.clone(),
        app.cfg.client_rate,
        tx,
        validate::parse_training,
    ));
    while let Some(Incoming::Valid(req)) = rx.recv().await {
        match req {
            TrainingRequest::Status => {
                client.send(&ServerMessage::TrainingStatus(Box::new(hub.status())));
            }
            TrainingRequest::Start(c) => {
                let _ = hub.cmd_tx.send(HubCmd::Start(c, client.clone())).await;
            }
            TrainingRequest::Control(c) => {
                let _ = hub.cmd_tx.send(HubCmd::Control(c, client.clone())).await;
            }
        }
    }
    hub.state.lock().expect("hub").viewers.remove(&id);
    app.metrics.training_viewers.fetch_sub(1, Relaxed);
}
