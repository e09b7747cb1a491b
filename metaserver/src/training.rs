//! `/ws/training`: one shared DQN run in one `worker-training` process, watched by every viewer.
//!
//! The hub mirrors the run's status from the worker's events, so a late viewer is answered at once
//! without a round trip. Frames are encoded once and shared by all viewers; a slow viewer loses
//! `state_update`s only. When the worker dies mid-run, a replacement resumes from the last
//! checkpoint (`training_restarted`); when the budget is spent the run ends as failed. An
//! operator's restart hands the run over: the worker checkpoints and exits, a new one resumes.

use crate::app::App;
use crate::budget::{RestartBudget, Verdict};
use crate::client::{self, Client, Incoming};
use crate::cluster::training::{ClusterTraining, Orphan};
use crate::history::{HistoryView, RunHistory};
use crate::metrics::RestartReason;
use crate::outqueue::Delivery;
use crate::pace::Pace;
use crate::registry::{WorkerControl, WorkerState};
use crate::store::TokenHash;
use crate::supervisor::{Supervisor, WorkerHandle};
use crate::validate::{self, Credentials, TrainingRequest};
use axum::extract::ws::{Utf8Bytes, WebSocket};
use ipc_proto::browser::{
    ControlGranted, ErrorCode, ServerMessage, TrainingRestarted, TrainingStatus,
};
use ipc_proto::link::{LinkEnd, LinkEvent};
use ipc_proto::training::{FromTraining, RunControl, ToTraining, TrainingConfig};
use ipc_proto::WorkerKind;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

type TrainingWorker = WorkerHandle<ToTraining>;

enum HubCmd {
    Start(Box<TrainingConfig>, Viewer),
    /// Run control, with the control token the message carried (if any).
    Control(RunControl, Viewer, Option<String>),
    /// An operator takes control of the run (a new control token).
    TakeControl(Viewer),
    Operator(WorkerControl),
    /// Cluster: a checked command from a viewer on another node.
    Remote(RunControl),
    /// Cluster: this node took the lease of a run whose holder is gone.
    Failover(Box<Orphan>),
    /// Cluster: another node holds the lease now; stop the worker without saving anything.
    LeaseLost,
    /// Cluster: the lease cannot be renewed (false: pause the run) or can again (true).
    LeaseReachable(bool),
}

/// A `/ws/training` connection as the hub sees it.
#[derive(Clone)]
struct Viewer {
    id: u64,
    client: Client,
    /// The operator rule (loopback if allowed, or the admin token — in a header at connect, or
    /// in any message since).
    operator: bool,
}

/// Where the shared run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Idle,
    Running,
    Completed,
    Failed,
}

/// The training part of `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingInfo {
    pub state: RunState,
    pub is_training: bool,
    pub paused: bool,
    /// The episode being run (protocol.md's `current_episode`).
    pub current_episode: u32,
    pub episodes_completed: u32,
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
    run: RunState,
    worker: Option<(String, u32)>,
    restarts: u32,
    last_error: Option<String>,
    checkpoint: Option<(u32, String)>,
    /// Why the worker was replaced, until the replacement reports where it resumed.
    pending_restart: Option<String>,
    /// Who may control the current run (protocol.md): the starting viewer, anyone with the
    /// token, operators.
    owner: Option<u64>,
    /// The token itself, only until it is given to the starter in its `training_started`.
    control_token: Option<String>,
    /// What presented tokens are compared with (also what survives a server restart).
    control_hash: Option<TokenHash>,
    /// The current (or last) run's figures, and the run before it.
    history: RunHistory,
    previous: Option<RunHistory>,
    /// How fast this machine trains, for the presets' expected durations (kept across restarts).
    pace: Pace,
    /// Cluster holder: the run is paused because the lease could not be renewed (not by its
    /// user); it resumes when the lease can be renewed again.
    lease_paused: bool,
    /// The run's user paused it (and has not resumed it).
    user_paused: bool,
}

pub struct TrainingHub {
    sup: Arc<Supervisor>,
    state: Mutex<HubState>,
    cmd_tx: mpsc::Sender<HubCmd>,
    cmd_rx: Mutex<Option<mpsc::Receiver<HubCmd>>>,
    shutdown: CancellationToken,
    /// A cluster node's share of the one run (`--store redis://…`); `None` on one machine.
    cluster: Option<Arc<ClusterTraining>>,
    /// Where the holder's updates for Redis queue (set by [`TrainingHub::sharer`]).
    share_tx: Mutex<Option<mpsc::Sender<Share>>>,
    /// A run's saved model is offered to sessions at once.
    models: Arc<crate::model_catalog::ModelCatalog>,
}

/// Why the hub must replace its worker, and since when that worker had been running.
struct Lost {
    reason: RestartReason,
    text: String,
    started: Instant,
}

