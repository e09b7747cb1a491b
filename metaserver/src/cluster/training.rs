//! One training run for the whole cluster (cluster.md): its record, checkpoint and status in
//! Redis (written by the lease holder only, every write fenced by the lease: `lease.rs`), its
//! frames and commands over pub/sub.
//!
//! - **Record.** `hamlet:training:run` (hash: `fence`, `meta` = [`ResumableRun`] JSON,
//!   `checkpoint` = the worker's checkpoint file); `training:control` holds the control token's
//!   hash, `training:status` the latest `training_status` for late joiners. When the holder dies
//!   its lease expires; another node takes it and resumes the run from the last checkpoint
//!   (`training_restarted`, reason `node lost`).
//! - **Frames.** The holder publishes every encoded browser frame once on
//!   `hamlet:training:frames`; every node relays what it receives to its own viewers.
//! - **Commands.** A viewer's pause/resume/stop on another node is checked there (operator, or
//!   the run's control token, whose hash is in `hamlet:training:control`) and forwarded as a typed
//!   command on `hamlet:training:commands`.

use super::key;
use super::lease::{room_scope, Lease, CLASS_SCOPE};
use super::{resubscribing, Cluster, ClusterError, Subscribed};
use crate::resumable::ResumableRun;
use crate::tokens::TokenHash;
use futures_util::StreamExt;
use ipc_proto::training::{RunControl, TrainingConfig};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// Frames waiting to be published; when Redis is slower than the run, the oldest wait and new
/// ones are dropped (pub/sub is at-most-once anyway: viewers lose `state_update`s only).
const PUBLISH_QUEUE: usize = 1024;

/// A run recorded in Redis whose holder is gone, taken over by this node.
pub struct AbandonedRun {
    pub fence: u64,
    pub run: ResumableRun,
    pub checkpoint: Option<Vec<u8>>,
}

/// The set of rooms (besides the class) with a run recorded in the cluster.
const ROOMS_KEY: &str = "rooms";

/// The rooms with a run somewhere in the cluster: every node opens them, so that when a run's
/// holder is lost another node can take it over.
pub async fn rooms_with_runs(cluster: &Cluster) -> Result<Vec<String>, ClusterError> {
    cluster
        .cmd(redis::cmd("SMEMBERS").arg(key(ROOMS_KEY)))
        .await
}

/// A start forwarded to a node with a free training slot, on its `hamlet:node:{id}:starts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedStart {
    pub room: String,
    pub config: TrainingConfig,
    /// The hash of the control token the starter's node gave its starter (hex).
    pub control_hash: Option<String>,
}

fn starts_channel(node: &str) -> String {
    key(&format!("node:{node}:starts"))
}

/// Until `stop`: the starts other nodes forward to this one, checked as a browser's would be,
/// to `on_start` (subscribed again after every lost connection, with backoff).
pub async fn forwarded_starts(
    cluster: Arc<Cluster>,
    on_start: impl Fn(ForwardedStart) + Send + Sync,
    stop: tokio_util::sync::CancellationToken,
) {
    let (cluster, on_start) = (&*cluster, &on_start);
    let once = || -> Subscribed<'_> { Box::pin(subscribe_starts(cluster, on_start)) };
    resubscribing("forwarded starts", once, &stop).await;
}

async fn subscribe_starts(
    cluster: &Cluster,
    on_start: &(impl Fn(ForwardedStart) + Sync),
) -> redis::RedisResult<()> {
    let mut ps = cluster.client().get_async_pubsub().await?;
    ps.subscribe(starts_channel(&cluster.node_id)).await?;
    let mut messages = ps.on_message();
    while let Some(m) = messages.next().await {
        let Ok(payload) = m.get_payload::<String>() else {
            continue;
        };
        match serde_json::from_str::<ForwardedStart>(&payload) {
            Ok(s)
                if crate::validate::room_name(&s.room).is_some() && s.config.validate().is_ok() =>
            {
                on_start(s)
            }
            _ => warn!("a forwarded start that is not a valid one; dropped"),
        }
    }
    Err((redis::ErrorKind::Io, "subscription ended").into())
}

/// A command forwarded to the holder.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    control: RunControl,
}

