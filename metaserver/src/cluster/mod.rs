//! A metaserver as one node of a cluster (cluster.md): N identical nodes behind HAProxy share the
//! little state there is through Redis. Nothing here runs without `--store redis://…`.
//!
//! Code map: this file (the connection, node heartbeats, the cluster view for `/api/status`) ·
//! [`store`] (sessions in Redis: the [`crate::session::store::SessionStore`] of a cluster) ·
//! [`models`] (models shared through Redis) · [`watch`] (watching a session that runs on another
//! node) · [`lease`] (the training lease and the writes it fences) · [`training`] (one training
//! run for the whole cluster: its record, checkpoints, frames and commands over pub/sub).
//!
//! **Architecture Invariant: Redis is never on a session's hot path.** Frames go browser ↔ node ↔
//! worker as on one machine; Redis sees snapshot writes (at most one per `--snapshot-flush-ms`
//! per session), resumes, heartbeats, and the training run's traffic. A node that loses Redis
//! keeps its sessions playing.
//!
//! **Architecture Invariant: every write that could race a newer owner is fenced.** Session
//! snapshots carry their owner's epoch and training checkpoints the lease's fencing number; a
//! Lua script in Redis compares and writes in one step, so a node that lost a session or the
//! lease can never overwrite the state of the node that has it now.

