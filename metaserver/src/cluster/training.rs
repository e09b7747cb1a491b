//! One training run for the whole cluster (cluster.md).
//!
//! - **Lease.** `hamlet:training:lease` = `"{node} {fence}"`, set only if absent, 5 s to live,
//!   renewed every second; the fencing number comes from `INCR hamlet:training:epoch`. Only the
//!   holder runs `worker-training`. A holder that cannot renew pauses its run (safety over
//!   availability) and continues when it can; one that finds the lease taken stops its worker.
//! - **Fencing.** Every write the holder makes — the run record `hamlet:training:run` (hash:
//!   `fence`, `meta` = [`RunFacts`] JSON, `checkpoint` = the worker's checkpoint file),
//!   `training:control`, `training:status` — is one Lua script that first checks that
//!   `hamlet:training:lease` still holds the writer's `"{node} {fence}"`, and writes nothing
//!   otherwise: a holder cut off long enough to lose its lease can never write again, even if
//!   the run has finished elsewhere and its record is gone. When the holder dies its lease
//!   expires; another node takes it and resumes the run from the last checkpoint
//!   (`training_restarted`, reason `node lost`).
//! - **Frames.** The holder publishes every encoded browser frame once on
//!   `hamlet:training:frames`; every node relays what it receives to its own viewers.
//!   `hamlet:training:status` holds the latest `training_status` for late joiners.
//! - **Commands.** A viewer's pause/resume/stop on another node is checked there (operator, or
//!   the run's control token, whose hash is in `hamlet:training:control`) and forwarded as a typed
//!   command on `hamlet:training:commands`.

use super::{key, Cluster, ClusterError};
use crate::store::TokenHash;
use crate::training::RunFacts;
use futures_util::StreamExt;
use ipc_proto::training::RunControl;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub const LEASE_TTL_MS: u64 = 5000;
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Frames waiting to be published; when Redis is slower than the run, the oldest wait and new
/// ones are dropped (pub/sub is at-most-once anyway: viewers lose `state_update`s only).
const PUBLISH_QUEUE: usize = 1024;

const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
return fence
"#;

/// KEYS: lease. ARGV: "{node} {fence}", ttl. 1 if still ours (renewed), else 0.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS: lease. ARGV: "{node} {fence}".
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// The fenced write of the run record. KEYS: lease, run. ARGV: the writer's lease value, its
/// fence, then field/value pairs (none: delete the record). 1 written, 0 refused (the lease is
/// not the writer's).
const FENCED_WRITE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV == 2 then redis.call('DEL', KEYS[2]) return 1 end
redis.call('HSET', KEYS[2], 'fence', ARGV[2], unpack(ARGV, 3))
return 1
"#;

/// A fenced plain value. KEYS: lease, key. ARGV: the writer's lease value, the value (empty:
/// delete). 1 written, 0 refused.
const FENCED_SET: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[2]) else redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"#;

/// A run found without a holder.
pub struct Orphan {
    pub fence: u64,
    pub run: RunFacts,
    pub checkpoint: Option<Vec<u8>>,
}

/// A command forwarded to the holder.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    control: RunControl,
}

/// This node's part in the cluster's training run.
pub struct ClusterTraining {
    cluster: Arc<Cluster>,
    /// Our fencing number while we hold the lease.
    fence: Mutex<Option<u64>>,
    frames: mpsc::Sender<String>,
    frames_rx: Mutex<Option<mpsc::Receiver<String>>>,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    fenced: redis::Script,
    fenced_set: redis::Script,
}

fn channel(name: &str) -> String {
    key(&format!("training:{name}"))
}

