//! Which sessions are live in this process, and how a `/ws` connection finds its session: fresh,
//! resumed with its token (live here, or back from the [`SessionStore`]), or watched read-only.
//!
//! **Architecture Invariant: one live task per session.** A session is started from the store only
//! while holding the live map's lock after checking it is not live already, and a session task
//! leaves the map before it ends — handing any connection that reached it meanwhile back through
//! [`open_owner`] / [`open_watcher`], which then find its freshly flushed copy in the store.

use crate::app::App;
use crate::client::{close, Client, Incoming};
use crate::store::{
    new_token, now_ms, plausible_token, Lookup, SessionStore, StoreError, StoredSession, TokenHash,
};
use crate::validate::InferenceRequest;
use ipc_proto::browser::{EpisodeSummary, ErrorCode, ServerMessage};
use ipc_proto::inference::Probe;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

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

/// A connection joining a live session.
pub enum Attach {
    /// The owner's browser (a present owner is taken over: close 4001).
    Owner(OwnerConn),
    /// A read-only watcher.
    Watcher(Client),
}

impl Attach {
    /// The browser behind this attachment.
    pub fn into_client(self) -> Client {
        match self {
            Attach::Owner(o) => o.client,
            Attach::Watcher(c) => c,
        }
    }
}

/// A `probe` from one of a session's connections (owner or watcher), answered to it alone.
pub struct ProbeAsk {
    pub client: Client,
    pub probe: Probe,
}

/// How a watcher reaches the session it watches: its id, and where its probes go (`None`: the
/// session runs on another node, where a probe cannot reach from here).
pub struct Watching {
    pub id: String,
    pub probes: Option<mpsc::Sender<ProbeAsk>>,
}

/// A session's task's inboxes: connections that join it, and probes from its watchers.
pub struct Inbox {
    pub attach: mpsc::Receiver<Attach>,
    pub probes: mpsc::Receiver<ProbeAsk>,
}

/// What the store gave back of a session besides its identity.
pub struct Restored {
    pub snapshot: Option<ipc_proto::inference::SessionSnapshot>,
    pub recent: Vec<EpisodeSummary>,
    /// For a session started for its watchers: how long ago its owner left (its copy was
    /// written), so the session ends when the owner's resume window does.
    pub owner_left_ms_ago: Option<u64>,
}

impl Restored {
    fn fresh() -> Restored {
        Restored {
            snapshot: None,
            recent: Vec::new(),
            owner_left_ms_ago: None,
        }
    }

    fn from_stored(s: &StoredSession, for_watchers: bool) -> Restored {
        Restored {
            snapshot: s.snapshot.clone(),
            recent: s.recent.clone(),
            owner_left_ms_ago: for_watchers.then(|| now_ms().saturating_sub(s.saved_at_ms)),
        }
    }
}

/// Who a session is: its id, the hashes of its two secrets, its seed and its epoch in the store.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub token: TokenHash,
    pub watch: TokenHash,
    pub seed: u64,
    pub epoch: u64,
}

