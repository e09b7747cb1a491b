//! Finding a session in the store: by its resume token (and claiming it) or, read only, by its
//! watch token — what a resume, a watcher and a fork ask of the store.

use super::sessions::Sessions;
use super::store::{Lookup, SessionStore, StoreError, StoredSession};
use crate::client::Client;
use crate::tokens::TokenHash;
use ipc_proto::browser::ErrorCode;
use std::time::Duration;
use tracing::warn;

/// What a lookup in the store found.
pub enum StoreLookup {
    Session(Box<StoredSession>),
    Nothing,
    /// The store cannot answer now (a cluster's Redis is down): the session may well exist.
    Unavailable,
}

/// The stored session `hash` names: claimed for this process (its epoch raised) by its resume
/// token's hash; only read, never claimed, by its watch token's hash (cluster.md: only the
/// owner's token claims a session).
pub async fn lookup_stored(sessions: &Sessions, watch: bool, hash: TokenHash) -> StoreLookup {
    let store = sessions.store.clone();
    let find = move |s: &dyn SessionStore| {
        if watch {
            s.get_by_watch(&hash)
        } else {
            s.claim(Lookup::Token(&hash))
        }
    };
    match tokio::task::spawn_blocking(move || find(store.as_ref())).await {
        Ok(Ok(Some(s))) => StoreLookup::Session(Box::new(s)),
        Ok(Ok(None)) => StoreLookup::Nothing,
        Ok(Err(StoreError::Unavailable(e))) => {
            warn!(error = %e, "session store unavailable for a resume");
            StoreLookup::Unavailable
        }
        Ok(Err(e)) => {
            warn!(error = %e, "session store lookup failed");
            StoreLookup::Nothing
        }
        Err(_) => StoreLookup::Nothing,
    }
}

/// The store is down: the browser keeps its token and tries again later (nothing is lost by
/// handing it a fresh session instead).
pub fn refuse_unavailable(client: &Client) {
    let why = "sessions cannot be resumed right now (the session store is unreachable); retrying";
    client.try_again_later(
        ErrorCode::StoreUnavailable,
        why,
        "session store unavailable",
    );
}

/// The stored session a watch link names. In a cluster a session started a moment ago on another
/// node reaches Redis with its first write (within one flush interval): a link opened that soon
/// is looked up again.
pub async fn lookup_watched(sessions: &Sessions, hash: TokenHash) -> StoreLookup {
    let tries = if sessions.in_cluster() { 4 } else { 1 };
    let pause = Duration::from_millis(sessions.cfg.snapshot_flush_ms.max(50));
    let mut found = StoreLookup::Nothing;
    for i in 0..tries {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        found = lookup_stored(sessions, true, hash.clone()).await;
        if !matches!(found, StoreLookup::Nothing) {
            break;
        }
    }
    found
}
