//! A training run's lease (cluster.md): `hamlet:training:lease` = `"{node} {fence}"` for the
//! class's run — `hamlet:room:{name}:lease` for room NAME's (rooms.md: one lease per room) — set
//! only if absent, 5 s to live, renewed every second; the fencing number comes from the same
//! scope's `epoch` (`INCR`). Only the holder runs the run's `worker-training`.
//!
//! **Architecture Invariant: every write of the run is fenced by the lease.** Each write the
//! holder makes ([`Lease::write_run`], [`Lease::write_key`]) is one Lua script that first checks
//! that the lease still holds the writer's `"{node} {fence}"`, and writes nothing otherwise: a
//! holder cut off long enough to lose its lease can never write again, even if the run has
//! finished elsewhere and its record is gone.

use super::{key, Cluster, ClusterError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub const LEASE_TTL_MS: u64 = 5000;
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

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

/// The keys of the class's run: `hamlet:training:…`.
pub const CLASS_SCOPE: &str = "training";

/// The keys of room NAME's run: `hamlet:room:NAME:…`.
pub fn room_scope(room: &str) -> String {
    format!("room:{room}")
}

/// This node's hold on the training lease, and the writes it fences.
pub struct Lease {
    cluster: Arc<Cluster>,
    /// Whose run: [`CLASS_SCOPE`] or a [`room_scope`].
    scope: String,
    /// Our fencing number while we hold the lease.
    fence: Mutex<Option<u64>>,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    fenced: redis::Script,
    fenced_set: redis::Script,
}

impl Lease {
    pub fn new(cluster: Arc<Cluster>, scope: &str) -> Lease {
        Lease {
            cluster,
            scope: scope.to_owned(),
            fence: Mutex::new(None),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            fenced: redis::Script::new(FENCED_WRITE),
            fenced_set: redis::Script::new(FENCED_SET),
        }
    }

    /// A key of this run in Redis (`hamlet:{scope}:{name}`).
    pub fn key(&self, name: &str) -> String {
        key(&format!("{}:{name}", self.scope))
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
        inv.key(self.key("lease"))
            .key(self.key("epoch"))
            .arg(&self.cluster.node_id)
            .arg(LEASE_TTL_MS);
        let fence: Option<u64> = self.cluster.script(inv).await?;
        if let Some(f) = fence {
            *self.fence.lock() = Some(f);
            info!(node = %self.cluster.node_id, scope = %self.scope, fence = f, "training lease taken");
        }
        Ok(fence)
    }

    /// Renews the lease: `Ok(false)` when another node holds it now (we are no longer holder).
    pub async fn renew(&self) -> Result<bool, ClusterError> {
        let Some(fence) = self.fence() else {
            return Ok(false);
        };
        let mut inv = self.renew.prepare_invoke();
        inv.key(self.key("lease"))
            .arg(self.lease_value(fence))
            .arg(LEASE_TTL_MS);
        let ours: i64 = self.cluster.script(inv).await?;
        if ours == 0 {
            *self.fence.lock() = None;
            warn!(node = %self.cluster.node_id, scope = %self.scope, fence, "training lease lost to another node");
        }
        Ok(ours == 1)
    }

    /// Gives the lease up (the run ended or was handed over).
    pub async fn release(&self) {
        let Some(fence) = self.fence.lock().take() else {
            return;
        };
        let mut inv = self.release.prepare_invoke();
        inv.key(self.key("lease")).arg(self.lease_value(fence));
        let r: Result<i64, _> = self.cluster.script(inv).await;
        if let Err(e) = r {
            warn!(error = %e, "could not release the training lease; it expires by itself");
        }
    }

    /// The fenced write of the run record (`fields` empty: delete it). False when refused (this
    /// node no longer holds the lease) or Redis is unreachable.
    pub async fn write_run(&self, fields: Vec<(&'static str, Vec<u8>)>) -> bool {
        let Some(fence) = self.fence() else {
            return false;
        };
        let mut inv = self.fenced.prepare_invoke();
        inv.key(self.key("lease"))
            .key(self.key("run"))
            .arg(self.lease_value(fence))
            .arg(fence);
        for (f, v) in fields {
            inv.arg(f).arg(v);
        }
        self.fenced_outcome(fence, "the run", self.cluster.script::<i64>(inv).await)
    }

    /// A fenced `SET` (an empty `value` deletes) of one of the run's keys.
    pub async fn write_key(&self, name: &str, value: &str) -> bool {
        let Some(fence) = self.fence() else {
            return false;
        };
        let mut inv = self.fenced_set.prepare_invoke();
        inv.key(self.key("lease"))
            .key(self.key(name))
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
}
