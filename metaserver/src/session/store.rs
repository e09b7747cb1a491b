//! Where sessions outlive their connection and their server (sessions.md): one small trait,
//! [`SessionStore`], implemented by the embedded default (`dir_store.rs`, a directory with two
//! copies per session, rewritten in place by turns) and by a cluster's Redis (`cluster/store.rs`).
//!
//! **Architecture Invariant: the store never sees a token.** Entries are keyed by the SHA-256 of
//! the resume token ([`TokenHash`]); the watch token is kept only as its hash too. A stolen store
//! directory does not let anyone into a session.
//!
//! The trait is shaped for the cluster store that follows (`cluster.md`): a write carries the
//! writer's `epoch` and is refused when the stored entry has a newer one (compare-and-set: a node
//! that lost a session can never overwrite its new owner), and entries expire after a time to
//! live. Calls block (file or network I/O): session tasks write through `store_writer.rs`, other
//! async code calls them through `spawn_blocking`.

use crate::tokens::TokenHash;
use ipc_proto::inference::SessionSnapshot;
use serde::{Deserialize, Serialize};

/// One session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    pub id: String,
    pub token: TokenHash,
    pub watch: TokenHash,
    /// Seed of the session's random numbers.
    pub seed: u64,
    /// The world, model, play state and speed; `None` before the first step.
    pub snapshot: Option<SessionSnapshot>,
    /// Raised by every process that takes the session (resume, restart): a write with an older
    /// epoch than the stored one is refused.
    pub epoch: u64,
    /// When this copy was written (Unix milliseconds).
    pub saved_at_ms: u64,
    /// A server was running the session when it wrote this copy (false: written as the session
    /// was put away — detached, or its server stopping).
    #[serde(default)]
    pub running: bool,
    /// The session's last ≤ 100 episode ends (`connected.recent_episodes` after a resume).
    #[serde(default)]
    pub recent: Vec<ipc_proto::browser::EpisodeSummary>,
}

/// What [`SessionStore::list`] reports: ids and times, never tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRow {
    pub id: String,
    pub episode: u32,
    pub step: u32,
    pub saved_at_ms: u64,
    /// Another live server runs this session right now (a cluster's store knows; on one machine
    /// always false).
    #[serde(skip)]
    pub running_elsewhere: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("session store entry unreadable: {0}")]
    Corrupt(String),
    /// The store could not be reached (a cluster's Redis is down or too slow).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// The outcome of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Written,
    /// The stored entry has a newer epoch: someone else owns the session now.
    Superseded,
}

/// How [`SessionStore::claim`] finds a session: by the hash of its resume or its watch token.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Token(&'a TokenHash),
    Watch(&'a TokenHash),
}

/// Splits `items` into the first of each session, in order, and the rest. A round holds one write
/// per session (`store_writer.rs`, `DirStore::put_round`): with two, both of its copies would be
/// overwritten before either is durable.
pub fn one_per_session<T>(
    items: impl IntoIterator<Item = T>,
    token: impl Fn(&T) -> TokenHash,
) -> (Vec<T>, Vec<T>) {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().partition(|item| seen.insert(token(item)))
}

/// Durable session state. Implementations: `DirStore`; the Redis store of cluster.md.
pub trait SessionStore: Send + Sync + 'static {
    /// Writes `s` unless the stored entry's epoch is newer (then [`Put::Superseded`]).
    fn put(&self, s: &StoredSession) -> Result<Put, StoreError>;
    /// Writes a round of sessions together: one outcome per entry, in order, each as
    /// [`SessionStore::put`] would give it. A store that makes a whole round durable at once
    /// (the directory: one `syncfs`) overrides this; the default writes them one by one.
    fn put_round(&self, entries: &[StoredSession]) -> Vec<Result<Put, StoreError>> {
        entries.iter().map(|s| self.put(s)).collect()
    }
    /// Whether live sessions' writes are gathered into rounds ([`SessionStore::put_round`], by
    /// `store_writer.rs`) rather than made one by one, each on a blocking thread of its own.
    /// True for a store whose cost is per round, not per write; false for one whose writes wait
    /// on a network (Redis): a round would make each wait for the slowest.
    fn writes_in_rounds(&self) -> bool {
        false
    }
    /// The session whose resume token hashes to `token`.
    fn get(&self, token: &TokenHash) -> Result<Option<StoredSession>, StoreError>;
    /// The session whose watch token hashes to `watch`.
    fn get_by_watch(&self, watch: &TokenHash) -> Result<Option<StoredSession>, StoreError>;
    /// Claims a stored session for this process (a resume or a watcher starting it): returned
    /// with an epoch above every earlier owner's, so their later writes are refused. `None` when
    /// no session matches. One machine needs no more than a raised number (its live map already
    /// keeps one task per session); a cluster store records the claim.
    fn claim(&self, key: Lookup<'_>) -> Result<Option<StoredSession>, StoreError> {
        let found = match key {
            Lookup::Token(t) => self.get(t)?,
            Lookup::Watch(w) => self.get_by_watch(w)?,
        };
        Ok(found.map(|mut s| {
            s.epoch += 1;
            s
        }))
    }
    /// Forgets a session, unless an owner with a newer epoch than `epoch` has it now.
    fn remove(&self, token: &TokenHash, epoch: u64) -> Result<(), StoreError>;
    /// Forgets entries written before `cutoff_ms`, and the oldest beyond `keep` entries among
    /// those not in `live` (sessions attached right now); returns how many were forgotten.
    fn expire(
        &self,
        cutoff_ms: u64,
        keep: usize,
        live: &dyn Fn(&str) -> bool,
    ) -> Result<usize, StoreError>;
    /// How often a live session must write itself again even when nothing changed: a store whose
    /// entries expire by themselves (Redis, TTL = the resume window) would otherwise forget a
    /// session paused for longer than that. `None`: entries stay until removed or expired here.
    fn refresh_every(&self) -> Option<std::time::Duration> {
        None
    }
    /// Changes when the store may have lost what it had (Redis came back, possibly empty): live
    /// sessions then write themselves again.
    fn generation(&self) -> u64 {
        0
    }
    /// Stored sessions (ids only; a store shared by a cluster lists its newest 100). Answered
    /// from memory (`/api/status` calls it from async code): a store that lives elsewhere
    /// refreshes its copy in [`SessionStore::expire`].
    fn list(&self) -> Vec<StoredRow>;
    /// How many sessions are stored in all.
    fn stored_count(&self) -> usize {
        self.list().len()
    }
}