impl TrainingHub {
    pub fn new(
        sup: Arc<Supervisor>,
        shutdown: CancellationToken,
        cluster: Option<Arc<ClusterTraining>>,
        models: Arc<crate::model_catalog::ModelCatalog>,
    ) -> Arc<Self> {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let pace = Pace::load(pace_path(&sup.cfg).as_deref());
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
                    can_control: None,
                    best: None,
                    operator: None,
                },
                viewers: BTreeMap::new(),
                next_viewer: 1,
                run: RunState::Idle,
                worker: None,
                restarts: 0,
                last_error: None,
                checkpoint: None,
                pending_restart: None,
                owner: None,
                control_token: None,
                control_hash: None,
                history: RunHistory::default(),
                previous: None,
                pace,
                lease_paused: false,
                user_paused: false,
            }),
            cmd_tx,
            cmd_rx: Mutex::new(Some(cmd_rx)),
            shutdown,
            cluster,
            share_tx: Mutex::new(None),
            models,
        })
    }

    /// The current (or last) run's history and the one before it.
    pub fn history(&self) -> (HistoryView, Option<HistoryView>) {
        let s = self.state.lock();
        (s.history.view(), s.previous.as_ref().map(RunHistory::view))
    }

    /// How fast this machine has been training (for the presets' expected durations).
    pub fn pace(&self) -> Pace {
        self.state.lock().pace.clone()
    }

    pub fn status(&self) -> TrainingStatus {
        self.state.lock().status.clone()
    }

    fn is_training(&self) -> bool {
        self.state.lock().status.is_training
    }

    pub fn info(&self) -> TrainingInfo {
        let s = self.state.lock();
        TrainingInfo {
            state: s.run,
            is_training: s.status.is_training,
            paused: s.status.paused,
            current_episode: s.status.current_episode,
            episodes_completed: s.status.last_episode.as_ref().map_or(0, |e| e.episode),
            total_episodes: s.status.total_episodes,
            viewers: s.viewers.len(),
            worker_id: s.worker.as_ref().map(|w| w.0.clone()),
            worker_pid: s.worker.as_ref().map(|w| w.1),
            restarts: s.restarts,
            last_error: s.last_error.clone(),
            last_checkpoint_episode: s.checkpoint.as_ref().map(|c| c.0),
        }
    }

    /// Encodes once, queues for every viewer (and, on a cluster's holder, publishes it once for
    /// the other nodes' viewers); viewers that are hopelessly behind are dropped.
    fn broadcast(&self, m: &ServerMessage, delivery: Delivery, arrived: Instant) {
        let text = Utf8Bytes::from(m.to_json());
        if let Some(ct) = &self.cluster {
            ct.publish(&text);
        }
        self.broadcast_local(text, delivery, arrived);
    }

    fn broadcast_local(&self, text: Utf8Bytes, delivery: Delivery, arrived: Instant) {
        self.state
            .lock()
            .viewers
            .retain(|_, c| c.send_encoded(text.clone(), delivery, arrived));
    }

    /// Does this node hold the cluster's training lease?
    pub fn is_cluster_holder(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.is_holder())
    }

    /// Cluster holder: a command a viewer on another node sent (checked there).
    pub fn remote_command(&self, c: RunControl) {
        if self.cmd_tx.try_send(HubCmd::Remote(c)).is_err() {
            warn!("training command from another node dropped: the hub is busy");
        }
    }

    /// Cluster: a frame the holder published, for this node's viewers; lifecycle messages update
    /// this node's mirror so its late joiners and `/api/status` agree with the holder. What
    /// arrives from Redis is parsed and checked as browser input is, and encoded again here:
    /// nothing written into Redis reaches a browser as it was sent.
    pub fn relay_remote(&self, text: &str) {
        let Some(m) = checked_remote_frame(text) else {
            warn!("a frame on the training channel is not one a viewer may get; dropped");
            return;
        };
        self.mirror(&m);
        if let ServerMessage::TrainingStarted(_) = m {
            // Started elsewhere: nobody here owns it.
            self.state.lock().owner = None;
        }
        let delivery = match m {
            ServerMessage::StateUpdate(_) => self.remote_frame_delivery(),
            _ => Delivery::Always,
        };
        self.broadcast_local(Utf8Bytes::from(m.to_json()), delivery, Instant::now());
    }

    /// Cluster follower: the holder's frames arrive as text, without the worker's word on their
    /// order; the run's `step_delay` says it (as the holder's worker decided, `outbox.rs`): a
    /// viewer can be sent every step when it is no faster than `--viewer-fps`.
    fn remote_frame_delivery(&self) -> Delivery {
        let delay = self
            .state
            .lock()
            .status
            .config
            .as_ref()
            .map_or(0.0, |c| c.step_delay);
        let fps = self.sup.cfg.viewer_fps;
        if delay > 0.0 && (fps <= 0.0 || delay >= 1.0 / fps) {
            Delivery::Droppable
        } else {
            Delivery::Latest
        }
    }

    /// `training_started` for everyone, the starter's copy with the run's control token.
    fn announce_start(&self, m: &ServerMessage, arrived: Instant) {
        let ServerMessage::TrainingStarted(t) = m else {
            return self.broadcast(m, Delivery::of(m), arrived);
        };
        let text = Utf8Bytes::from(m.to_json());
        if let Some(ct) = &self.cluster {
            ct.publish(&text);
        }
        let mut s = self.state.lock();
        // The token itself goes to the starter and is forgotten here: only its hash stays.
        let (owner, token) = (s.owner, s.control_token.take());
        s.viewers.retain(|id, c| {
            if Some(*id) == owner {
                let mut mine = t.clone();
                mine.control_token = token.clone();
                c.relay(&ServerMessage::TrainingStarted(mine), arrived)
            } else {
                c.send_encoded(text.clone(), Delivery::Always, arrived)
            }
        });
    }

    /// May `v` (with `token`, if it sent one) pause, resume or stop the current run?
    fn may_control(&self, v: &Viewer, token: Option<&str>) -> bool {
        let s = self.state.lock();
        v.operator
            || s.owner == Some(v.id)
            || matches!((token, &s.control_hash), (Some(t), Some(want)) if TokenHash::of(t).matches(want))
    }

    /// The status as one viewer sees it: whether it may control the run, and whether it counts
    /// as an operator.
    fn status_for(&self, v: &Viewer) -> TrainingStatus {
        let mut st = self.status();
        st.can_control = Some(v.operator || self.state.lock().owner == Some(v.id));
        st.operator = Some(v.operator);
        st
    }

    fn announce(&self, m: &ServerMessage) {
        self.broadcast(m, Delivery::Always, Instant::now());
    }

    fn mirror(&self, m: &ServerMessage) {
        let mut s = self.state.lock();
        let st = &mut s.status;
        match m {
            ServerMessage::TrainingStarted(t) => {
                st.is_training = true;
                st.paused = false;
                st.total_episodes = t.num_episodes;
                st.current_episode = 1;
                st.config = Some(t.config.clone());
                st.last_episode = None;
                st.best = None;
                s.run = RunState::Running;
                s.pace.start(&t.config);
                let finished = std::mem::replace(&mut s.history, RunHistory::new(t.config.clone()));
                if !finished.is_empty() {
                    s.previous = Some(finished);
                }
            }
            ServerMessage::EpisodeComplete(e) => {
                st.current_episode = episode_being_run(e.episode, st.total_episodes);
                st.last_episode = Some(e.clone());
                s.history.episode(e);
                s.pace.record(e.episode, e.length);
            }
            ServerMessage::Evaluation(e) => {
                st.best = Some(e.best);
                s.history.evaluation(e.episode, e.steps, e.reward);
            }
            ServerMessage::Paused {} => {
                st.paused = true;
                s.pace.interrupt();
            }
            ServerMessage::Resumed {} => st.paused = false,
            ServerMessage::TrainingComplete(c) => {
                st.is_training = false;
                st.paused = false;
                if c.best.is_some() {
                    st.best = c.best;
                }
                s.run = RunState::Completed;
                s.checkpoint = None;
                s.pace.stop();
                let pace = s.pace.clone();
                drop(s);
                // Small and rare (once a run): written where it is learned.
                pace.save(pace_path(&self.sup.cfg).as_ref());
            }
            _ => {}
        }
    }

    fn fail_run(&self, reason: String) {
        self.share(Share::Finished);
        {
            let mut s = self.state.lock();
            s.status.is_training = false;
            s.status.paused = false;
            s.run = RunState::Failed;
            s.last_error = Some(reason.clone());
            s.checkpoint = None;
        }
        warn!(%reason, "training run failed");
        self.announce(&ServerMessage::error(
            ErrorCode::TrainingFailed,
            format!("training failed: {reason}"),
        ));
        self.announce(&ServerMessage::TrainingStatus(Box::new(self.status())));
    }

    fn on_event(&self, ev: FromTraining) {
        let arrived = Instant::now();
        match ev {
            // Frames faster than a viewer sees: the newest wins.
            FromTraining::Frame(m) => self.broadcast(&m, Delivery::Latest, arrived),
            FromTraining::Message(m) => {
                if let ServerMessage::TrainingComplete(c) = &m {
                    // Written by this node's worker: offered to sessions at once.
                    if let Some(name) = &c.model_saved {
                        self.models.note_new(name);
                    }
                }
                self.mirror(&m);
                self.announce_start(&m, arrived);
                match m {
                    ServerMessage::TrainingComplete(_) => self.share(Share::Finished),
                    ServerMessage::Paused {} | ServerMessage::Resumed {} => self.share(Share::Run),
                    ServerMessage::StateUpdate(_) => {}
                    _ => self.share(Share::Status),
                }
            }
            FromTraining::Checkpointed { episode, path } => {
                self.state.lock().checkpoint = Some((episode, path.clone()));
                self.share(Share::Checkpoint(path));
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
                self.share(Share::Finished);
                let mut s = self.state.lock();
                s.status.is_training = false;
                s.checkpoint = None;
            }
            FromTraining::Resumed { episode } => self.on_resumed(episode),
            FromTraining::Pong { .. } | FromTraining::Ready => {}
        }
    }

    /// The checkpoint file may be newer than the last `Checkpointed` we heard of (the worker can
    /// die between writing it and saying so): announce where the replacement really resumed.
    fn on_resumed(&self, episode: u32) {
        let reason = {
            let mut st = self.state.lock();
            st.status.current_episode = episode_being_run(episode, st.status.total_episodes);
            st.pending_restart.take()
        };
        if let Some(reason) = reason {
            info!(
                resumed_from_episode = episode,
                "training resumed from its checkpoint"
            );
            self.announce(&ServerMessage::TrainingRestarted(TrainingRestarted {
                reason,
                resumed_from_episode: episode,
            }));
        }
    }

    async fn spawn_worker(&self) -> Result<TrainingWorker, String> {
        let w = self
            .sup
            .spawn::<ToTraining>()
            .await
            .map_err(|e| e.to_string())?;
        self.sup.registry.update(&w.id, |i| {
            i.state = WorkerState::Active;
            i.session = Some("training".into());
        });
        self.sup.registry.set_control(&w.id, self.operator_sender());
        self.state.lock().worker = Some((w.id.clone(), w.pid()));
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

    /// What a replacement worker is told: resume from the last checkpoint (falling back to the
    /// run's configuration if the file is unusable), or start the configuration afresh.
    fn resume_message(&self) -> Option<(ToTraining, bool)> {
        let s = self.state.lock();
        let config = s.status.config.clone().map(Box::new);
        let paused = s.status.paused;
        match (&s.checkpoint, config) {
            (Some((_, path)), config) => Some((
                ToTraining::ResumeFrom {
                    checkpoint: path.clone(),
                    config,
                    paused,
                },
                true,
            )),
            (None, Some(config)) => Some((ToTraining::Start { config, paused }, false)),
            (None, None) => None,
        }
    }

    /// Replaces a lost (or handed-over) worker mid-run. Crashes count against the budget; an
    /// operator's restart does not.
    async fn resume_run(
        &self,
        budget: &mut RestartBudget,
        mut lost: Lost,
    ) -> Option<TrainingWorker> {
        let counted = lost.reason != RestartReason::Operator;
        loop {
            if counted && !self.allow_restart(budget, &lost).await {
                return None;
            }
            let w = match self.spawn_worker().await {
                Ok(w) => w,
                Err(e) if counted => {
                    let (reason, started) = (RestartReason::StartFailed, Instant::now());
                    lost = Lost {
                        reason,
                        text: e,
                        started,
                    };
                    continue;
                }
                Err(e) => {
                    self.fail_run(e);
                    return None;
                }
            };
            match self.hand_run_to(&w, &lost) {
                Ok(()) => return Some(w),
                Err(again) => lost = again,
            }
        }
    }

    /// Records a restart against the budget: sleeps its backoff, or fails the run when spent.
    async fn allow_restart(&self, budget: &mut RestartBudget, lost: &Lost) -> bool {
        match budget.record(Instant::now(), lost.started) {
            Verdict::GiveUp => {
                let text = &lost.text;
                self.fail_run(format!(
                    "the training worker failed repeatedly; last exit: {text}"
                ));
                false
            }
            Verdict::RestartAfter(d) => {
                tokio::time::sleep(d).await;
                true
            }
        }
    }

    /// Gives the run to a new worker (from its checkpoint, paused if it was) and tells viewers;
    /// `Err` when the worker is already gone.
    fn hand_run_to(&self, w: &TrainingWorker, lost: &Lost) -> Result<(), Lost> {
        let restarts = {
            let mut s = self.state.lock();
            s.restarts += 1;
            s.restarts
        };
        let text = lost.text.clone();
        self.sup.registry.update(&w.id, |i| {
            i.last_exit = Some(text);
            i.restarts = restarts;
        });
        let Some((msg, from_checkpoint)) = self.resume_message() else {
            self.fail_run("no configuration to resume".into());
            return Ok(());
        };
        // A paused run's replacement starts paused (said in `msg`, so nothing runs meanwhile).
        if w.send(msg).is_err() {
            let text = "replacement worker closed its socket".to_owned();
            let (reason, started) = (RestartReason::Crash, w.started);
            return Err(Lost {
                reason,
                text,
                started,
            });
        }
        info!(worker = %w.id, pid = w.pid(), "training worker restarted");
        if from_checkpoint {
            // Announced when the worker says which episode it resumed after.
            self.state.lock().pending_restart = Some(lost.text.clone());
        } else {
            self.announce(&ServerMessage::TrainingRestarted(TrainingRestarted {
                reason: lost.text.clone(),
                resumed_from_episode: 0,
            }));
        }
        Ok(())
    }

    /// Ends a worker gracefully with `how` (`Shutdown` saves the run's model and ends it;
    /// `Handover` only checkpoints); its last notices are mirrored and broadcast.
    async fn retire(&self, w: TrainingWorker, how: ToTraining) {
        let grace = Duration::from_millis(self.sup.cfg.shutdown_grace_ms);
        w.retire(how, grace, |ev| self.on_event(ev)).await;
    }

    async fn start_run(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        config: Box<TrainingConfig>,
        v: Viewer,
    ) {
        let client = v.client.clone();
        if self.is_training() && worker.is_none() {
            // A follower's mirror may describe a run Redis has forgotten.
            self.end_if_gone_from_cluster().await;
        }
        if self.is_training() {
            client.send(&ServerMessage::TrainingStatus(Box::new(
                self.status_for(&v),
            )));
            client.send(&ServerMessage::error(
                ErrorCode::TrainingInProgress,
                "a training run is in progress: watch it, or stop it first",
            ));
            return;
        }
        if let Err(why) = self.may_start(&v, &config) {
            client.send(&ServerMessage::error(ErrorCode::OperatorsOnly, why));
            return;
        }
        if !self.may_start_in_cluster(&client).await {
            return;
        }
        if worker.as_ref().is_none_or(|w| !w.is_usable()) {
            match self.spawn_worker().await {
                Ok(w) => *worker = Some(w),
                Err(e) => {
                    client.send(&ServerMessage::error(
                        ErrorCode::TrainingFailed,
                        format!("cannot start the training worker: {e}"),
                    ));
                    if let Some(ct) = &self.cluster {
                        ct.release().await;
                    }
                    return;
                }
            }
        }
        *budget = RestartBudget::new(self.sup.cfg.restart_policy());
        {
            let mut s = self.state.lock();
            s.status.is_training = true;
            s.status.config = Some((*config).clone());
            s.status.total_episodes = config.num_episodes;
            s.status.current_episode = 1;
            s.status.last_episode = None;
            s.checkpoint = None;
            s.last_error = None;
            s.restarts = 0;
            s.run = RunState::Running;
            s.owner = Some(v.id);
            (s.lease_paused, s.user_paused) = (false, false);
            let token = crate::store::new_token();
            s.control_hash = Some(TokenHash::of(&token));
            s.control_token = Some(token);
        }
        info!(
            episodes = config.num_episodes,
            network = config.network.as_str(),
            seed = config.seed,
            "training run starting"
        );
        self.share(Share::Run);
        if let Some(w) = worker.as_ref() {
            let _ = w.send(ToTraining::Start {
                config,
                paused: false,
            });
        }
    }

    /// A pause, resume or stop from someone allowed to give it. While the lease is unreachable
    /// the run stays paused whatever its user asks (it resumes by itself when it can).
    fn user_control(&self, w: &TrainingWorker, c: RunControl, v: &Viewer) {
        let lease_paused = {
            let mut s = self.state.lock();
            match c {
                RunControl::Pause => s.user_paused = true,
                RunControl::Resume => s.user_paused = false,
                RunControl::Stop => {}
            }
            s.lease_paused
        };
        if lease_paused && c == RunControl::Resume {
            v.client.send(&store_unavailable());
            return;
        }
        let _ = w.send(ToTraining::Control(c));
    }

    /// Cluster: after losing the lease, a run with neither a record nor a holder left in Redis
    /// (Redis restarted empty) is over: it ends here, its viewers are told, a new run may start.
    async fn end_if_gone_from_cluster(&self) {
        let Some(ct) = &self.cluster else { return };
        if !self.is_training() || ct.run_or_lease_exists().await.unwrap_or(true) {
            return;
        }
        warn!("the cluster's store no longer knows the training run (redis restarted empty?): it ends here");
        self.fail_run(
            "the cluster's store lost this run (Redis restarted empty); start it again".into(),
        );
    }

    /// Who may start which run: `--start-training operators` keeps runs for operators;
    /// `--max-student-episodes` bounds the runs of everyone else.
    fn may_start(&self, v: &Viewer, c: &TrainingConfig) -> Result<(), String> {
        let cfg = &self.sup.cfg;
        if v.operator {
            return Ok(());
        }
        if cfg.only_operators_start() {
            return Err(
                "only the teacher (an operator) can start training runs on this server".into(),
            );
        }
        if c.num_episodes > cfg.max_student_episodes {
            return Err(format!(
                "runs started by students are limited to {} episodes on this server \
                     (--max-student-episodes); ask the teacher for a longer one",
                cfg.max_student_episodes
            ));
        }
        Ok(())
    }

    /// An operator takes the run over: a new control token for its connection; the previous
    /// holder's token no longer controls it.
    fn take_control(&self, v: &Viewer) {
        if !v.operator {
            v.client.send(&ServerMessage::error(
                ErrorCode::OperatorsOnly,
                "only an operator (the teacher) can take control of a run",
            ));
            return;
        }
        if !self.is_training() {
            v.client.send(&ServerMessage::error(
                ErrorCode::NotTraining,
                "no training run is in progress",
            ));
            return;
        }
        let token = crate::store::new_token();
        let previous = {
            let mut s = self.state.lock();
            s.control_hash = Some(TokenHash::of(&token));
            s.control_token = None;
            let previous = s.owner.replace(v.id);
            previous.and_then(|id| s.viewers.get(&id).cloned().map(|c| (id, c)))
        };
        self.share(Share::Run);
        info!("an operator took control of the training run");
        v.client
            .send(&ServerMessage::ControlGranted(ControlGranted {
                control_token: token,
            }));
        // The previous holder's page learns at once that its controls no longer work.
        if let Some((_, c)) = previous.filter(|(id, _)| *id != v.id) {
            let mut st = self.status();
            st.can_control = Some(false);
            c.send(&ServerMessage::TrainingStatus(Box::new(st)));
        }
    }

    /// How the worker's link ended, as the reason to replace it.
    async fn lost(w: &mut TrainingWorker, end: LinkEnd) -> Lost {
        let started = w.started;
        let (reason, text) = match end {
            LinkEnd::Closed => (RestartReason::Crash, w.wait_exit().await.to_string()),
            LinkEnd::Unresponsive => {
                warn!(worker = %w.id, pid = w.pid(), "training worker unresponsive: killing it");
                w.kill();
                let _ = w.wait_exit().await;
                (
                    RestartReason::Unresponsive,
                    "worker stopped answering heartbeats".into(),
                )
            }
            LinkEnd::ProtocolError(e) => {
                w.kill();
                let _ = w.wait_exit().await;
                (RestartReason::ProtocolError, format!("protocol error: {e}"))
            }
        };
        Lost {
            reason,
            text,
            started,
        }
    }

    /// After the worker is gone: replace it if a run is in progress.
    async fn replace(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        lost: Lost,
    ) {
        self.sup.metrics.restart(WorkerKind::Training, lost.reason);
        self.state.lock().worker = None;
        *worker = None;
        if self.is_training() {
            warn!(reason = %lost.text, "training worker replaced mid-run");
            *worker = self.resume_run(budget, lost).await;
        }
    }

    pub async fn run(self: Arc<Self>) {
        let Some(mut cmds) = self.cmd_rx.lock().take() else {
            return;
        };
        let shutdown = self.shutdown.clone();
        let mut worker: Option<TrainingWorker> = None;
        let mut budget = RestartBudget::new(self.sup.cfg.restart_policy());
        if let Some(record) = self.take_run_record() {
            worker = self
                .resume_after_restart(record, &mut budget, "server restarted")
                .await;
        }
        loop {
            tokio::select! {
                c = cmds.recv() => match c {
                    None => return,
                    Some(HubCmd::Start(config, v)) => self.start_run(&mut worker, &mut budget, config, v).await,
                    Some(HubCmd::Control(c, v, token)) => match worker.as_ref() {
                        _ if !self.is_training() => { v.client.send(&ServerMessage::error(ErrorCode::NotTraining, "no training run is in progress")); }
                        None if self.cluster.as_ref().is_some_and(|c| !c.is_holder()) => self.forward_control(c, &v, token),
                        _ if !self.may_control(&v, token.as_deref()) => {
                            v.client.send(&ServerMessage::error(ErrorCode::NotRunOwner, "only the person who started this run (or an operator) can pause, resume or stop it"));
                        }
                        Some(w) => self.user_control(w, c, &v),
                        None => { v.client.send(&ServerMessage::error(ErrorCode::NotTraining, "the training worker is being replaced; try again in a moment")); }
                    },
                    Some(HubCmd::TakeControl(v)) => self.take_control(&v),
                    Some(HubCmd::Operator(WorkerControl::Restart)) => {
                        let Some(w) = worker.take() else { continue };
                        let started = w.started;
                        // Graceful: the worker checkpoints and exits; a new one resumes the run.
                        self.retire(w, ToTraining::Handover).await;
                        let text = "restarted by an operator".to_owned();
                        self.replace(&mut worker, &mut budget, Lost { reason: RestartReason::Operator, text, started }).await;
                    }
                    Some(other) => self.on_cluster_cmd(other, &mut worker, &mut budget).await,
                },
                ev = next_event(&mut worker) => match ev {
                    LinkEvent::Event(ev) => self.on_event(ev),
                    LinkEvent::Ended(end) => {
                        let Some(mut w) = worker.take() else { continue };
                        let lost = Self::lost(&mut w, end).await;
                        // Frames the worker sent before dying still count (a checkpoint notice).
                        while let Some(ev) = w.link.try_recv() {
                            self.on_event(ev);
                        }
                        self.replace(&mut worker, &mut budget, lost).await;
                    }
                },
                _ = shutdown.cancelled() => {
                    if let Some(w) = worker.take() {
                        if self.is_training() && self.cluster.is_some() {
                            // The worker checkpoints; another node continues the run.
                            self.retire(w, ToTraining::Handover).await;
                            self.hand_over_to_cluster().await;
                        } else if self.is_training() && !self.sup.cfg.no_resume_training {
                            // The worker checkpoints; the next server resumes the run.
                            self.retire(w, ToTraining::Handover).await;
                            self.save_run_record();
                        } else {
                            // The worker checkpoints and saves its model on Shutdown.
                            self.retire(w, ToTraining::Shutdown).await;
                        }
                    }
                    for c in self.state.lock().viewers.values() {
                        c.close(client::close::SERVICE_RESTART, "server restarting: reconnect");
                    }
                    return;
                }
            }
        }
    }
}

