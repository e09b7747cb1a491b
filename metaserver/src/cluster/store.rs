//! Sessions in Redis: the cluster's [`SessionStore`] (cluster.md's key layout).
//!
//! - `hamlet:sess:{id}` — the session (MessagePack [`StoredSession`]: snapshot with model and play
//!   state, the hashes of its tokens, its epoch), TTL = the resume window;
//! - `hamlet:token:{sha256}` and `hamlet:watch:{sha256}` → the session id, same TTL;
//! - `hamlet:sess:{id}:owner` — hash `{epoch, node}`: who owns the session now;
//! - `hamlet:sessions` (sorted set: id → saved at) and `hamlet:sessions:pos` (id → episode:step),
//!   the listing for `/api/status` (the newest 100 read), trimmed as entries expire;
//! - `hamlet:detached` (sorted set: id → saved at) — the sessions put away (no node runs them):
//!   `--max-detached` holds across the cluster, the oldest forgotten first.
//!
//! Writes are one Lua script that compares the writer's epoch with the owner's and writes only
//! if it is not older; a resume raises the owner's epoch in Redis (`HINCRBY`), so the node that
//! had the session before finds its next write refused and lets go.

use super::{key, Cluster, ClusterError};
use crate::session::store::{Lookup, Put, SessionStore, StoreError, StoredRow, StoredSession};
use crate::tokens::TokenHash;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Writes `sess`, its token and watch keys and the listing, if the writer's epoch (ARGV[2]) is
/// not older than the owner's; a session put away (ARGV[8] = 0) joins the detached set, a
/// running one leaves it. KEYS: sess, owner, token, watch, listing, positions, detached.
/// ARGV: blob, epoch, node, ttl ms, id, saved at ms, [`Position`] JSON, running (1/0).
/// Returns 1 written, 0 refused.
const PUT: &str = r#"
local current = redis.call('HGET', KEYS[2], 'epoch')
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'node', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[4])
redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[5])
redis.call('HSET', KEYS[6], ARGV[5], ARGV[7])
if ARGV[8] == '1' then redis.call('ZREM', KEYS[7], ARGV[5]) else redis.call('ZADD', KEYS[7], ARGV[6], ARGV[5]) end
return 1
"#;

/// `--max-detached` across the cluster: the oldest detached sessions beyond ARGV[1] are
/// forgotten (their session and owner keys; the token keys then lead nowhere and expire).
/// KEYS: detached, listing, positions. ARGV: keep, key prefix. Returns how many.
const TRIM_DETACHED: &str = r#"
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if over <= 0 then return 0 end
local gone = redis.call('ZPOPMIN', KEYS[1], over)
for i = 1, #gone, 2 do
  local id = gone[i]
  redis.call('DEL', ARGV[2] .. 'sess:' .. id, ARGV[2] .. 'sess:' .. id .. ':owner')
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return over
"#;

/// Rows of `/api/status`'s listing read each second (the newest; the total is counted).
const LIST_LIMIT: isize = 100;

/// Claims a session: the owner's epoch rises above every earlier owner's (at least above the
/// stored copy's). KEYS: sess, owner. ARGV: node, ttl ms, the stored copy's epoch.
/// Returns the new epoch, or nil when the session has expired meanwhile.
const TAKE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local current = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
local epoch = math.max(current, tonumber(ARGV[3])) + 1
redis.call('HSET', KEYS[2], 'epoch', epoch, 'node', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return epoch
"#;

/// Forgets a session unless a newer owner has it. KEYS: sess, owner, token, watch, listing,
/// positions, detached. ARGV: epoch, id.
const REMOVE: &str = r#"
local current = redis.call('HGET', KEYS[2], 'epoch')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('HDEL', KEYS[6], ARGV[2])
redis.call('ZREM', KEYS[7], ARGV[2])
return 1
"#;

/// What the listing says of a session besides its id: where it was, and whether the node that
/// wrote it was running it (so `/api/status` can tell detached sessions from others' live ones).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Position {
    episode: u32,
    step: u32,
    running: bool,
    node: String,
}

/// The cluster's session store. Its calls block (the trait's contract): each runs the async
/// Redis call on the server's runtime from the blocking thread that called it.
pub struct RedisStore {
    cluster: Arc<Cluster>,
    runtime: Handle,
    ttl_ms: u64,
    put: redis::Script,
    take: redis::Script,
    remove: redis::Script,
    trim: redis::Script,
    /// The listing as the last [`SessionStore::expire`] read it (the newest [`LIST_LIMIT`]
    /// rows), and how many sessions it holds in all.
    rows: Mutex<(Vec<StoredRow>, usize)>,
}

