//! `/ws?fork=WATCH_TOKEN` (rooms.md, "Fork"): a new session of one's own that starts where the
//! watched session is — the same world, episode, step, model and teaching settings, paused — so a
//! student can take over from the teacher's projector and try something. The original is only
//! read: nothing the fork does reaches it.
//!
//! Where the state comes from: a session live on this server is asked for the snapshot of the
//! frame it last sent (the one its watchers see); otherwise — on another cluster node, or put away
//! — its copy in the store (written at most `--snapshot-flush-ms` after it changed).

use super::identity::{Identity, OwnerCommands, OwnerConn, Restored};
use super::lookup::{lookup_watched, refuse_unavailable, StoreLookup};
use super::registry::SessionAsk;
use super::sessions::Sessions;
use crate::client::{close, Client};
use crate::tokens::{new_token, plausible_token, TokenHash};
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::inference::SessionSnapshot;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a live session's task may take to hand over its snapshot before the store's copy is
/// used instead (a task busy replacing its worker answers after that).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the watch token led to.
enum Watched {
    /// The session's state (`None`: it has not made its first step yet).
    Found(Option<SessionSnapshot>),
    /// The store cannot answer now; the browser was told.
    Unavailable,
    Nothing,
}

/// A browser on `/ws?fork=…`: who its own new session is, what it starts from (the watched
/// one's state) and its connection, for the caller to start; `None` (after an
/// `unknown_watch_link` error and close 1008, as for a watch link) when the link leads nowhere.
pub async fn open_fork(
    sessions: &Arc<Sessions>,
    client: Client,
    commands: OwnerCommands,
    watch_token: &str,
) -> Option<(Identity, Restored, OwnerConn)> {
    let snapshot = match watched(sessions, watch_token).await {
        Watched::Found(s) => s,
        Watched::Unavailable => {
            refuse_unavailable(&client);
            return None;
        }
        Watched::Nothing => {
            client.send(&ServerMessage::error(
                ErrorCode::UnknownWatchLink,
                "this link leads to no session to start from (it has ended or expired)",
            ));
            client.close(close::POLICY, "unknown watch link");
            return None;
        }
    };
    let token = new_token();
    let ident = Identity::fresh(&token);
    let restored = Restored {
        snapshot: snapshot.map(|s| forked(s, &ident.id)),
        recent: Vec::new(),
        owner_left_ms_ago: None,
    };
    let conn = OwnerConn {
        client,
        commands,
        token,
        resumed: false,
        resume_error: false,
        claimed: None,
    };
    sessions.metrics.sessions_started.fetch_add(1, Relaxed);
    Some((ident, restored, conn))
}

/// The watched session's state, from its live task or from the store.
async fn watched(sessions: &Sessions, watch_token: &str) -> Watched {
    if !plausible_token(watch_token) {
        return Watched::Nothing;
    }
    let hash = TokenHash::of(watch_token);
    if let Some(asks) = sessions
        .live
        .sender_by_watch(&hash)
        .and_then(|(watching, _)| watching.asks)
    {
        let (tx, rx) = oneshot::channel();
        if asks.try_send(SessionAsk::Snapshot(tx)).is_ok() {
            if let Ok(Ok(s)) = tokio::time::timeout(ASK_TIMEOUT, rx).await {
                return Watched::Found(s);
            }
        }
    }
    match lookup_watched(sessions, hash).await {
        StoreLookup::Session(s) => Watched::Found(s.snapshot),
        StoreLookup::Unavailable => Watched::Unavailable,
        StoreLookup::Nothing => Watched::Nothing,
    }
}

/// The watched state as the fork's own: its id, paused, and no commands of the original's counted
/// as applied (the fork numbers its commands from 1).
fn forked(mut s: SessionSnapshot, id: &str) -> SessionSnapshot {
    s.session_id = id.to_owned();
    s.playing = false;
    s.commands_applied = 0;
    s
}