impl TrainingHub {
    /// The cluster's commands to the hub (never sent on one machine).
    async fn on_cluster_cmd(
        &self,
        cmd: HubCmd,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
    ) {
        match cmd {
            HubCmd::Remote(c) => {
                if let Some(w) = worker.as_ref() {
                    let _ = w.send(ToTraining::Control(c));
                }
            }
            HubCmd::Failover(o) if worker.is_none() => *worker = self.adopt(*o, budget).await,
            HubCmd::Failover(_) => warn!("took the training lease while running a worker"),
            HubCmd::LeaseLost => {
                if let Some(mut w) = worker.take() {
                    // Another node continues the run: nothing of this worker's may be saved.
                    warn!(worker = %w.id, "training lease lost: stopping this node's worker");
                    w.kill();
                    let _ = w.wait_exit().await;
                    self.state.lock().worker = None;
                }
                self.state.lock().lease_paused = false;
                self.end_if_gone_from_cluster().await;
            }
            HubCmd::LeaseReachable(reachable) => {
                // A pause for a lost lease is the lease's: it never undoes, nor is undone by, a
                // pause its user asked for.
                let c = {
                    let mut s = self.state.lock();
                    let user_paused = s.status.paused && !s.lease_paused;
                    match (reachable, s.lease_paused) {
                        (false, false) if !user_paused => {
                            s.lease_paused = true;
                            Some(RunControl::Pause)
                        }
                        (true, true) => {
                            s.lease_paused = false;
                            (!s.user_paused).then_some(RunControl::Resume)
                        }
                        _ => None,
                    }
                };
                if let (Some(w), Some(c)) = (worker.as_ref(), c) {
                    warn!(?c, "training lease renewal: redis reachable = {reachable}");
                    let _ = w.send(ToTraining::Control(c));
                }
            }
            HubCmd::Start(..)
            | HubCmd::Control(..)
            | HubCmd::TakeControl(_)
            | HubCmd::Operator(_) => {}
        }
    }

