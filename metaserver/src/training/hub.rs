//! [`TrainingHub`]: the handle to the one shared training run — its state, its viewers, and the
//! queue of its actor (`actor.rs`). Frames are encoded once and shared by all viewers (and, on a
//! cluster's holder, published once for the other nodes); a slow viewer loses `state_update`s
//! only.

use super::history::{HistoryView, RunHistory};
use super::pace::Pace;
use super::runs::{RunLog, RunRow};
use super::slots::RunSlots;
use super::state::{HubCmd, HubState, RedisUpdate, TrainingInfo, Viewer};
use crate::cluster::training::ClusterTraining;
use crate::guard::Operators;
use crate::model_catalog::ModelCatalog;
use crate::outqueue::Delivery;
use crate::workers::supervisor::Supervisor;
use axum::extract::ws::Utf8Bytes;
use ipc_proto::browser::{ServerMessage, TrainingStatus};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct TrainingHub {
    pub(super) sup: Arc<Supervisor>,
    pub(super) state: Mutex<HubState>,
    pub(super) cmd_tx: mpsc::Sender<HubCmd>,
    cmd_rx: Mutex<Option<mpsc::Receiver<HubCmd>>>,
    pub(super) stop: CancellationToken,
    /// A cluster node's share of the one run (`--store redis://…`); `None` on one machine.
    pub(super) cluster: Option<Arc<ClusterTraining>>,
    /// Where the holder's updates for Redis queue (set by the cluster's sharer task).
    pub(super) to_redis: Mutex<Option<mpsc::Sender<RedisUpdate>>>,
    /// A run's saved model is offered to sessions at once.
    pub(super) models: Arc<ModelCatalog>,
    /// Who may take control of any run.
    pub(super) operators: Operators,
    /// Where this server keeps what outlives it (`training-run.json`, `training-pace.json`):
    /// beside a directory store; `None` in a cluster (Redis keeps the run there) and for rooms
    /// other than `class`.
    pub(super) keep_dir: Option<PathBuf>,
    /// The room this run belongs to (`class` for `/ws/training` without one).
    pub room: String,
    /// The pool of runs every room shares.
    pub(super) slots: Arc<RunSlots>,
    /// Where a finished run is recorded for the class board.
    pub(super) runs: Arc<RunLog>,
}

impl TrainingHub {
    /// The room `class`: the one `/ws/training` always had, kept beside a directory store and
    /// shared by a cluster's nodes.
    pub fn class(parts: HubParts, cluster: Option<Arc<ClusterTraining>>) -> Arc<Self> {
        let keep_dir = parts.sup.cfg.store.dir().map(|d| d.to_path_buf());
        Self::new(parts, CLASS_ROOM, cluster, keep_dir)
    }

    /// Another room: on one server, beside a directory store, its run in progress is kept in
    /// `rooms/NAME/` there when the server stops and resumed by the next one; in a cluster
    /// (`cluster`: the room's own lease and keys) Redis keeps it, as it keeps the class's.
    pub fn room(parts: HubParts, room: &str, cluster: Option<Arc<ClusterTraining>>) -> Arc<Self> {
        let keep_dir = parts
            .sup
            .cfg
            .store
            .dir()
            .map(|d| d.join(ROOMS_DIR).join(room));
        Self::new(parts, room, cluster, keep_dir)
    }

    fn new(
        parts: HubParts,
        room: &str,
        cluster: Option<Arc<ClusterTraining>>,
        keep_dir: Option<PathBuf>,
    ) -> Arc<Self> {
        let HubParts {
            sup,
            stop,
            models,
            operators,
            slots,
            runs,
        } = parts;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let pace = Pace::load(pace_file(&sup, keep_dir.as_deref()).as_deref());
        Arc::new(TrainingHub {
            sup,
            state: Mutex::new(HubState::new(pace)),
            cmd_tx,
            cmd_rx: Mutex::new(Some(cmd_rx)),
            stop,
            cluster,
            to_redis: Mutex::new(None),
            models,
            operators,
            keep_dir,
            room: room.to_owned(),
            slots,
            runs,
        })
    }

    /// Where this hub keeps what outlives the server (`None`: nothing is kept).
    pub(super) fn keep_dir(&self) -> Option<&std::path::Path> {
        self.keep_dir.as_deref()
    }

    /// The actor's queue; taken once, by the actor.
    pub(super) fn take_commands(&self) -> Option<mpsc::Receiver<HubCmd>> {
        self.cmd_rx.lock().take()
    }