impl ClusterTraining {
    pub fn new(cluster: Arc<Cluster>) -> Arc<ClusterTraining> {
        let (frames, rx) = mpsc::channel(PUBLISH_QUEUE);
        Arc::new(ClusterTraining {
            cluster,
            fence: Mutex::new(None),
            frames,
            frames_rx: Mutex::new(Some(rx)),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            fenced: redis::Script::new(FENCED_WRITE),
            fenced_set: redis::Script::new(FENCED_SET),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.cluster.node_id
    }

    /// Our fencing number, while we hold the lease.
    pub fn fence(&self) -> Option<u64> {
        *self.fence.lock()
    }

    pub fn is_holder(&self) -> bool {
        self.fence().is_some()
    }

    fn lease_value(&self, fence: u64) -> String {
        format!("{} {fence}", self.cluster.node_id)
    }

    /// Takes the lease if nobody holds it: our fencing number, or `None` if another node has it.
    pub async fn acquire(&self) -> Result<Option<u64>, ClusterError> {
        let mut inv = self.acquire.prepare_invoke();
        inv.key(channel("lease"))
            .key(channel("epoch"))
            .arg(&self.cluster.node_id)
            .arg(LEASE_TTL_MS);
        let fence: Option<u64> = self.cluster.script(inv).await?;
        if let Some(f) = fence {
            *self.fence.lock() = Some(f);
            info!(node = %self.cluster.node_id, fence = f, "training lease taken");
        }
        Ok(fence)
    }

    /// Renews the lease: `Ok(false)` when another node holds it now (we are no longer holder).
    pub async fn renew(&self) -> Result<bool, ClusterError> {
        let Some(fence) = self.fence() else {
            return Ok(false);
        };
        let mut inv = self.renew.prepare_invoke();
        inv.key(channel("lease"))
            .arg(self.lease_value(fence))
            .arg(LEASE_TTL_MS);
        let ours: i64 = self.cluster.script(inv).await?;
        if ours == 0 {
            *self.fence.lock() = None;
            warn!(node = %self.cluster.node_id, fence, "training lease lost to another node");
        }
        Ok(ours == 1)
    }

    /// Gives the lease up (the run ended or was handed over).
    pub async fn release(&self) {
        let Some(fence) = self.fence.lock().take() else {
            return;
        };
        let mut inv = self.release.prepare_invoke();
        inv.key(channel("lease")).arg(self.lease_value(fence));
        let r: Result<i64, _> = self.cluster.script(inv).await;
        if let Err(e) = r {
            warn!(error = %e, "could not release the training lease; it expires by itself");
        }
    }

    /// The fenced write of the run record (`fields` empty: delete it). False when refused (this
    /// node no longer holds the lease) or Redis is unreachable.
    async fn write_run(&self, fields: Vec<(&'static str, Vec<u8>)>) -> bool {
        let Some(fence) = self.fence() else {
            return false;
        };
        let mut inv = self.fenced.prepare_invoke();
        inv.key(channel("lease"))
            .key(channel("run"))
            .arg(self.lease_value(fence))
            .arg(fence);
        for (f, v) in fields {
            inv.arg(f).arg(v);
        }
        self.fenced_outcome(fence, "the run", self.cluster.script::<i64>(inv).await)
    }

    /// A fenced `SET` (an empty `value` deletes) of one of the run's keys.
    async fn write_key(&self, name: &str, value: &str) -> bool {
        let Some(fence) = self.fence() else {
            return false;
        };
        let mut inv = self.fenced_set.prepare_invoke();
        inv.key(channel("lease"))
            .key(channel(name))
            .arg(self.lease_value(fence))
            .arg(value);
        self.fenced_outcome(fence, name, self.cluster.script::<i64>(inv).await)
    }

    fn fenced_outcome(&self, fence: u64, what: &str, r: Result<i64, ClusterError>) -> bool {
        match r {
            Ok(1) => true,
            Ok(_) => {
                warn!(
                    fence,
                    what, "not written: this node no longer holds the training lease"
                );
                false
            }
            Err(e) => {
                warn!(error = %e, what, "could not write the training run to redis");
                false
            }
        }
    }

    /// Records the run's description (start, pause, resume, hand-over) and its control hash.
    pub async fn save_run(&self, run: &RunFacts) -> bool {
        let meta = serde_json::to_vec(run).expect("a run record serialises");
        if let Some(h) = &run.control_hash {
            self.write_key("control", h.hex()).await;
        }
        self.write_run(vec![("meta", meta)]).await
    }

    /// Records a checkpoint with the run's description.
    pub async fn save_checkpoint(&self, run: &RunFacts, file: &std::path::Path) -> bool {
        let Ok(bytes) = tokio::fs::read(file).await else {
            warn!(file = %file.display(), "checkpoint file unreadable: not shared");
            return false;
        };
        let meta = serde_json::to_vec(run).expect("a run record serialises");
        self.write_run(vec![("meta", meta), ("checkpoint", bytes)])
            .await
    }

    /// The run is over: forget it, give up the lease.
    pub async fn finish_run(&self) {
        self.write_run(Vec::new()).await;
        self.write_key("control", "").await;
        self.release().await;
    }

    /// A run recorded in Redis whose holder is gone, taken over by this node (which now holds
    /// the lease). `Ok(None)`: no run, or someone holds it.
    pub async fn take_orphan(&self) -> Result<Option<Orphan>, ClusterError> {
        let (run, lease) = (channel("run"), channel("lease"));
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
        let parsed = serde_json::from_slice::<RunFacts>(&meta)
            .ok()
            .filter(|r| r.config.validate().is_ok());
        let Some(parsed) = parsed else {
            warn!("unreadable or invalid training run record in redis ignored");
            return Ok(None);
        };
        let Some(fence) = self.acquire().await? else {
            return Ok(None);
        };
        let run = channel("run");
        let checkpoint: Option<Vec<u8>> = self
            .cluster
            .cmd(redis::cmd("HGET").arg(run).arg("checkpoint"))
            .await?;
        Ok(Some(Orphan {
            fence,
            run: parsed,
            checkpoint,
        }))
    }

    /// Is a run recorded in the cluster (held or waiting for a holder)?
    pub async fn run_exists(&self) -> Result<bool, ClusterError> {
        let run = channel("run");
        self.cluster.cmd(redis::cmd("EXISTS").arg(run)).await
    }

    /// May a viewer holding `token` control the cluster's run? (Redis keeps only its hash;
    /// compared in constant time.)
    pub async fn token_controls(&self, token: &str) -> Result<bool, ClusterError> {
        let k = channel("control");
        let stored: Option<String> = self.cluster.cmd(redis::cmd("GET").arg(k)).await?;
        Ok(stored.is_some_and(|h| ipc_proto::handshake::secret_eq(TokenHash::of(token).hex(), &h)))
    }

    /// Is there anything of a run in Redis — a record or a holder's lease?
    pub async fn run_or_lease_exists(&self) -> Result<bool, ClusterError> {
        let (run, lease) = (channel("run"), channel("lease"));
        let n: u64 = self
            .cluster
            .cmd(redis::cmd("EXISTS").arg(run).arg(lease))
            .await?;
        Ok(n > 0)
    }

    /// Sends a checked command to the holder.
    pub async fn forward(&self, control: RunControl) -> Result<(), ClusterError> {
        let body = serde_json::to_string(&Forwarded { control }).expect("serialises");
        let ch = channel("commands");
        self.cluster
            .cmd::<()>(redis::cmd("PUBLISH").arg(ch).arg(body))
            .await
    }

    /// The holder's latest `training_status`, for late joiners on other nodes (fenced).
    pub async fn set_status(&self, json: String) {
        self.write_key("status", &json).await;
    }

    pub async fn status(&self) -> Result<Option<String>, ClusterError> {
        let k = channel("status");
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

    /// Publishes queued frames, one `PUBLISH` each, until the queue closes.
    pub async fn publisher(self: Arc<Self>) {
        let Some(mut rx) = self.frames_rx.lock().take() else {
            return;
        };
        let ch = channel("frames");
        while let Some(frame) = rx.recv().await {
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
        on_frame: impl Fn(&str),
        on_command: impl Fn(RunControl),
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = self.subscribe_once(&on_frame, &on_command);
            tokio::select! {
                r = session => if let Err(e) = r {
                    warn!(error = %e, "training subscription lost; resubscribing");
                },
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe_once(
        &self,
        on_frame: &impl Fn(&str),
        on_command: &impl Fn(RunControl),
    ) -> redis::RedisResult<()> {
        let mut ps = self.cluster.client().get_async_pubsub().await?;
        ps.subscribe(channel("frames")).await?;
        ps.subscribe(channel("commands")).await?;
        let mut messages = ps.on_message();
        let frames = channel("frames");
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