    /// Cluster holder at SIGTERM: the worker has checkpointed; share the checkpoint and let go.
    async fn hand_over_to_cluster(&self) {
        let Some(ct) = &self.cluster else { return };
        let path = self.state.lock().checkpoint.as_ref().map(|c| c.1.clone());
        if let (Some(r), Some(p)) = (self.run_facts(true), path) {
            if ct.save_checkpoint(&r, std::path::Path::new(&p)).await {
                info!(
                    episode = r.episodes_completed,
                    "training run handed over to the cluster"
                );
            }
        }
        ct.release().await;
    }
}

/// What a cluster's holder tells Redis, in order, by one task (the hub never waits for Redis).
enum Share {
    /// The latest `training_status`, for late joiners on other nodes.
    Status,
    /// The run's description changed (started, paused, resumed).
    Run,
    /// A checkpoint file to upload with the run's description.
    Checkpoint(String),
    /// The run is over: final status, forget the run, release the lease.
    Finished,
}

impl TrainingHub {
    fn share(&self, what: Share) {
        if let (Some(ct), Some(tx)) = (&self.cluster, self.share_tx.lock().as_ref()) {
            if ct.is_holder() && tx.try_send(what).is_err() {
                warn!("training updates for redis are backing up; one skipped");
            }
        }
    }