pub mod lease;
pub mod models;
pub mod store;
pub mod training;
pub mod watch;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Every key of ours starts with this (cluster.md's key layout).
pub const PREFIX: &str = "hamlet:";

/// `hamlet:` + `rest`.
pub fn key(rest: &str) -> String {
    format!("{PREFIX}{rest}")
}

/// One pub/sub subscription's run, until its connection is lost.
pub type Subscribed<'a> = futures_util::future::BoxFuture<'a, redis::RedisResult<()>>;

/// Keeps a pub/sub subscription going until `stop`: `subscribe()` runs it until its connection
/// is lost, and it is run again after a backoff from 100 ms, doubling up to 2 s. `what` names it
/// in the log. (The one resubscribe loop of the watch relay, every training run's frames and
/// commands, and forwarded starts.)
pub async fn resubscribing<'b>(
    what: &str,
    mut subscribe: impl FnMut() -> Subscribed<'b>,
    stop: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            r = subscribe() => if let Err(e) = r {
                warn!(error = %e, what, "subscription lost; resubscribing");
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

/// The longest a Redis call may take before the node treats Redis as unavailable. A node must
/// notice a lost Redis well within the training lease (5 s) and never stall a browser for long.
const CALL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Heartbeat period and time to live (cluster.md: every 1 s, TTL 5 s).
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL_MS: u64 = 5000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// What a node says about itself every second (`hamlet:node:{id}`, TTL 5 s).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRow {
    pub id: String,
    /// Sessions with a task on this node.
    pub sessions: usize,
    pub training_viewers: usize,
    /// False while draining (HAProxy stops sending new browsers).
    pub ready: bool,
    /// Holds the training lease.
    pub training_holder: bool,
    /// Training runs this node could start now (a start on a node without one goes here).
    #[serde(default)]
    pub free_training_slots: usize,
    pub heartbeat_ms: u64,
}

/// This node's link to Redis, shared by the store, the model sync and the training run.
pub struct Cluster {
    pub node_id: String,
    client: redis::Client,
    conn: ConnectionManager,
    /// The last call reached Redis.
    up: AtomicBool,
    /// Calls made (for `/metrics` and the bench's operations per session per second).
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    /// How many times Redis became reachable again after being unreachable.
    reconnected: AtomicU64,
    /// Every node alive at the last heartbeat (this one included).
    nodes: Mutex<Vec<NodeRow>>,
}

impl Cluster {
    /// Prepares the connection; it is made on first use and remade with backoff whenever Redis
    /// goes away (the connection manager's job), so a node starts even while Redis is down.
    pub fn new(url: &str, node_id: String) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Cluster {
            node_id,
            client,
            conn,
            up: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            nodes: Mutex::new(Vec::new()),
        }))
    }

    /// A client for what needs its own connection (pub/sub subscriptions).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Runs one call (a command, a pipeline or a script) on the shared connection, bounded in
    /// time, counting it and noting whether Redis answered.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.ops.fetch_add(1, Relaxed);
        let result = match tokio::time::timeout(CALL_TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Redis(e)),
            Err(_) => Err(ClusterError::Timeout(CALL_TIMEOUT)),
        };
        let reached = match &result {
            Ok(_) => true,
            // Redis answered, with an error of its own (a script's): it is up.
            Err(ClusterError::Redis(e)) => matches!(e.kind(), redis::ErrorKind::Server(_)),
            Err(ClusterError::Timeout(_)) => false,
        };
        if result.is_err() {
            self.errors.fetch_add(1, Relaxed);
        }
        let was = self.up.swap(reached, Relaxed);
        if was != reached {
            if reached && self.ops.load(Relaxed) > 1 {
                self.reconnected.fetch_add(1, Relaxed);
            }
            if reached {
                info!(node = %self.node_id, "redis reachable");
            } else {
                warn!(node = %self.node_id, "redis unreachable; retrying with backoff");
            }
        }
        result
    }

    /// One command, as [`Cluster::call`] runs it.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, ClusterError> {
        self.call(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// One Lua script invocation, as [`Cluster::call`] runs it.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        self.call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// The cluster part of `/api/status`: this node, Redis, every node alive, the training holder.
    pub fn view(&self) -> serde_json::Value {
        let nodes = self.nodes();
        let holder = nodes
            .iter()
            .find(|n| n.training_holder)
            .map(|n| n.id.clone());
        serde_json::json!({
            "node_id": self.node_id,
            "store": "redis",
            "redis_reachable": self.is_up(),
            "nodes": nodes,
            "sessions": nodes.iter().map(|n| n.sessions).sum::<usize>(),
            "training_holder": holder,
        })
    }

    /// The cluster's lines of `/metrics`.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP hamlet_redis_calls_total Calls to redis (commands, pipelines, scripts).\n# TYPE hamlet_redis_calls_total counter\nhamlet_redis_calls_total {}\n\
             # HELP hamlet_redis_errors_total Calls to redis that failed or timed out.\n# TYPE hamlet_redis_errors_total counter\nhamlet_redis_errors_total {}\n\
             # HELP hamlet_redis_up Whether the last call reached redis.\n# TYPE hamlet_redis_up gauge\nhamlet_redis_up {}\n\
             # HELP hamlet_cluster_nodes Nodes alive at the last heartbeat.\n# TYPE hamlet_cluster_nodes gauge\nhamlet_cluster_nodes {}\n",
            self.ops.load(Relaxed),
            self.errors.load(Relaxed),
            u8::from(self.is_up()),
            self.nodes.lock().len()
        )
    }

    /// How many times Redis came back after being unreachable (it may have come back empty).
    pub fn reconnections(&self) -> u64 {
        self.reconnected.load(Relaxed)
    }

    /// The cluster as the last heartbeat saw it.
    pub fn nodes(&self) -> Vec<NodeRow> {
        self.nodes.lock().clone()
    }

    /// Publishes this node's row every second and reads everyone's, until `stop`.
    pub async fn heartbeats(self: Arc<Self>, me: impl Fn() -> NodeRow, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let row = me();
            match self.beat(&row).await {
                Ok(nodes) => *self.nodes.lock() = nodes,
                Err(e) => {
                    warn!(node = %self.node_id, error = %e, "heartbeat failed");
                    // Without Redis, this node knows only itself.
                    *self.nodes.lock() = vec![row];
                }
            }
        }
        // Leaving on purpose: the others need not wait for the heartbeat to expire.
        let id = self.node_id.clone();
        let _ = self
            .call(|mut c| async move {
                redis::pipe()
                    .del(key(&format!("node:{id}")))
                    .srem(key("nodes"), &id)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }

    async fn beat(&self, row: &NodeRow) -> Result<Vec<NodeRow>, ClusterError> {
        let json = serde_json::to_string(row).expect("a node row serialises");
        let id = self.node_id.clone();
        let ids: Vec<String> = self
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(key(&format!("node:{id}")))
                    .arg(json)
                    .arg("PX")
                    .arg(HEARTBEAT_TTL_MS)
                    .ignore()
                    .sadd(key("nodes"), &id)
                    .ignore()
                    .smembers(key("nodes"))
                    .query_async::<(Vec<String>,)>(&mut c)
                    .await
                    .map(|(ids,)| ids)
            })
            .await?;
        let keys: Vec<String> = ids.iter().map(|i| key(&format!("node:{i}"))).collect();
        let rows: Vec<Option<String>> = self.cmd(redis::cmd("MGET").arg(keys)).await?;
        let mut alive = Vec::new();
        let mut gone = Vec::new();
        for (id, row) in ids.into_iter().zip(rows) {
            match row.and_then(|r| serde_json::from_str::<NodeRow>(&r).ok()) {
                Some(r) => alive.push(r),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Heartbeats that expired: the node died without saying goodbye.
            let _ = self
                .cmd::<()>(redis::cmd("SREM").arg(key("nodes")).arg(gone))
                .await;
        }
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(alive)
    }
}
