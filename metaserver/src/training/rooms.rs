//! Training rooms (rooms.md, issue 33's first part): `/ws/training` is the room `class`, as it
//! always was; `/ws/training?room=NAME` joins or creates room NAME, with its own hub — its own
//! `worker-training` process once a run starts, its run, control token, history and viewers. A
//! room is one training run's lifecycle (`hub.rs`, `actor.rs`), many times.
//!
//! Bounded: at most `--max-rooms` rooms besides `class`; a room with no viewer and no run is
//! closed after `--room-idle-secs`. At most `--max-training-runs` of them train at once
//! (`slots.rs`): a start beyond waits in a queue, its room told its place. Beside a directory
//! store, a room's run in progress outlives the server as `class`'s does: kept in
//! `rooms/NAME/training-run.json`, its room reopened at start.
//!
//! In a cluster every room is what `class` is there (cluster.md, per room): its own lease, fence
//! and keys (`hamlet:room:NAME:…`), its frames relayed to its viewers on every node. Rooms with a
//! run are listed in `hamlet:rooms`, and every node opens them: when a run's holder is lost, a
//! node with a free training slot takes the run over from its checkpoint (a node without one
//! waits until one of its own runs ends).

use super::hub::{HubParts, TrainingHub, CLASS_ROOM, ROOMS_DIR};
use super::run_file::RUN_FILE;
use super::runs::RunRow;
use super::state::HubCmd;
use super::state::RunState;
use crate::cluster::training::ClusterTraining;
use crate::cluster::Cluster;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often a cluster node looks for rooms with a run it has not opened.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

pub struct Rooms {
    class: Arc<TrainingHub>,
    others: Mutex<BTreeMap<String, Room>>,
    parts: HubParts,
    max_rooms: usize,
    idle_after: Duration,
    /// A cluster node's link to Redis (`None` on one machine).
    cluster: Option<Arc<Cluster>>,
}

struct Room {
    hub: Arc<TrainingHub>,
    /// Ends this room's hub (a child of the server's stop).
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Since when the room has had no viewer and no run (`None`: in use).
    idle_since: Option<Instant>,
}

/// Why a room cannot be joined.
#[derive(Debug, PartialEq, Eq)]
pub enum RoomRefusal {
    /// All `--max-rooms` rooms exist.
    Full(usize),
}

/// One room as `GET /api/rooms` lists it.
#[derive(Serialize)]
pub struct RoomRow {
    pub room: String,
    pub state: RoomState,
    /// Its start's place in the pool's queue (from 1), while it waits for a slot.
    pub queued: Option<usize>,
    pub is_training: bool,
    pub episodes_completed: u32,
    pub total_episodes: u32,
    pub viewers: usize,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The current (or last) run, as the board compares runs: `None` before the room's first.
    pub run: Option<RunRow>,
}

/// Where a room is (rooms.md), for the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomState {
    /// No run yet, or its start was withdrawn.
    Idle,
    /// Its start waits for a slot in the pool.
    Queued,
    Training,
    Paused,
    /// Its last run finished (completed, competent or stopped).
    Complete,
    /// Its last run failed.
    Failed,
}

impl RoomRow {
    fn of(hub: &TrainingHub, queued: Option<usize>) -> RoomRow {
        let (info, run) = hub.board_view();
        let state = match (queued, info.state, info.paused) {
            (Some(_), _, _) => RoomState::Queued,
            (None, RunState::Running, true) => RoomState::Paused,
            (None, RunState::Running, false) => RoomState::Training,
            (None, RunState::Completed, _) => RoomState::Complete,
            (None, RunState::Failed, _) => RoomState::Failed,
            (None, RunState::Idle, _) => RoomState::Idle,
        };
        RoomRow {
            room: hub.room.clone(),
            state,
            queued,
            is_training: info.is_training,
            episodes_completed: info.episodes_completed,
            total_episodes: info.total_episodes,
            viewers: info.viewers,
            worker_pid: info.worker_pid,
            restarts: info.restarts,
            last_error: info.last_error,
            run,
        }
    }
}