    /// The run as another server would continue it (`None` before a run has a configuration).
    fn run_facts(&self, handed_over: bool) -> Option<RunFacts> {
        let s = self.state.lock();
        Some(RunFacts {
            config: s.status.config.clone()?,
            paused: s.status.paused,
            episodes_completed: s.checkpoint.as_ref().map_or(0, |c| c.0),
            control_hash: s.control_hash.clone(),
            handed_over,
        })
    }

    /// Cluster: carries out the holder's [`Share`]s in order.
    pub async fn sharer(self: Arc<Self>, ct: Arc<ClusterTraining>) {
        let (tx, mut rx) = mpsc::channel(SHARE_QUEUE);
        *self.share_tx.lock() = Some(tx);
        while let Some(what) = rx.recv().await {
            let status = || serde_json::to_string(&self.status()).expect("serialises");
            match what {
                Share::Status => ct.set_status(status()).await,
                Share::Run => {
                    if let Some(r) = self.run_facts(false) {
                        ct.save_run(&r).await;
                    }
                    ct.set_status(status()).await;
                }
                Share::Checkpoint(path) => {
                    if let Some(r) = self.run_facts(false) {
                        ct.save_checkpoint(&r, std::path::Path::new(&path)).await;
                    }
                }
                Share::Finished => {
                    ct.set_status(status()).await;
                    ct.finish_run().await;
                }
            }
        }
    }