impl RedisStore {
    /// Must be called on the runtime its calls will use.
    pub fn new(cluster: Arc<Cluster>, resume_window_secs: u64) -> RedisStore {
        RedisStore {
            cluster,
            runtime: Handle::current(),
            ttl_ms: resume_window_secs.max(1).saturating_mul(1000),
            put: redis::Script::new(PUT),
            take: redis::Script::new(TAKE),
            remove: redis::Script::new(REMOVE),
            trim: redis::Script::new(TRIM_DETACHED),
            rows: Mutex::new((Vec::new(), 0)),
        }
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, StoreError> {
        self.runtime
            .block_on(f)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn session_keys(id: &str, s: &StoredSession) -> [String; 7] {
        [
            key(&format!("sess:{id}")),
            key(&format!("sess:{id}:owner")),
            key(&format!("token:{}", s.token.hex())),
            key(&format!("watch:{}", s.watch.hex())),
            key("sessions"),
            key("sessions:pos"),
            key("detached"),
        ]
    }

    /// The id a token or watch hash leads to, then the session itself.
    fn lookup(&self, k: Lookup<'_>) -> Result<Option<StoredSession>, StoreError> {
        let index = match k {
            Lookup::Token(t) => key(&format!("token:{}", t.hex())),
            Lookup::Watch(w) => key(&format!("watch:{}", w.hex())),
        };
        let c = &self.cluster;
        let id: Option<String> = self.block_on(c.cmd(redis::cmd("GET").arg(index)))?;
        let Some(id) = id else { return Ok(None) };
        let sess = key(&format!("sess:{id}"));
        let blob: Option<Vec<u8>> = self.block_on(c.cmd(redis::cmd("GET").arg(sess)))?;
        let Some(blob) = blob else { return Ok(None) };
        let s: StoredSession =
            rmp_serde::from_slice(&blob).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The index could only lead elsewhere if someone forged keys in Redis.
        let matches = match k {
            Lookup::Token(t) => s.token.matches(t),
            Lookup::Watch(w) => s.watch.matches(w),
        };
        Ok(matches.then_some(s))
    }
}

impl RedisStore {
    /// Takes out of the listing the sessions last written before `cutoff_ms` (Redis has let
    /// their keys expire); how many.
    fn trim_listing(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let (listing, pos) = (key("sessions"), key("sessions:pos"));
        self.block_on(self.cluster.call(|mut con| async move {
            let gone: Vec<String> = redis::cmd("ZRANGE")
                .arg(&listing)
                .arg("-inf")
                .arg(format!("({cutoff_ms}"))
                .arg("BYSCORE")
                .query_async(&mut con)
                .await?;
            if !gone.is_empty() {
                redis::pipe()
                    .zrem(&listing, &gone)
                    .hdel(&pos, &gone)
                    .query_async::<()>(&mut con)
                    .await?;
            }
            Ok(gone.len())
        }))
    }

    /// The newest [`LIST_LIMIT`] listed sessions with the episode and step of their last write,
    /// and how many are listed in all.
    fn read_listing(&self) -> Result<(Vec<StoredRow>, usize), StoreError> {
        let (listing, pos) = (key("sessions"), key("sessions:pos"));
        let (rows, positions, total): (Vec<(String, u64)>, Vec<Option<String>>, usize) = self
            .block_on(self.cluster.call(|mut con| async move {
                let total: usize = redis::cmd("ZCARD")
                    .arg(&listing)
                    .query_async(&mut con)
                    .await?;
                let rows: Vec<(String, u64)> = redis::cmd("ZRANGE")
                    .arg(&listing)
                    .arg(-LIST_LIMIT)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut con)
                    .await?;
                if rows.is_empty() {
                    return Ok((rows, Vec::new(), total));
                }
                let ids: Vec<&String> = rows.iter().map(|r| &r.0).collect();
                let positions = redis::cmd("HMGET")
                    .arg(&pos)
                    .arg(ids)
                    .query_async(&mut con)
                    .await?;
                Ok((rows, positions, total))
            }))?;
        let alive: Vec<String> = self.cluster.nodes().into_iter().map(|n| n.id).collect();
        let rows = rows
            .into_iter()
            .zip(positions)
            .map(|((id, saved_at_ms), p)| {
                let p: Option<Position> = p.and_then(|p| serde_json::from_str(&p).ok());
                StoredRow {
                    id,
                    episode: p.as_ref().map_or(1, |p| p.episode),
                    step: p.as_ref().map_or(0, |p| p.step),
                    saved_at_ms,
                    // Its node wrote it while running it, and that node still beats.
                    running_elsewhere: p.is_some_and(|p| {
                        p.running && p.node != self.cluster.node_id && alive.contains(&p.node)
                    }),
                }
            })
            .collect();
        Ok((rows, total))
    }
}

impl SessionStore for RedisStore {
    fn put(&self, s: &StoredSession) -> Result<Put, StoreError> {
        let blob = rmp_serde::to_vec_named(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let keys = Self::session_keys(&s.id, s);
        let (episode, step) = s
            .snapshot
            .as_ref()
            .map_or((1, 0), |p| (p.episode, p.world.step));
        let position = Position {
            episode,
            step,
            running: s.running,
            node: self.cluster.node_id.clone(),
        };
        let mut inv = self.put.prepare_invoke();
        inv.key(&keys[..]);
        inv.arg(blob)
            .arg(s.epoch)
            .arg(&self.cluster.node_id)
            .arg(self.ttl_ms)
            .arg(&s.id)
            .arg(s.saved_at_ms)
            .arg(serde_json::to_string(&position).expect("serialises"))
            .arg(if s.running { "1" } else { "0" });
        let written: i64 = self.block_on(self.cluster.script(inv))?;
        Ok(if written == 1 {
            Put::Written
        } else {
            Put::Superseded
        })
    }

    fn get(&self, token: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        self.lookup(Lookup::Token(token))
    }

    fn get_by_watch(&self, watch: &TokenHash) -> Result<Option<StoredSession>, StoreError> {
        self.lookup(Lookup::Watch(watch))
    }

    fn claim(&self, k: Lookup<'_>) -> Result<Option<StoredSession>, StoreError> {
        let Some(mut s) = self.lookup(k)? else {
            return Ok(None);
        };
        let mut inv = self.take.prepare_invoke();
        inv.key(key(&format!("sess:{}", s.id)))
            .key(key(&format!("sess:{}:owner", s.id)))
            .arg(&self.cluster.node_id)
            .arg(self.ttl_ms)
            .arg(s.epoch);
        let epoch: Option<u64> = self.block_on(self.cluster.script(inv))?;
        Ok(epoch.map(|e| {
            s.epoch = e;
            s
        }))
    }

    fn remove(&self, token: &TokenHash, epoch: u64) -> Result<(), StoreError> {
        let Some(s) = self.lookup(Lookup::Token(token))? else {
            return Ok(());
        };
        let keys = Self::session_keys(&s.id, &s);
        let mut inv = self.remove.prepare_invoke();
        inv.key(&keys[..]).arg(epoch).arg(&s.id);
        let _: i64 = self.block_on(self.cluster.script(inv))?;
        Ok(())
    }

    /// Redis forgets sessions by their TTL; this trims the listing of those it forgot, forgets
    /// the oldest detached sessions beyond `keep` (`--max-detached`, across the cluster), and
    /// reads the listing for [`SessionStore::list`].
    fn expire(
        &self,
        cutoff_ms: u64,
        keep: usize,
        _live: &dyn Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let mut gone = self.trim_listing(cutoff_ms)?;
        let mut inv = self.trim.prepare_invoke();
        inv.key(key("detached"))
            .key(key("sessions"))
            .key(key("sessions:pos"))
            .arg(keep)
            .arg(super::PREFIX);
        let trimmed: usize = self.block_on(self.cluster.script(inv))?;
        gone += trimmed;
        *self.rows.lock() = self.read_listing()?;
        Ok(gone)
    }

    /// A third of the time to live, at most a minute: a paused session keeps its keys.
    fn refresh_every(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(
            (self.ttl_ms / 3).clamp(1000, 60_000),
        ))
    }

    fn generation(&self) -> u64 {
        self.cluster.reconnections()
    }

    fn list(&self) -> Vec<StoredRow> {
        self.rows.lock().0.clone()
    }

    fn stored_count(&self) -> usize {
        self.rows.lock().1
    }
}