impl Rooms {
    pub fn new(
        class: Arc<TrainingHub>,
        parts: HubParts,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Rooms> {
        let cfg = &parts.sup.cfg;
        Arc::new(Rooms {
            max_rooms: cfg.max_rooms,
            idle_after: Duration::from_secs(cfg.room_idle_secs),
            class,
            others: Mutex::new(BTreeMap::new()),
            parts,
            cluster,
        })
    }

    pub fn class(&self) -> &Arc<TrainingHub> {
        &self.class
    }

    /// The room of this (validated) name, created when it does not exist yet.
    pub fn join(&self, name: &str) -> Result<Arc<TrainingHub>, RoomRefusal> {
        if name == CLASS_ROOM {
            return Ok(self.class.clone());
        }
        let mut rooms = self.others.lock();
        if let Some(r) = rooms.get_mut(name) {
            r.idle_since = None;
            return Ok(r.hub.clone());
        }
        if rooms.len() >= self.max_rooms {
            return Err(RoomRefusal::Full(self.max_rooms));
        }
        let stop = self.parts.stop.child_token();
        let parts = HubParts {
            stop: stop.clone(),
            ..self.parts.clone()
        };
        let run = self
            .cluster
            .clone()
            .map(|c| ClusterTraining::new(c, Some(name)));
        let hub = TrainingHub::room(parts, name, run.clone());
        if let Some(run) = run {
            super::cluster::start_tasks(&hub, run, stop.clone());
        }
        let task = tokio::spawn(hub.clone().run());
        info!(room = name, "training room opened");
        rooms.insert(
            name.to_owned(),
            Room {
                hub: hub.clone(),
                stop,
                task,
                idle_since: None,
            },
        );
        Ok(hub)
    }

    /// An existing room (for its history), without creating one.
    pub fn find(&self, name: &str) -> Option<Arc<TrainingHub>> {
        if name == CLASS_ROOM {
            return Some(self.class.clone());
        }
        self.others.lock().get(name).map(|r| r.hub.clone())
    }

    /// Opens the rooms whose run the previous server kept (`rooms/NAME/` beside a directory
    /// store): each resumes its run as `class` does. Called once, before serving.
    pub fn reopen_kept(&self) {
        let Some(dir) = self.parts.sup.cfg.store.dir().map(|d| d.join(ROOMS_DIR)) else {
            return;
        };
        if self.cluster.is_some() {
            return;
        }
        let names = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok());
        for name in names {
            let kept = dir.join(&name).join(RUN_FILE).is_file();
            if kept && crate::validate::room_name(&name).is_some() {
                match self.join(&name) {
                    Ok(_) => info!(room = %name, "training room reopened to resume its run"),
                    Err(e) => {
                        warn!(room = %name, refusal = ?e, "a kept training room was not reopened")
                    }
                }
            }
        }
    }

    /// Cluster: a start another node forwarded here (it had no free slot): to its room, opened
    /// here if need be.
    pub fn take_forwarded(&self, start: crate::cluster::training::ForwardedStart) {
        let hub = match self.join(&start.room) {
            Ok(hub) => hub,
            Err(e) => {
                return warn!(room = %start.room, refusal = ?e, "a forwarded start was dropped")
            }
        };
        let cmd = HubCmd::StartForwarded(Box::new(start.config), start.control_hash);
        if hub.cmd_tx.try_send(cmd).is_err() {
            warn!(room = %start.room, "a forwarded start was dropped: the room is busy");
        }
    }

    /// Training runs this node could start now.
    pub fn free_training_slots(&self) -> usize {
        self.parts.slots.free()
    }

    /// Every room, `class` first.
    pub fn list(&self) -> Vec<RoomRow> {
        let row = |h: &TrainingHub| RoomRow::of(h, self.parts.slots.position(&h.room));
        let mut rows = vec![row(&self.class)];
        rows.extend(self.others.lock().values().map(|r| row(&r.hub)));
        rows
    }