    /// Cluster: renews the lease while holding it; otherwise adopts a run whose holder is gone.
    pub async fn lease_keeper(self: Arc<Self>, ct: Arc<ClusterTraining>) {
        let mut tick = tokio::time::interval(crate::cluster::training::RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unreachable = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let cmd = if ct.is_holder() {
                match ct.renew().await {
                    Ok(true) if unreachable => Some(HubCmd::LeaseReachable(true)),
                    Ok(true) => None,
                    Ok(false) => Some(HubCmd::LeaseLost),
                    Err(_) if !unreachable => Some(HubCmd::LeaseReachable(false)),
                    Err(_) => None,
                }
            } else {
                match ct.take_orphan().await {
                    Ok(Some(o)) => Some(HubCmd::Failover(Box::new(o))),
                    _ => None,
                }
            };
            if let Some(HubCmd::LeaseReachable(r)) = &cmd {
                unreachable = !*r;
            }
            if let Some(HubCmd::LeaseLost) = &cmd {
                unreachable = false;
            }
            if let Some(c) = cmd {
                let _ = self.cmd_tx.send(c).await;
            }
        }
    }

    /// Cluster: a run taken over from a lost holder continues here from its last checkpoint.
    async fn adopt(&self, o: Orphan, budget: &mut RestartBudget) -> Option<TrainingWorker> {
        let checkpoint = match o.checkpoint {
            Some(bytes) => {
                let path = self
                    .sup
                    .cfg
                    .checkpoint_dir()
                    .join(format!("cluster-{}.ckpt", o.fence));
                let p = path.clone();
                match tokio::task::spawn_blocking(move || hamlet_onnx::write_atomic(&p, &bytes))
                    .await
                {
                    Ok(Ok(())) => Some(path.display().to_string()),
                    _ => None,
                }
            }
            None => None,
        };
        let reason = if o.run.handed_over {
            "server restarted"
        } else {
            "node lost"
        };
        info!(
            fence = o.fence,
            episode = o.run.episodes_completed,
            reason,
            "training run taken over"
        );
        let record = RunRecord {
            checkpoint,
            run: o.run,
        };
        let w = self.resume_after_restart(record, budget, reason).await;
        self.share(Share::Run);
        w
    }

