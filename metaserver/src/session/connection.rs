//! One `/ws` connection: how it finds its session — fresh, resumed with its token (live here, or
//! claimed back from the store), or watched read-only — and, for a watcher, its read loop.
//!
//! Only the resume token claims a session. A watch link looks the session up and follows it: here,
//! or on another cluster node through `cluster/watch.rs`.

use super::identity::{Identity, OwnerConn, Restored};
use super::lookup::{lookup_stored, lookup_watched, refuse_unavailable, StoreLookup};
use super::registry::{too_many_probes, Attach, Claim, ProbeAsk, SessionAsk, Watching};
use super::sessions::Sessions;
use super::store::StoredSession;
use super::task::SessionTask;
use crate::client::{self, close, Client, Incoming};
use crate::tokens::{new_token, plausible_token, TokenHash};
use crate::validate::{self, InferenceRequest};
use axum::extract::ws::WebSocket;
use futures_util::stream::SplitStream;
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::inference::SessionCommand;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where a `/ws` connection wants to go (its query string).
#[derive(Debug, Default, serde::Deserialize)]
pub struct WsQuery {
    pub resume: Option<String>,
    pub watch: Option<String>,
    /// A watch token: a new session of one's own from where that session is (`fork.rs`).
    pub fork: Option<String>,
}

/// One `/ws` connection: an owner (fresh or resuming) or a watcher. Returns when the browser has
/// gone; the session itself lives in its own task.
pub async fn run(socket: WebSocket, sessions: Arc<Sessions>, query: WsQuery) {
    let cfg = &sessions.cfg;
    let (client, stream) = client::start(socket, cfg.client_queue, None, sessions.metrics.clone());
    if let Some(token) = query.watch {
        return watch(stream, client, sessions, &token).await;
    }
    let (tx, rx) = mpsc::channel(32);
    let rate = sessions.cfg.client_rate;
    let parse = command_parser(&sessions);
    match query.fork {
        Some(watched) => {
            let forked = super::fork::open_fork(&sessions, client.clone(), rx, &watched).await;
            if let Some((ident, restored, conn)) = forked {
                start_or_join(&sessions, ident, restored, Attach::Owner(conn));
            }
        }
        None => open_owner(&sessions, client.clone(), rx, query.resume).await,
    }
    client::read_loop(stream, client, rate, tx, parse).await;
}

/// Validates an inference command; model names are checked against the models catalog.
fn command_parser(
    sessions: &Sessions,
) -> impl Fn(&str) -> Result<InferenceRequest, validate::Rejection> + Send + 'static {
    let models = sessions.models.clone();
    move |t| validate::parse_inference(t, |name| models.lookup(name))
}

/// A read-only watcher's connection: commands get `read_only`, except `status` and `probe`
/// (which change nothing).
async fn watch(
    stream: SplitStream<WebSocket>,
    client: Client,
    sessions: Arc<Sessions>,
    watch_token: &str,
) {
    let Some(watching) = open_watcher(&sessions, client.clone(), watch_token).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(8);
    let rate = sessions.cfg.client_rate;
    let parse = command_parser(&sessions);
    let reader = tokio::spawn(client::read_loop(stream, client.clone(), rate, tx, parse));
    while let Some(Incoming::Valid(req)) = rx.recv().await {
        let answer = match req {
            InferenceRequest::Command(SessionCommand::Status) => {
                watcher_status(&sessions, &watching.id)
            }
            InferenceRequest::Probe(probe) => {
                let ask = SessionAsk::Probe(ProbeAsk {
                    client: client.clone(),
                    probe,
                });
                match watching.asks.as_ref().map(|p| p.try_send(ask)) {
                    Some(Ok(())) => continue,
                    Some(Err(_)) => too_many_probes(),
                    None => ServerMessage::error(
                        ErrorCode::ReadOnly,
                        "\"what if\" needs the server that runs this session; open the link again later",
                    ),
                }
            }
            InferenceRequest::Command(_) => ServerMessage::error(
                ErrorCode::ReadOnly,
                "this is a read-only view of someone else's session",
            ),
        };
        client.send(&answer);
    }
    let _ = reader.await;
}

/// A watcher's `status`: the watched session as the status table has it (or, for a session that
/// runs on another node, as last seen here).
fn watcher_status(sessions: &Sessions, id: &str) -> ServerMessage {
    let remote = sessions.watch_relay.as_ref().and_then(|r| r.status(id));
    match remote.or_else(|| sessions.live.row_by_id(id).map(|r| r.status())) {
        Some(st) => ServerMessage::SessionStatus(st),
        None => ServerMessage::error(ErrorCode::UnknownWatchLink, "the watched session has ended"),
    }
}

/// Starts a session task for `ident` unless one is live already; either way `first` reaches it.
/// Returns how a watcher reaches the session; `None` (after telling the browser) when it cannot.
fn start_or_join(
    sessions: &Arc<Sessions>,
    ident: Identity,
    restored: Restored,
    first: Attach,
) -> Option<Watching> {
    match sessions.live.start_or_join(&ident, first) {
        Claim::Joined(watching) => Some(watching),
        Claim::Busy(a) => {
            let client = a.into_client();
            let why = "too many connections are joining this session at once; try again";
            client.try_again_later(ErrorCode::RateLimited, why, "session busy");
            None
        }
        Claim::Full(a) => {
            sessions.refuse_full(&a.into_client());
            None
        }
        Claim::Start {
            watching,
            inbox,
            permit,
            first,
        } => {
            let task = SessionTask::new(sessions.clone(), ident, restored, inbox, permit);
            let again = sessions.clone();
            sessions.tasks.spawn(async move {
                let pending = task.run(first).await;
                redispatch(&again, pending);
            });
            Some(watching)
        }
    }
}