    /// Until the server stops: frees the training slots of rooms whose run ended and starts the
    /// queue's next (every quarter second), and closes rooms that stayed without viewers and
    /// without a run for `--room-idle-secs` (checked every few seconds).
    pub async fn look_after(self: Arc<Self>) {
        let every =
            (self.idle_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut idle_tick = tokio::time::interval(every);
        let mut slot_tick = tokio::time::interval(Duration::from_millis(250));
        let mut cluster_tick = tokio::time::interval(DISCOVER_EVERY);
        loop {
            tokio::select! {
                _ = slot_tick.tick() => self.settle_slots(),
                _ = idle_tick.tick() => self.close_idle_now(Instant::now()),
                _ = cluster_tick.tick(), if self.cluster.is_some() => self.open_cluster_rooms().await,
                _ = self.parts.stop.cancelled() => return,
            }
        }
    }

    /// Cluster: opens every room that has a run somewhere in the cluster, so that this node can
    /// relay it and take it over if its holder is lost.
    async fn open_cluster_rooms(&self) {
        let Some(c) = &self.cluster else { return };
        let Ok(names) = crate::cluster::training::rooms_with_runs(c).await else {
            return;
        };
        for name in names {
            let known = self.others.lock().contains_key(&name);
            if known || crate::validate::room_name(&name).is_none() {
                continue;
            }
            if let Err(e) = self.join(&name) {
                warn!(room = %name, refusal = ?e, "a cluster room with a run was not opened here");
            }
        }
    }

    /// Hands freed slots to the queue's head; when the queue moved, every room still waiting is
    /// told its new place.
    fn settle_slots(&self) {
        // A slot is this node's: a run whose worker runs here (in a cluster, the lease holder's).
        let training = |room: &str| {
            self.find(room).is_some_and(|h| {
                h.is_training() && (h.cluster_run().is_none() || h.is_cluster_holder())
            })
        };
        let (ready, waiting) = self.parts.slots.settle(training);
        if ready.is_empty() {
            return self.move_queue_head();
        }
        for q in ready {
            info!(room = %q.room, "a training slot is free: the queued run starts");
            // A room closed meanwhile drops its start; the slot frees at the next checks.
            let _ = q.to.try_send(q.start);
        }
        for (i, room) in waiting.iter().enumerate() {
            if let Some(hub) = self.find(room) {
                hub.tell_queued(i + 1);
            }
        }
    }

    /// Cluster: while starts wait here and another node has a free slot, the queue's head moves
    /// there (one a check: heartbeats are up to a second old).
    fn move_queue_head(&self) {
        let Some(c) = &self.cluster else { return };
        let elsewhere = c
            .nodes()
            .iter()
            .any(|n| n.id != c.node_id && n.ready && n.free_training_slots > 0);
        if !elsewhere {
            return;
        }
        if let Some(q) = self.parts.slots.take_head() {
            info!(room = %q.room, "a queued start moves to another node's free slot");
            let _ = q.to.try_send(HubCmd::MoveQueued(Box::new(q.start)));
        }
    }

    fn close_idle_now(&self, now: Instant) {
        let mut rooms = self.others.lock();
        for r in rooms.values_mut() {
            let info = r.hub.info();
            let in_use = info.viewers > 0 || info.is_training;
            r.idle_since = if in_use {
                None
            } else {
                r.idle_since.or(Some(now))
            };
        }
        let idle_after = self.idle_after;
        rooms.retain(|name, r| {
            let idle = r
                .idle_since
                .is_some_and(|t| now.duration_since(t) >= idle_after);
            if idle {
                info!(room = %name, "training room closed after staying idle");
                r.stop.cancel();
                // Its directory, if it kept a run once (empty since the run was taken back).
                if let Some(d) = r.hub.keep_dir() {
                    let _ = std::fs::remove_dir(d);
                }
            }
            !idle
        });
    }

    /// Finished runs of every room, oldest first.
    pub fn finished_runs(&self) -> Vec<super::runs::FinishedRun> {
        self.parts.runs.list()
    }

    /// Waits for every room's hub to end (after the server's stop).
    pub async fn wait_all(&self) {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.others.lock())
            .into_values()
            .map(|r| r.task)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