    /// Cluster: may this follower's viewer control the run? Then forward it to the holder.
    fn forward_control(&self, c: RunControl, v: &Viewer, token: Option<String>) {
        let Some(ct) = self.cluster.clone() else {
            return;
        };
        let (client, operator) = (v.client.clone(), v.operator);
        tokio::spawn(async move {
            let allowed = match token {
                _ if operator => Ok(true),
                Some(t) => ct.token_controls(&t).await,
                None => Ok(false),
            };
            let refusal = match allowed {
                Ok(true) => match ct.forward(c).await {
                    Ok(()) => return,
                    Err(_) => None,
                },
                Ok(false) => Some(ServerMessage::error(ErrorCode::NotRunOwner, "only the person who started this run (or an operator) can pause, resume or stop it")),
                Err(_) => None,
            };
            client.send(&refusal.unwrap_or_else(store_unavailable));
        });
    }

    /// Cluster follower: the holder's latest status, for a viewer who just arrived here.
    async fn refresh_from_cluster(&self) {
        let Some(ct) = self.cluster.as_ref().filter(|c| !c.is_holder()) else {
            return;
        };
        if let Ok(Some(json)) = ct.status().await {
            let st = serde_json::from_str::<TrainingStatus>(&json)
                .ok()
                .filter(|st| st.config.as_ref().is_none_or(|c| c.validate().is_ok()));
            if let Some(st) = st {
                let mut s = self.state.lock();
                s.run = match (st.is_training, s.run) {
                    (true, _) => RunState::Running,
                    (false, RunState::Running) => RunState::Completed,
                    (false, other) => other,
                };
                s.status = st;
            }
        }
    }

    /// Cluster: a run may start here only if none is recorded and the lease is free.
    async fn may_start_in_cluster(&self, client: &Client) -> bool {
        let Some(ct) = &self.cluster else {
            return true;
        };
        let taken = match ct.run_exists().await {
            Ok(false) => ct.acquire().await.map(|f| f.is_none()),
            other => other,
        };
        match taken {
            Ok(false) => true,
            Ok(true) => {
                client.send(&ServerMessage::error(
                    ErrorCode::TrainingInProgress,
                    "a training run is in progress on another node: watch it, or stop it first",
                ));
                false
            }
            Err(_) => {
                client.send(&store_unavailable());
                false
            }
        }
    }
}

const SHARE_QUEUE: usize = 256;

fn store_unavailable() -> ServerMessage {
    ServerMessage::error(
        ErrorCode::StoreUnavailable,
        "the cluster's shared store is unreachable; try again in a moment",
    )
}

/// What another server needs to continue a run: the next server after a SIGTERM (in
/// `training-run.json`) or another cluster node (in Redis). The control token only as its hash.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunFacts {
    pub config: TrainingConfig,
    pub paused: bool,
    /// Episodes completed when the checkpoint was taken (0: no checkpoint yet).
    pub episodes_completed: u32,
    pub control_hash: Option<TokenHash>,
    /// The holder handed the run over on purpose (SIGTERM), rather than dying.
    #[serde(default)]
    pub handed_over: bool,
}

/// A run in progress when the server stopped (SIGTERM), so the next server resumes it
/// (sessions.md), kept beside the session store as `training-run.json`; or one taken over from a
/// lost cluster node.
#[derive(Debug, Serialize, serde::Deserialize)]
struct RunRecord {
    /// `None`: no checkpoint yet; the run starts again from its configuration.
    checkpoint: Option<String>,
    #[serde(flatten)]
    run: RunFacts,
}

impl TrainingHub {
    /// Beside a directory store; a cluster keeps its run in Redis instead.
    fn run_record_path(&self) -> Option<std::path::PathBuf> {
        self.sup
            .cfg
            .store
            .dir()
            .map(|d| d.join("training-run.json"))
    }