/// This node's part in the cluster's training run.
pub struct ClusterTraining {
    cluster: Arc<Cluster>,
    /// The room whose run this is (`None`: the class's), listed in `hamlet:rooms` while it has a
    /// run so that every node opens the room and may take the run over.
    room: Option<String>,
    /// This node's hold on the lease; every write of the run goes through it.
    pub lease: Lease,
    frames: mpsc::Sender<String>,
    frames_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl ClusterTraining {
    /// The class's run (`room` `None`) or room NAME's, each with its own lease and keys.
    pub fn new(cluster: Arc<Cluster>, room: Option<&str>) -> Arc<ClusterTraining> {
        let (frames, rx) = mpsc::channel(PUBLISH_QUEUE);
        let scope = room.map_or(CLASS_SCOPE.to_owned(), room_scope);
        Arc::new(ClusterTraining {
            lease: Lease::new(cluster.clone(), &scope),
            room: room.map(str::to_owned),
            cluster,
            frames,
            frames_rx: Mutex::new(Some(rx)),
        })
    }

    /// The least loaded other node that is ready and has a free training slot (as of the last
    /// heartbeats).
    pub fn node_with_free_slot(&self) -> Option<String> {
        self.cluster
            .nodes()
            .into_iter()
            .filter(|n| n.id != self.cluster.node_id && n.ready && n.free_training_slots > 0)
            .max_by_key(|n| n.free_training_slots)
            .map(|n| n.id)
    }

    /// Sends a start to `node` (which has a free slot).
    pub async fn forward_start(
        &self,
        node: &str,
        start: &ForwardedStart,
    ) -> Result<(), ClusterError> {
        let body = serde_json::to_string(start).expect("a start serialises");
        self.cluster
            .cmd::<()>(redis::cmd("PUBLISH").arg(starts_channel(node)).arg(body))
            .await
    }

    /// Does this node hold the lease (and run the worker)?
    pub fn is_holder(&self) -> bool {
        self.lease.fence().is_some()
    }

    /// Records the run's description (start, pause, resume, hand-over) and its control hash.
    pub async fn save_run(&self, run: &ResumableRun) -> bool {
        let meta = serde_json::to_vec(run).expect("a run record serialises");
        if let Some(h) = &run.control_hash {
            self.lease.write_key("control", h.hex()).await;
        }
        let written = self.lease.write_run(vec![("meta", meta)]).await;
        if written {
            self.list_room(true).await;
        }
        written
    }

    /// Lists (or unlists) this room in `hamlet:rooms`, the rooms with a run in the cluster.
    async fn list_room(&self, listed: bool) {
        let Some(room) = &self.room else { return };
        let cmd = if listed { "SADD" } else { "SREM" };
        let r = self
            .cluster
            .cmd::<()>(redis::cmd(cmd).arg(key(ROOMS_KEY)).arg(room))
            .await;
        if let Err(e) = r {
            warn!(error = %e, room = %room, "could not list the room in redis");
        }
    }

    /// Records a checkpoint with the run's description.
    pub async fn save_checkpoint(&self, run: &ResumableRun, file: &std::path::Path) -> bool {
        let Ok(bytes) = tokio::fs::read(file).await else {
            warn!(file = %file.display(), "checkpoint file unreadable: not shared");
            return false;
        };
        let meta = serde_json::to_vec(run).expect("a run record serialises");
        self.lease
            .write_run(vec![("meta", meta), ("checkpoint", bytes)])
            .await
    }

    /// The run is over: forget it, give up the lease.
    pub async fn finish_run(&self) {
        self.lease.write_run(Vec::new()).await;
        self.lease.write_key("control", "").await;
        self.list_room(false).await;
        self.lease.release().await;
    }

    /// A run recorded in Redis whose holder is gone, taken over by this node (which now holds
    /// the lease). `Ok(None)`: no run, or someone holds it.
    pub async fn take_abandoned(&self) -> Result<Option<AbandonedRun>, ClusterError> {
        let (run, lease) = (self.lease.key("run"), self.lease.key("lease"));
        let (meta, held): (Option<Vec<u8>>, bool) = self
            .cluster
            .call(|mut c| async move {
                redis::pipe()
                    .hget(&run, "meta")
                    .exists(&lease)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(meta) = meta.filter(|_| !held) else {
            return Ok(None);
        };
        // Read from Redis, checked as a browser's request would be.
        let parsed = serde_json::from_slice::<ResumableRun>(&meta)
            .ok()
            .filter(|r| r.config.validate().is_ok());
        let Some(parsed) = parsed else {
            warn!("unreadable or invalid training run record in redis ignored");
            return Ok(None);
        };
        let Some(fence) = self.lease.acquire().await? else {
            return Ok(None);
        };
        let run = self.lease.key("run");
        let checkpoint: Option<Vec<u8>> = self
            .cluster
            .cmd(redis::cmd("HGET").arg(run).arg("checkpoint"))
            .await?;
        Ok(Some(AbandonedRun {
            fence,
            run: parsed,
            checkpoint,
        }))
    }

    /// Is a run recorded in the cluster (held or waiting for a holder)?
    pub async fn run_exists(&self) -> Result<bool, ClusterError> {
        let run = self.lease.key("run");
        self.cluster.cmd(redis::cmd("EXISTS").arg(run)).await
    }

    /// May a viewer holding `token` control the cluster's run? (Redis keeps only its hash;
    /// compared in constant time.)
    pub async fn token_controls(&self, token: &str) -> Result<bool, ClusterError> {
        let k = self.lease.key("control");
        let stored: Option<String> = self.cluster.cmd(redis::cmd("GET").arg(k)).await?;
        Ok(stored.is_some_and(|h| ipc_proto::handshake::secret_eq(TokenHash::of(token).hex(), &h)))
    }

    /// Is there anything of a run in Redis — a record or a holder's lease?
    pub async fn run_or_lease_exists(&self) -> Result<bool, ClusterError> {
        let (run, lease) = (self.lease.key("run"), self.lease.key("lease"));
        let n: u64 = self
            .cluster
            .cmd(redis::cmd("EXISTS").arg(run).arg(lease))
            .await?;
        Ok(n > 0)
    }

    /// Sends a checked command to the holder.
    pub async fn forward(&self, control: RunControl) -> Result<(), ClusterError> {
        let body = serde_json::to_string(&Forwarded { control }).expect("serialises");
        let ch = self.lease.key("commands");
        self.cluster
            .cmd::<()>(redis::cmd("PUBLISH").arg(ch).arg(body))
            .await
    }

    /// The holder's latest `training_status`, for late joiners on other nodes (fenced).
    pub async fn set_status(&self, json: String) {
        self.lease.write_key("status", &json).await;
    }

    pub async fn status(&self) -> Result<Option<String>, ClusterError> {
        let k = self.lease.key("status");
        self.cluster.cmd(redis::cmd("GET").arg(k)).await
    }

    /// Queues an encoded frame for the other nodes (dropped when the queue is full).
    pub fn publish(&self, text: &str) {
        if self.is_holder() {
            let _ = self
                .frames
                .try_send(format!("{}\n{text}", self.cluster.node_id));
        }
    }

    /// Queues a notice for the room's viewers on the other nodes, holder or not (a forwarded
    /// start waiting for a slot here: its starter is on another node).
    pub fn publish_notice(&self, text: &str) {
        let _ = self
            .frames
            .try_send(format!("{}\n{text}", self.cluster.node_id));
    }

    /// Publishes queued frames, one `PUBLISH` each, until `stop`.
    pub async fn publisher(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut rx) = self.frames_rx.lock().take() else {
            return;
        };
        let ch = self.lease.key("frames");
        loop {
            let frame = tokio::select! {
                f = rx.recv() => match f { Some(f) => f, None => return },
                _ = stop.cancelled() => return,
            };
            let ch = ch.clone();
            let _ = self
                .cluster
                .cmd::<()>(redis::cmd("PUBLISH").arg(ch).arg(frame))
                .await;
        }
    }

    /// Subscribes to frames and commands (again after every lost connection, with backoff):
    /// frames from other nodes go to `on_frame`, commands to `on_command`.
    pub async fn subscriber(
        self: Arc<Self>,
        on_frame: impl Fn(&str) + Send + Sync,
        on_command: impl Fn(RunControl) + Send + Sync,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let (me, on_frame, on_command) = (&*self, &on_frame, &on_command);
        let once = || -> Subscribed<'_> { Box::pin(me.subscribe_once(on_frame, on_command)) };
        resubscribing("training", once, &stop).await;
    }

    async fn subscribe_once(
        &self,
        on_frame: &(impl Fn(&str) + Sync),
        on_command: &(impl Fn(RunControl) + Sync),
    ) -> redis::RedisResult<()> {
        let mut ps = self.cluster.client().get_async_pubsub().await?;
        ps.subscribe(self.lease.key("frames")).await?;
        ps.subscribe(self.lease.key("commands")).await?;
        let mut messages = ps.on_message();
        let frames = self.lease.key("frames");
        while let Some(m) = messages.next().await {
            let Ok(payload) = m.get_payload::<String>() else {
                continue;
            };
            if m.get_channel_name() == frames {
                match payload.split_once('\n') {
                    Some((from, text)) if from != self.cluster.node_id => on_frame(text),
                    _ => {}
                }
            } else if self.is_holder() {
                if let Ok(f) = serde_json::from_str::<Forwarded>(&payload) {
                    on_command(f.control);
                }
            }
        }
        Err((redis::ErrorKind::Io, "subscription ended").into())
    }
}