    /// Where the measured training pace is kept.
    pub(super) fn pace_file(&self) -> Option<PathBuf> {
        pace_file(&self.sup, self.keep_dir.as_deref())
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

    pub(super) fn is_training(&self) -> bool {
        self.state.lock().status.is_training
    }

    pub fn info(&self) -> TrainingInfo {
        self.state.lock().info()
    }

    /// The stem of the current (or last) run's snapshots, and its saved best (episode, model)
    /// when it has finished.
    pub fn snapshot_run(&self) -> Option<(String, Option<(u32, String)>)> {
        let stem = self
            .state
            .lock()
            .history
            .config
            .as_ref()?
            .snapshots
            .clone()?;
        let best = self.runs.with_snapshots(&stem).and_then(|r| {
            let episode = r.run.best.map(|b| b.episode)?;
            Some((episode, r.model_saved?))
        });
        Some((stem, best))
    }

    /// Keeps the snapshots of the newest `--max-snapshot-runs` runs only (on the blocking pool).
    pub(super) fn prune_snapshots(&self) {
        let (models, keep) = (self.models.clone(), self.sup.cfg.max_snapshot_runs as usize);
        tokio::task::spawn_blocking(move || models.prune_snapshots(keep));
    }

    /// The status row and, once a run has started here, that run as the board shows it.
    pub fn board_view(&self) -> (TrainingInfo, Option<RunRow>) {
        let s = self.state.lock();
        let run = s
            .history
            .config
            .is_some()
            .then(|| RunRow::of(&self.room, &s.history, s.status.best));
        (s.info(), run)
    }

    /// This node's part in a cluster's run (`None` on one machine).
    pub fn cluster_run(&self) -> Option<Arc<ClusterTraining>> {
        self.cluster.clone()
    }

    /// Does this node hold the cluster's training lease?
    pub fn is_cluster_holder(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.is_holder())
    }

    /// Encodes once, queues for every viewer (and, on a cluster's holder, publishes it once for
    /// the other nodes' viewers); viewers that are hopelessly behind are dropped.
    pub(super) fn broadcast(&self, m: &ServerMessage, delivery: Delivery, arrived: Instant) {
        let text = Utf8Bytes::from(m.to_json_in(Some(&self.room)));
        if let Some(ct) = &self.cluster {
            ct.publish(&text);
        }
        self.broadcast_local(text, delivery, arrived);
    }

    pub(super) fn broadcast_local(&self, text: Utf8Bytes, delivery: Delivery, arrived: Instant) {
        self.state
            .lock()
            .viewers
            .retain(|_, c| c.send_encoded(text.clone(), delivery, arrived));
    }

    pub(super) fn announce(&self, m: &ServerMessage) {
        self.broadcast(m, Delivery::Always, Instant::now());
    }

    /// `training_started` for everyone, the starter's copy with the run's control token.
    pub(super) fn announce_start(&self, m: &ServerMessage, arrived: Instant) {
        let ServerMessage::TrainingStarted(t) = m else {
            return self.broadcast(m, Delivery::of(m), arrived);
        };
        let text = Utf8Bytes::from(m.to_json_in(Some(&self.room)));
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

    /// The status as one viewer sees it: whether it may control the run, and whether it counts
    /// as an operator.
    pub(super) fn status_for(&self, v: &Viewer) -> TrainingStatus {
        let mut st = self.status();
        st.can_control = Some(v.operator || self.state.lock().owner == Some(v.id));
        st.operator = Some(v.operator);
        st
    }
}

/// The measured pace, kept beside a directory store (one for every room: it is the machine's).
const PACE_FILE: &str = "training-pace.json";

/// Where rooms other than `class` keep a run in progress, inside a directory store's directory.
pub const ROOMS_DIR: &str = "rooms";

/// The pace file, for a hub that keeps anything (`keep_dir`): beside the directory store.
fn pace_file(sup: &Supervisor, keep_dir: Option<&std::path::Path>) -> Option<PathBuf> {
    keep_dir?;
    sup.cfg.store.dir().map(|d| d.join(PACE_FILE))
}

/// The room of `/ws/training` without `?room=`: what clients of the original use.
pub const CLASS_ROOM: &str = "class";

/// What every room's hub is made from.
#[derive(Clone)]
pub struct HubParts {
    pub sup: Arc<Supervisor>,
    /// The server's stop (a room's own token is a child of it).
    pub stop: CancellationToken,
    pub models: Arc<ModelCatalog>,
    pub operators: Operators,
    pub slots: Arc<RunSlots>,
    pub runs: Arc<RunLog>,
}