    /// Writes the record of the run in progress (after its worker checkpointed).
    fn save_run_record(&self) {
        let checkpoint = self.state.lock().checkpoint.as_ref().map(|c| c.1.clone());
        let (Some(checkpoint), Some(run)) = (checkpoint, self.run_facts(true)) else {
            warn!("no checkpoint of the run in progress: it cannot be resumed");
            return;
        };
        let record = RunRecord {
            checkpoint: Some(checkpoint),
            run,
        };
        let Some(path) = self.run_record_path() else {
            return;
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("a record serialises");
        match hamlet_onnx::write_atomic(&path, &bytes) {
            Ok(()) => info!(
                episode = record.run.episodes_completed,
                "training run saved for the next server"
            ),
            Err(e) => warn!(error = %e, "could not save the training run for the next server"),
        }
    }

    /// Reads and removes the record a previous server left; `None` if there is none, it is
    /// unreadable, or `--no-resume-training` says not to resume.
    fn take_run_record(&self) -> Option<RunRecord> {
        let path = self.run_record_path()?;
        let bytes = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        if self.sup.cfg.no_resume_training {
            info!("a training run was in progress when the server stopped; not resumed (--no-resume-training)");
            return None;
        }
        match serde_json::from_slice::<RunRecord>(&bytes) {
            Ok(r) if r.run.config.validate().is_ok() => Some(r),
            _ => {
                warn!(file = %path.display(), "unreadable training run record ignored");
                None
            }
        }
    }

    /// Continues the previous server's run from its checkpoint; viewers get
    /// `training_restarted` (reason `server restarted`) when the worker says where it resumed.
    async fn resume_after_restart(
        &self,
        record: RunRecord,
        budget: &mut RestartBudget,
        reason: &str,
    ) -> Option<TrainingWorker> {
        let RunRecord { checkpoint, run: r } = record;
        {
            let mut s = self.state.lock();
            s.status.is_training = true;
            s.status.paused = r.paused;
            s.status.total_episodes = r.config.num_episodes;
            s.status.current_episode =
                episode_being_run(r.episodes_completed, r.config.num_episodes);
            s.status.config = Some(r.config.clone());
            s.checkpoint = checkpoint.map(|c| (r.episodes_completed, c));
            s.control_hash = r.control_hash;
            s.run = RunState::Running;
            s.history = RunHistory::new(r.config.clone());
        }
        info!(
            episode = r.episodes_completed,
            reason, "resuming a training run left by another server"
        );
        let lost = Lost {
            reason: RestartReason::Operator,
            text: reason.into(),
            started: Instant::now(),
        };
        self.resume_run(budget, lost).await
    }
}

/// A training frame from another node, if it is one every viewer may be sent: parsed, bounded,
/// never a secret (a `training_started` carrying a control token is the starter's alone) and with
/// a valid configuration.
fn checked_remote_frame(text: &str) -> Option<ServerMessage> {
    if text.len() > 256 * 1024 {
        return None;
    }
    let m: ServerMessage = serde_json::from_str(text).ok()?;
    let ok = match &m {
        ServerMessage::TrainingStarted(t) => {
            t.control_token.is_none() && t.config.validate().is_ok()
        }
        ServerMessage::TrainingStatus(st) => {
            st.config.as_ref().is_none_or(|c| c.validate().is_ok())
        }
        ServerMessage::StateUpdate(_)
        | ServerMessage::EpisodeStart(_)
        | ServerMessage::EpisodeComplete(_)
        | ServerMessage::Evaluation(_)
        | ServerMessage::TrainingComplete(_)
        | ServerMessage::TrainingRestarted(_)
        | ServerMessage::Paused {}
        | ServerMessage::Resumed {}
        | ServerMessage::Error(_) => true,
        _ => false,
    };
    ok.then_some(m)
}

/// protocol.md's `current_episode`: the episode being run, as the original counted it — after
/// `episode_complete` for 3 it is 4 (the last episode's number once all are done).
fn episode_being_run(completed: u32, total: u32) -> u32 {
    (completed + 1).min(total.max(completed))
}

/// A browser cannot send headers on a WebSocket: the teacher's page sends the admin token in its
/// messages, which makes that connection an operator from then on.
fn presents_admin_token(app: &App, creds: &Credentials) -> bool {
    creds
        .admin_token
        .as_deref()
        .is_some_and(|t| app.is_admin_token(t))
}

/// Where the measured training pace is kept: beside a directory store.
fn pace_path(cfg: &crate::config::Config) -> Option<std::path::PathBuf> {
    cfg.store.dir().map(|d| d.join("training-pace.json"))
}

/// The worker's next event (never, without a worker).
async fn next_event(w: &mut Option<TrainingWorker>) -> LinkEvent<FromTraining> {
    match w {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}

/// One `/ws/training` viewer; `operator` by the operator rule at connect.
pub async fn viewer(socket: WebSocket, app: Arc<App>, operator: bool) {
    let hub = app.training.clone();
    let fps = Some(app.cfg.viewer_fps);
    let (client, stream) = client::start(socket, app.cfg.client_queue, fps, app.metrics.clone());
    let mut v = {
        let mut s = hub.state.lock();
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
        s.viewers.insert(id, client.clone());
        Viewer {
            id,
            client: client.clone(),
            operator,
        }
    };
    // Late joiners catch up at once from the mirror (on a cluster follower, first brought up to
    // date from the holder's `training:status`).
    hub.refresh_from_cluster().await;
    client.send(&ServerMessage::TrainingStatus(Box::new(hub.status_for(&v))));
    app.metrics.training_viewers.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::channel(32);
    tokio::spawn(client::read_loop(
        stream,
        client.clone(),
        app.cfg.client_rate,
        tx,
        validate::parse_training,
    ));
    while let Some(Incoming::Valid((req, creds))) = rx.recv().await {
        v.operator |= presents_admin_token(&app, &creds);
        let cmd = match req {
            TrainingRequest::Status => {
                client.send(&ServerMessage::TrainingStatus(Box::new(hub.status_for(&v))));
                continue;
            }
            TrainingRequest::Start(c) => HubCmd::Start(c, v.clone()),
            TrainingRequest::Control(c) => HubCmd::Control(c, v.clone(), creds.control_token),
            TrainingRequest::TakeControl => HubCmd::TakeControl(v.clone()),
        };
        let _ = hub.cmd_tx.send(cmd).await;
    }
    hub.state.lock().viewers.remove(&v.id);
    app.metrics.training_viewers.fetch_sub(1, Relaxed);
}