/// A browser on `/ws`: with a resume token that leads back, its session; otherwise a fresh one
/// (`resume_error` says why when a token was presented).
pub async fn open_owner(
    sessions: &Arc<Sessions>,
    client: Client,
    commands: super::identity::OwnerCommands,
    presented: Option<String>,
) {
    let mut conn = OwnerConn {
        client,
        commands,
        token: String::new(),
        resumed: false,
        resume_error: presented.is_some(),
        claimed: None,
    };
    if let Some(token) = presented.filter(|t| plausible_token(t)) {
        conn = match resume(sessions, conn, token).await {
            Some(not_found) => not_found,
            None => return,
        };
    }
    let token = new_token();
    let ident = Identity::fresh(&token);
    conn.token = token;
    sessions.metrics.sessions_started.fetch_add(1, Relaxed);
    start_or_join(sessions, ident, Restored::fresh(), Attach::Owner(conn));
}

/// The owner's way back to its session, live here or in the store; the connection is given back
/// (marked `resume_error`) when the token leads nowhere.
async fn resume(sessions: &Arc<Sessions>, mut conn: OwnerConn, token: String) -> Option<OwnerConn> {
    let hash = TokenHash::of(&token);
    conn.token = token;
    conn.resumed = true;
    conn.resume_error = false;
    conn = match dispatch_live(sessions, &hash, Attach::Owner(conn)).await {
        None => return None,
        Some(Attach::Owner(back)) => back,
        Some(Attach::Watcher(_)) => unreachable!("an owner was dispatched"),
    };
    match lookup_stored(sessions, false, hash).await {
        StoreLookup::Session(s) => {
            sessions.metrics.sessions_resumed.fetch_add(1, Relaxed);
            let restored = Restored::from_stored(&s, false);
            conn.claimed = Some(s.epoch);
            start_or_join(
                sessions,
                Identity::of_stored(&s),
                restored,
                Attach::Owner(conn),
            );
            return None;
        }
        StoreLookup::Unavailable => {
            refuse_unavailable(&conn.client);
            return None;
        }
        StoreLookup::Nothing => {}
    }
    conn.resumed = false;
    conn.resume_error = true;
    Some(conn)
}

/// Hands `a` to the live session of `token`; gives it back if there is none (or it just ended).
async fn dispatch_live(sessions: &Sessions, token: &TokenHash, a: Attach) -> Option<Attach> {
    let Some(tx) = sessions.live.sender(token) else {
        return Some(a);
    };
    if let Attach::Owner(_) = a {
        sessions.metrics.sessions_resumed.fetch_add(1, Relaxed);
    }
    tx.send(a).await.err().map(|e| e.0)
}

/// A browser on `/ws?watch=…`: joins the session read-only; how it reaches the session. `None`
/// (after telling the browser) when the link leads nowhere.
pub async fn open_watcher(
    sessions: &Arc<Sessions>,
    client: Client,
    watch_token: &str,
) -> Option<Watching> {
    // Watchers have a cap of their own, whatever they watch (--max-watchers-total).
    let watchers = sessions.metrics.watchers.load(Relaxed).max(0) as usize;
    if watchers >= sessions.cfg.max_watchers_total {
        let most = sessions.cfg.max_watchers_total;
        let why =
            format!("this server already has {most} watchers, the most it allows; try again later");
        client.try_again_later(ErrorCode::TooManyWatchers, why, "too many watchers");
        return None;
    }
    if plausible_token(watch_token) {
        let hash = TokenHash::of(watch_token);
        if let Some((watching, tx)) = sessions.live.sender_by_watch(&hash) {
            return match tx.send(Attach::Watcher(client)).await {
                Ok(()) => Some(watching),
                // It ended a moment ago: look again (its copy is in the store now).
                Err(e) => Box::pin(open_watcher(sessions, e.0.into_client(), watch_token)).await,
            };
        }
        match lookup_watched(sessions, hash).await {
            StoreLookup::Session(s) => return watch_stored(sessions, client, *s),
            StoreLookup::Unavailable => {
                refuse_unavailable(&client);
                return None;
            }
            StoreLookup::Nothing => {}
        }
    }
    client.send(&ServerMessage::error(
        ErrorCode::UnknownWatchLink,
        "this watch link leads to no session (it has ended or expired)",
    ));
    client.close(close::POLICY, "unknown watch link");
    None
}

/// A watcher of a session that is not live here. On one machine its task starts (for its
/// watchers, until the owner's resume window ends); in a cluster a watcher never starts the
/// session: it follows it through the store wherever it runs (or, if nowhere, as it was left).
fn watch_stored(sessions: &Arc<Sessions>, client: Client, s: StoredSession) -> Option<Watching> {
    let Some(relay) = &sessions.watch_relay else {
        let restored = Restored::from_stored(&s, true);
        let ident = Identity::of_stored(&s);
        return start_or_join(sessions, ident, restored, Attach::Watcher(client));
    };
    let base = super::watcher_view::WatcherView::of(&s, &sessions.models, sessions.cfg.max_steps);
    Some(relay.add_watcher(client, &s.id, base))
}

/// Connections that reached a session as it ended go round again.
pub fn redispatch(sessions: &Arc<Sessions>, pending: Vec<Attach>) {
    for a in pending {
        let sessions = sessions.clone();
        tokio::spawn(async move {
            match a {
                Attach::Owner(o) => {
                    let token = Some(o.token.clone());
                    open_owner(&sessions, o.client, o.commands, token).await
                }
                Attach::Watcher(c) => {
                    // The watcher's link is not known here: it opens it again and finds the
                    // session's freshly stored copy.
                    let why = "the session was just put away; open the link again";
                    c.try_again_later(ErrorCode::UnknownWatchLink, why, "session moved");
                }
            }
        });
    }
}