/// The watch token belonging to a resume token: derived, so a resuming owner can be given its
/// share link again although the server keeps neither secret (only their hashes). One-way: the
/// watch token reveals nothing about the resume token.
pub fn watch_token_for(token: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("hamlet-watch:{token}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

impl Identity {
    fn fresh(token: &str) -> Identity {
        Identity {
            id: uuid::Uuid::new_v4().to_string(),
            token: TokenHash::of(token),
            watch: TokenHash::of(&watch_token_for(token)),
            seed: rand::random(),
            epoch: 1,
        }
    }

    /// The identity of a stored session taken by this process ([`SessionStore::take`] has
    /// raised its epoch already).
    fn taken_from(s: &StoredSession) -> Identity {
        Identity {
            id: s.id.clone(),
            token: s.token.clone(),
            watch: s.watch.clone(),
            seed: s.seed,
            epoch: s.epoch,
        }
    }
}

struct LiveSession {
    id: String,
    watch: TokenHash,
    attach: mpsc::Sender<Attach>,
    probes: mpsc::Sender<ProbeAsk>,
}

/// The sessions with a task in this process, by the hash of their resume token.
#[derive(Default)]
pub struct LiveSessions {
    by_token: Mutex<HashMap<TokenHash, LiveSession>>,
}

impl LiveSessions {
    fn sender(&self, token: &TokenHash) -> Option<mpsc::Sender<Attach>> {
        self.by_token.lock().get(token).map(|l| l.attach.clone())
    }

    fn sender_by_watch(&self, watch: &TokenHash) -> Option<(Watching, mpsc::Sender<Attach>)> {
        self.by_token
            .lock()
            .values()
            .find(|l| l.watch.matches(watch))
            .map(|l| (l.watching(), l.attach.clone()))
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.by_token.lock().values().any(|l| l.id == id)
    }

    pub fn len(&self) -> usize {
        self.by_token.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a session that is ending; what still waits in its attach queue is returned, to be
    /// dispatched again (to the store copy it has just flushed).
    pub fn leave(&self, token: &TokenHash, pending: &mut mpsc::Receiver<Attach>) -> Vec<Attach> {
        let mut map = self.by_token.lock();
        map.remove(token);
        // Under the lock: no sender can be found any more, so nothing arrives after this.
        pending.close();
        let mut left = Vec::new();
        while let Ok(a) = pending.try_recv() {
            left.push(a);
        }
        left
    }
}

impl LiveSession {
    fn watching(&self) -> Watching {
        Watching {
            id: self.id.clone(),
            probes: Some(self.probes.clone()),
        }
    }
}

/// How many connections may wait in a session's attach queue.
const ATTACH_QUEUE: usize = 16;
/// Watchers' probes waiting for a session's task.
const PROBE_QUEUE: usize = 32;

/// Starts a session task for `ident` unless one is live already; either way `first` reaches it.
/// Returns how a watcher reaches the session; `None` (after telling the browser) when a new task
/// would exceed `--max-sessions` worker processes.
fn start_or_join(
    app: &Arc<App>,
    ident: Identity,
    restored: Restored,
    first: Attach,
) -> Option<Watching> {
    let mut map = app.live.by_token.lock();
    if let Some(l) = map.get(&ident.token) {
        // Another connection started it a moment ago (a duplicated tab, a double reconnect):
        // it joins that task, bringing its claim's epoch along (see `OwnerConn::claimed`).
        let watching = l.watching();
        if let Err(e) = l.attach.try_send(first) {
            refuse_busy(e.into_inner());
        }
        return Some(watching);
    }
    // Every worker process counts against --max-sessions, whoever's connection started it.
    let Ok(permit) = app.session_permits.clone().try_acquire_owned() else {
        drop(map);
        crate::session::refuse_full(app, &first.into_client());
        return None;
    };
    let (attach_tx, attach) = mpsc::channel(ATTACH_QUEUE);
    let (probe_tx, probes) = mpsc::channel(PROBE_QUEUE);
    let live = LiveSession {
        id: ident.id.clone(),
        watch: ident.watch.clone(),
        attach: attach_tx,
        probes: probe_tx,
    };
    let watching = live.watching();
    map.insert(ident.token.clone(), live);
    drop(map);
    let inbox = Inbox { attach, probes };
    let task = crate::session::SessionTask::new(app.clone(), ident, restored, inbox, permit);
    app.tasks.spawn(task.run(first));
    Some(watching)
}

fn refuse_busy(a: Attach) {
    let client = a.into_client();
    client.send(&ServerMessage::error(
        ErrorCode::RateLimited,
        "too many connections are joining this session at once; try again",
    ));
    client.close(close::TRY_AGAIN_LATER, "session busy");
}

/// What a lookup in the store found.
enum Found {
    Session(Box<StoredSession>),
    Nothing,
    /// The store cannot answer now (a cluster's Redis is down): the session may well exist.
    Unavailable,
}

/// The stored session `hash` names: taken for this process (its epoch raised) by its resume
/// token's hash; only read, never claimed, by its watch token's hash (cluster.md: only the
/// owner's token claims a session).
async fn take_stored(app: &Arc<App>, watch: bool, hash: TokenHash) -> Found {
    let store = app.store.clone();
    let take = move |s: &dyn SessionStore| {
        if watch {
            s.get_by_watch(&hash)
        } else {
            s.take(Lookup::Token(&hash))
        }
    };
    match tokio::task::spawn_blocking(move || take(store.as_ref())).await {
        Ok(Ok(Some(s))) => Found::Session(Box::new(s)),
        Ok(Ok(None)) => Found::Nothing,
        Ok(Err(StoreError::Unavailable(e))) => {
            warn!(error = %e, "session store unavailable for a resume");
            Found::Unavailable
        }
        Ok(Err(e)) => {
            warn!(error = %e, "session store lookup failed");
            Found::Nothing
        }
        Err(_) => Found::Nothing,
    }
}

/// The store is down: the browser keeps its token and tries again later (nothing is lost by
/// handing it a fresh session instead).
fn refuse_unavailable(client: &Client) {
    client.send(&ServerMessage::error(
        ErrorCode::StoreUnavailable,
        "sessions cannot be resumed right now (the session store is unreachable); retrying",
    ));
    client.close(close::TRY_AGAIN_LATER, "session store unavailable");
}

/// A browser on `/ws`: with a resume token that leads back, its session; otherwise a fresh one
/// (`resume_error` says why when a token was presented).
pub async fn open_owner(
    app: &Arc<App>,
    client: Client,
    commands: OwnerCommands,
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
        let hash = TokenHash::of(&token);
        conn.token = token;
        conn.resumed = true;
        conn.resume_error = false;
        match dispatch_live(app, &hash, Attach::Owner(conn)).await {
            None => return,
            Some(Attach::Owner(back)) => conn = back,
            Some(Attach::Watcher(_)) => unreachable!("an owner was dispatched"),
        }
        match take_stored(app, false, hash).await {
            Found::Session(s) => {
                app.metrics.sessions_resumed.fetch_add(1, Relaxed);
                let restored = Restored::from_stored(&s, false);
                conn.claimed = Some(s.epoch);
                start_or_join(app, Identity::taken_from(&s), restored, Attach::Owner(conn));
                return;
            }
            Found::Unavailable => return refuse_unavailable(&conn.client),
            Found::Nothing => {}
        }
        conn.resumed = false;
        conn.resume_error = true;
    }
    let token = new_token();
    let ident = Identity::fresh(&token);
    conn.token = token;
    app.metrics.sessions_started.fetch_add(1, Relaxed);
    start_or_join(app, ident, Restored::fresh(), Attach::Owner(conn));
}

/// The commands of an owner's connection.
pub type OwnerCommands = mpsc::Receiver<Incoming<InferenceRequest>>;

/// Hands `a` to the live session of `token`; gives it back if there is none (or it just ended).
async fn dispatch_live(app: &Arc<App>, token: &TokenHash, a: Attach) -> Option<Attach> {
    let Some(tx) = app.live.sender(token) else {
        return Some(a);
    };
    if let Attach::Owner(_) = a {
        app.metrics.sessions_resumed.fetch_add(1, Relaxed);
    }
    tx.send(a).await.err().map(|e| e.0)
}

/// A browser on `/ws?watch=…`: joins the session read-only; how it reaches the session. `None`
/// (after telling the browser) when the link leads nowhere.
pub async fn open_watcher(app: &Arc<App>, client: Client, watch_token: &str) -> Option<Watching> {
    // Watchers have a cap of their own, whatever they watch (--max-watchers-total).
    let watchers = app.metrics.watchers.load(Relaxed).max(0) as usize;
    if watchers >= app.cfg.max_watchers_total {
        client.send(&ServerMessage::error(
            ErrorCode::TooManyWatchers,
            format!(
                "this server already has {} watchers, the most it allows; try again later",
                app.cfg.max_watchers_total
            ),
        ));
        client.close(close::TRY_AGAIN_LATER, "too many watchers");
        return None;
    }
    if plausible_token(watch_token) {
        let hash = TokenHash::of(watch_token);
        if let Some((watching, tx)) = app.live.sender_by_watch(&hash) {
            match tx.send(Attach::Watcher(client)).await {
                Ok(()) => return Some(watching),
                Err(e) => {
                    let Attach::Watcher(c) = e.0 else {
                        unreachable!("a watcher was sent")
                    };
                    return Box::pin(open_watcher(app, c, watch_token)).await;
                }
            }
        }
        // In a cluster a session started a moment ago on another node reaches Redis with its
        // first write (within one flush interval): a link opened that soon is looked up again.
        let tries = if app.cluster.is_some() { 4 } else { 1 };
        let mut found = Found::Nothing;
        for i in 0..tries {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    app.cfg.snapshot_flush_ms.max(50),
                ))
                .await;
            }
            found = take_stored(app, true, hash.clone()).await;
            if !matches!(found, Found::Nothing) {
                break;
            }
        }
        match found {
            Found::Session(s) => {
                if app.cluster.is_some() {
                    // In a cluster a watcher never starts the session: it watches it through
                    // the store wherever it runs (or, if nowhere, as it was left).
                    return crate::cluster::watch::watch_remote(app, client, *s).await;
                }
                let restored = Restored::from_stored(&s, true);
                let ident = Identity::taken_from(&s);
                return start_or_join(app, ident, restored, Attach::Watcher(client));
            }
            Found::Unavailable => {
                refuse_unavailable(&client);
                return None;
            }
            Found::Nothing => {}
        }
    }
    client.send(&ServerMessage::error(
        ErrorCode::UnknownWatchLink,
        "this watch link leads to no session (it has ended or expired)",
    ));
    client.close(close::POLICY, "unknown watch link");
    None
}

/// Connections that reached a session as it ended go round again.
pub fn redispatch(app: &Arc<App>, pending: Vec<Attach>) {
    for a in pending {
        let app = app.clone();
        tokio::spawn(async move {
            match a {
                Attach::Owner(o) => {
                    let token = Some(o.token.clone());
                    open_owner(&app, o.client, o.commands, token).await
                }
                Attach::Watcher(c) => {
                    // The watcher's link is not known here; it was valid a moment ago, so the
                    // session's stored copy is found by the id's watch hash on its next attempt.
                    c.send(&ServerMessage::error(
                        ErrorCode::UnknownWatchLink,
                        "the session was just put away; open the link again",
                    ));
                    c.close(close::TRY_AGAIN_LATER, "session moved");
                }
            }
        });
    }
}
