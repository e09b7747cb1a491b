//! Training rooms (rooms.md, issue 33's first part): `/ws/training` is the room `class`, as it
//! always was; `/ws/training?room=NAME` joins or creates room NAME, with its own hub — its own
//! `worker-training` process once a run starts, its run, control token, history and viewers. A
//! room is one training run's lifecycle (`hub.rs`, `actor.rs`), many times.
//!
//! Bounded: at most `--max-rooms` rooms besides `class`; a room with no viewer and no run is
//! closed after `--room-idle-secs`. Rooms other than `class` live on this server only: in a
//! cluster they are refused (one lease per room is not built yet), and their runs end with the
//! server (`class`'s run alone is kept in `training-run.json`).

use super::hub::{HubParts, TrainingHub, CLASS_ROOM};
use super::state::TrainingInfo;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub struct Rooms {
    class: Arc<TrainingHub>,
    others: Mutex<BTreeMap<String, Room>>,
    parts: HubParts,
    max_rooms: usize,
    idle_after: Duration,
    /// A cluster node: rooms besides `class` are refused.
    in_cluster: bool,
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
    /// This server is a cluster node.
    InACluster,
}

/// One room as `GET /api/rooms` lists it.
#[derive(Serialize)]
pub struct RoomRow {
    pub room: String,
    #[serde(flatten)]
    pub info: TrainingInfo,
}

impl Rooms {
    pub fn new(class: Arc<TrainingHub>, parts: HubParts, in_cluster: bool) -> Arc<Rooms> {
        let cfg = &parts.sup.cfg;
        Arc::new(Rooms {
            max_rooms: cfg.max_rooms,
            idle_after: Duration::from_secs(cfg.room_idle_secs),
            class,
            others: Mutex::new(BTreeMap::new()),
            parts,
            in_cluster,
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
        if self.in_cluster {
            return Err(RoomRefusal::InACluster);
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
        let hub = TrainingHub::room(parts, name);
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

    /// Every room, `class` first.
    pub fn list(&self) -> Vec<RoomRow> {
        let row = |h: &TrainingHub| RoomRow {
            room: h.room.clone(),
            info: h.info(),
        };
        let mut rows = vec![row(&self.class)];
        rows.extend(self.others.lock().values().map(|r| row(&r.hub)));
        rows
    }

    /// Closes rooms that stayed without viewers and without a run for `--room-idle-secs`,
    /// every few seconds until the server stops.
    pub async fn close_idle(self: Arc<Self>) {
        let every =
            (self.idle_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => self.close_idle_now(Instant::now()),
                _ = self.parts.stop.cancelled() => return,
            }
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
            }
            !idle
        });
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
