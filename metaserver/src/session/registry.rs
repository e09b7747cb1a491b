//! The one registry of the sessions live in this process: by the hash of their resume token, each
//! with its row for `/api/status` and the queues that reach its task. It owns the claim rule.
//!
//! **Architecture Invariant: one live task per session.** A session task is started only by
//! [`LiveSessions::start_or_join`], under the registry's lock and after checking the session is not
//! live already; a task leaves the registry ([`LiveSessions::leave`]) before it ends, handing back
//! the connections that reached it meanwhile.

use crate::client::Client;
use crate::tokens::TokenHash;
use ipc_proto::browser::SessionStatus;
use ipc_proto::inference::{Probe, SessionSnapshot};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::identity::{Identity, OwnerConn};

/// A row of `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub model: Option<String>,
    pub episode: u32,
    pub step: u32,
    pub playing: bool,
    pub speed: f64,
    pub worker_id: Option<String>,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub connected_at: u64,
    /// The owner's browser is connected.
    pub attached: bool,
    pub watchers: usize,
    /// For watchers' `status`.
    #[serde(skip)]
    pub cumulative_reward: f64,
    #[serde(skip)]
    pub max_steps: u32,
}

impl SessionInfo {
    fn new(id: &str, max_steps: u32) -> SessionInfo {
        SessionInfo {
            id: id.to_owned(),
            model: None,
            episode: 0,
            step: 0,
            playing: false,
            speed: 1.0,
            worker_id: None,
            worker_pid: None,
            restarts: 0,
            connected_at: crate::clock::now_secs(),
            attached: false,
            watchers: 0,
            cumulative_reward: 0.0,
            max_steps,
        }
    }

    /// The row as a watcher's `status` answer.
    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            session_id: self.id.clone(),
            model: self.model.clone(),
            playing: self.playing,
            speed: self.speed,
            max_steps: self.max_steps,
            episode: self.episode,
            step: self.step,
            cumulative_reward: self.cumulative_reward,
        }
    }
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

/// What a session's other connections ask of its task.
pub enum SessionAsk {
    /// A watcher's `probe`, answered to it alone.
    Probe(ProbeAsk),
    /// A fork (`/ws?fork=`): the session's snapshot as it is now (`None` before its first step).
    Snapshot(oneshot::Sender<Option<SessionSnapshot>>),
}

/// The answer to a probe that cannot be queued.
pub fn too_many_probes() -> ipc_proto::browser::ServerMessage {
    ipc_proto::browser::ServerMessage::error(
        ipc_proto::browser::ErrorCode::RateLimited,
        "too many probes of this session at once; try again",
    )
}

/// How a watcher reaches the session it watches: its id, and where its asks go (`None`: the
/// session runs on another node, where a probe cannot reach from here).
pub struct Watching {
    pub id: String,
    pub asks: Option<mpsc::Sender<SessionAsk>>,
}

/// A session's task's inboxes: connections that join it, and what others ask of it.
pub struct Inbox {
    pub attach: mpsc::Receiver<Attach>,
    pub asks: mpsc::Receiver<SessionAsk>,
}

/// What [`LiveSessions::start_or_join`] came to.
pub enum Claim {
    /// The session is live: the connection was handed to its task.
    Joined(Watching),
    /// The session was not live: its task is the caller's to start, with these.
    Start {
        watching: Watching,
        inbox: Inbox,
        /// The task's share of `--max-sessions`.
        permit: OwnedSemaphorePermit,
        first: Attach,
    },
    /// The live task has too many connections waiting to join it.
    Busy(Attach),
    /// `--max-sessions` worker processes run already.
    Full(Attach),
}

struct LiveSession {
    watch: TokenHash,
    attach: mpsc::Sender<Attach>,
    asks: mpsc::Sender<SessionAsk>,
    row: SessionInfo,
}

impl LiveSession {
    fn watching(&self) -> Watching {
        Watching {
            id: self.row.id.clone(),
            asks: Some(self.asks.clone()),
        }
    }
}

/// How many connections may wait in a session's attach queue.
const ATTACH_QUEUE: usize = 16;
/// Watchers' probes (and forks' asks) waiting for a session's task.
const ASK_QUEUE: usize = 32;

/// The sessions with a task in this process.
pub struct LiveSessions {
    by_token: Mutex<HashMap<TokenHash, LiveSession>>,
    /// `--max-sessions`: every worker process counts, whoever's connection started it.
    permits: Arc<Semaphore>,
    max_steps: u32,
}

impl LiveSessions {
    pub fn new(max_sessions: usize, max_steps: u32) -> LiveSessions {
        LiveSessions {
            by_token: Mutex::default(),
            permits: Arc::new(Semaphore::new(max_sessions)),
            max_steps,
        }
    }

    /// The claim rule: joins the live task of `ident` if there is one (a duplicated tab, a double
    /// reconnect: the connection brings its claim's epoch along, see `OwnerConn::claimed`);
    /// otherwise registers the session and leaves starting its task to the caller.
    pub fn start_or_join(&self, ident: &Identity, first: Attach) -> Claim {
        let mut map = self.by_token.lock();
        if let Some(l) = map.get(&ident.token_hash) {
            let watching = l.watching();
            return match l.attach.try_send(first) {
                Ok(()) => Claim::Joined(watching),
                Err(e) => Claim::Busy(e.into_inner()),
            };
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Claim::Full(first);
        };
        let (attach_tx, attach) = mpsc::channel(ATTACH_QUEUE);
        let (ask_tx, asks) = mpsc::channel(ASK_QUEUE);
        let live = LiveSession {
            watch: ident.watch_hash.clone(),
            attach: attach_tx,
            asks: ask_tx,
            row: SessionInfo::new(&ident.id, self.max_steps),
        };
        let watching = live.watching();
        map.insert(ident.token_hash.clone(), live);
        Claim::Start {
            watching,
            inbox: Inbox { attach, asks },
            permit,
            first,
        }
    }

    /// Where to send a connection for the live session of `token`.
    pub fn sender(&self, token: &TokenHash) -> Option<mpsc::Sender<Attach>> {
        self.by_token.lock().get(token).map(|l| l.attach.clone())
    }

    /// Where to send a watcher of the live session whose watch token hashes to `watch`.
    pub fn sender_by_watch(&self, watch: &TokenHash) -> Option<(Watching, mpsc::Sender<Attach>)> {
        self.by_token
            .lock()
            .values()
            .find(|l| l.watch.matches(watch))
            .map(|l| (l.watching(), l.attach.clone()))
    }

    /// Changes the status row of a live session.
    pub fn update_row(&self, token: &TokenHash, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(l) = self.by_token.lock().get_mut(token) {
            f(&mut l.row);
        }
    }

    /// Every live session's status row.
    pub fn rows(&self) -> Vec<SessionInfo> {
        self.by_token
            .lock()
            .values()
            .map(|l| l.row.clone())
            .collect()
    }

    /// The row of live session `id` (a watcher's `status`).
    pub fn row_by_id(&self, id: &str) -> Option<SessionInfo> {
        let map = self.by_token.lock();
        map.values().find(|l| l.row.id == id).map(|l| l.row.clone())
    }

    pub fn ids(&self) -> HashSet<String> {
        self.by_token
            .lock()
            .values()
            .map(|l| l.row.id.clone())
            .collect()
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
