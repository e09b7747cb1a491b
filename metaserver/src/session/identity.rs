//! Who a session is and who is connecting to it: the session's identity (its id and the hashes of
//! its secrets), an owner's connection, and what the store gave back of a session.

use crate::client::{Client, Incoming};
use crate::clock::now_ms;
use crate::tokens::{watch_token_for, TokenHash};
use crate::validate::InferenceRequest;
use ipc_proto::browser::EpisodeSummary;
use ipc_proto::inference::SessionSnapshot;
use tokio::sync::mpsc;

use super::store::StoredSession;

/// Who a session is: its id, the hashes of its two secrets, its seed and its epoch in the store.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub token_hash: TokenHash,
    pub watch_hash: TokenHash,
    pub seed: u64,
    pub epoch: u64,
}

impl Identity {
    /// A new session's identity, for the resume token just made for it.
    pub fn fresh(token: &str) -> Identity {
        Identity {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: TokenHash::of(token),
            watch_hash: TokenHash::of(&watch_token_for(token)),
            seed: rand::random(),
            epoch: 1,
        }
    }

    /// The identity of a stored session claimed by this process (its epoch raised already).
    pub fn of_stored(s: &StoredSession) -> Identity {
        Identity {
            id: s.id.clone(),
            token_hash: s.token.clone(),
            watch_hash: s.watch.clone(),
            seed: s.seed,
            epoch: s.epoch,
        }
    }
}

/// The commands of an owner's connection.
pub type OwnerCommands = mpsc::Receiver<Incoming<InferenceRequest>>;

/// A browser that presented (or was just given) a session's resume token.
pub struct OwnerConn {
    pub client: Client,
    pub commands: OwnerCommands,
    /// The token itself, for this connection's `connected` (never stored).
    pub token: String,
    /// It came back to an existing session.
    pub resumed: bool,
    /// It presented a token that led nowhere (and got a fresh session).
    pub resume_error: bool,
    /// The epoch this connection's claim raised the stored session to (a resume from the
    /// store): a live task it joins adopts it, so of two concurrent resumes the task keeps the
    /// newest claim and its writes are never refused.
    pub claimed: Option<u64>,
}

/// What the store gave back of a session besides its identity.
pub struct Restored {
    pub snapshot: Option<SessionSnapshot>,
    pub recent: Vec<EpisodeSummary>,
    /// For a session started for its watchers: how long ago its owner left (its copy was
    /// written), so the session ends when the owner's resume window does.
    pub owner_left_ms_ago: Option<u64>,
}

impl Restored {
    pub fn fresh() -> Restored {
        Restored {
            snapshot: None,
            recent: Vec::new(),
            owner_left_ms_ago: None,
        }
    }

    pub fn from_stored(s: &StoredSession, for_watchers: bool) -> Restored {
        Restored {
            snapshot: s.snapshot.clone(),
            recent: s.recent.clone(),
            owner_left_ms_ago: for_watchers.then(|| now_ms().saturating_sub(s.saved_at_ms)),
        }
    }
}
