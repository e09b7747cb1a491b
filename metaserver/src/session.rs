//! One inference session: its worker process, its owner's browser (when attached), its read-only
//! watchers, and its snapshot in the session store.
//!
//! **Architecture Invariant: sessions survive their worker.** The worker sends a snapshot after every
//! step; when it dies (crash, `kill -9`, hang, a frame that is not a valid message) a replacement is
//! started from the last snapshot and the browser is told `worker_restarted`. The browser
//! connection is closed only when the restart budget is spent (`error`, then close 1011).
//!
//! **Architecture Invariant: sessions survive their connection and the server** (sessions.md). The
//! snapshot reaches the store at most every `--snapshot-flush-ms` while it changes, and at once
//! when the owner's browser leaves and at shutdown. A session whose owner has gone and that nobody
//! watches is *detached*: its task ends, its worker is released, and only the stored snapshot
//! remains, until its token brings it back or the resume window ends. Frames are encoded once for
//! the owner and every watcher.

use crate::app::App;
use crate::budget::{RestartBudget, Verdict};
use crate::client::{self, close, Client, Incoming};
use crate::metrics::RestartReason;
use crate::outqueue::Delivery;
use crate::pool::InferenceWorker;
use crate::registry::{WorkerControl, WorkerState};
use crate::sessions::{
    self, watch_token_for, Attach, Identity, Inbox, OwnerConn, ProbeAsk, Restored,
};
use crate::store::{now_ms, Put, StoredSession};
use crate::validate::{self, InferenceRequest};
use axum::extract::ws::{Utf8Bytes, WebSocket};
use ipc_proto::browser::{
    Connected, EpisodeSummary, ErrorCode, ErrorMsg, ProbeResult, ServerMessage, WorkerRestarted,
};
use ipc_proto::inference::{
    FromInference, Probe, SessionCommand, SessionSnapshot, SessionStart, ToInference,
};
use ipc_proto::link::{LinkEnd, LinkEvent, SendError};
use ipc_proto::WorkerKind;
use serde::Serialize;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{info, warn};

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

/// Why a worker is being replaced, and since when the one that failed had been running.
struct Replace {
    reason: RestartReason,
    text: String,
    /// The failed worker's start: one that lived `--stable-after-secs` resets the budget.
    started: Instant,
}

impl Replace {
    fn new(reason: RestartReason, text: impl Into<String>, started: Instant) -> Self {
        Replace {
            reason,
            text: text.into(),
            started,
        }
    }
}

/// What ended the session task's wait for something to do.
enum Wake {
    /// Keep relaying with the same worker.
    Continue,
    /// Replace the worker.
    Replace(Replace),
    /// The owner left and nobody watches: put the session away in the store.
    Detach,
    /// The server is stopping or draining: flush, close browsers with 1012.
    ServerGoing,
    /// The owner did not come back within the resume window; watchers are let go.
    Expired,
    /// The store refused a write: another process (a cluster node where the browser resumed)
    /// owns the session now. This one lets go without writing.
    Superseded,
}

/// The owner's browser, while attached.
type Owner = OwnerConn;

pub struct SessionTask {
    app: Arc<App>,
    ident: Identity,
    id: String,
    owner: Option<Owner>,
    watchers: Vec<Client>,
    inbox: Inbox,
    snapshot: Option<SessionSnapshot>,
    /// The last ≤ [`RECENT_EPISODES`] episode ends, for `connected` after a reload.
    recent: VecDeque<EpisodeSummary>,
    /// Probes sent to the worker and not yet answered: who asked.
    probes: HashMap<u64, Client>,
    last_probe: u64,
    budget: RestartBudget,
    control_tx: mpsc::Sender<WorkerControl>,
    control_rx: mpsc::Receiver<WorkerControl>,
    /// When the owner was last told its commands are being dropped (told at most once a second,
    /// so a flood cannot turn into a flood of undroppable error frames).
    last_busy_notice: Option<Instant>,
    /// A worker of this task has been started (the next ones are replacements).
    announced: bool,
    /// Number of the last command sent to a worker.
    last_seq: u64,
    /// Commands sent but not yet covered by a snapshot: replayed to a replacement worker so that
    /// none is lost with a dying one. Queries (`status`) are not kept.
    unacked: VecDeque<(u64, SessionCommand)>,
    /// The worker's `connected`, for owners and watchers who attach later.
    connected: Option<Connected>,
    /// The last `state_update`, encoded: a browser that attaches draws at once.
    last_frame: Option<Utf8Bytes>,
    /// The snapshot changed since it last reached the store.
    dirty: bool,
    /// A periodic write to the store still in progress.
    flushing: Option<tokio::task::JoinHandle<()>>,
    /// When the owner left while watchers kept the session running.
    owner_left: Option<Instant>,
    /// What the last write to the store came to (set from the blocking thread that wrote).
    write: Arc<WriteOutcome>,
    /// When the last periodic write started, and the store's generation then.
    written: (Instant, u64),
    /// Cancelled when the server drains (the drain current when this session started).
    drain: tokio_util::sync::CancellationToken,
    /// This task's share of `--max-sessions`: every worker process counts, whoever caused it.
    _permit: OwnedSemaphorePermit,
    /// A node elsewhere in the cluster watches this session: its frames go to Redis too.
    publish_frames: bool,
}

/// Flags a background write leaves for the session task.
#[derive(Default)]
struct WriteOutcome {
    /// The store refused a write made with this epoch (0: none was refused): a newer owner has
    /// the session — unless this task has since adopted a newer claim itself.
    superseded: AtomicU64,
    /// It failed (the store unreachable): write again at the next tick.
    failed: AtomicBool,
}

/// Episode ends `connected.recent_episodes` carries (protocol.md: the last ≤ 100).
const RECENT_EPISODES: usize = 100;

/// Probes a session's worker may have in flight; more are refused (`rate_limited`).
const MAX_PENDING_PROBES: usize = 32;

/// How long a detached session's worker may take to stop before it is killed.
const DETACH_GRACE: Duration = Duration::from_millis(500);

/// At most this many unacknowledged commands are kept (more than a worker's queue holds).
const MAX_UNACKED: usize = 2 * crate::supervisor::WORKER_QUEUE;

/// Where a `/ws` connection wants to go (its query string).
#[derive(Debug, Default, serde::Deserialize)]
pub struct WsQuery {
    pub resume: Option<String>,
    pub watch: Option<String>,
}

/// One `/ws` connection: an owner (fresh or resuming) or a watcher. Returns when the browser has
/// gone; the session itself lives in its own task.
pub async fn run(socket: WebSocket, app: Arc<App>, query: WsQuery) {
    let (client, stream) = client::start(socket, app.cfg.client_queue, None, app.metrics.clone());
    if let Some(token) = query.watch {
        return watch(stream, client, app, &token).await;
    }
    let (tx, rx) = mpsc::channel(32);
    sessions::open_owner(&app, client.clone(), rx, query.resume).await;
    client::read_loop(
        stream,
        client,
        app.cfg.client_rate,
        tx,
        command_parser(&app),
    )
    .await;
}

/// Validates an inference command; model names are checked against the models directory.
fn command_parser(
    app: &App,
) -> impl Fn(&str) -> Result<InferenceRequest, validate::Rejection> + Send + 'static {
    let models = app.models.clone();
    move |t| validate::parse_inference(t, |name| models.contains(name))
}

/// A read-only watcher's connection: commands get `read_only`, except `status` and `probe`
/// (which change nothing).
async fn watch(
    stream: futures_util::stream::SplitStream<WebSocket>,
    client: Client,
    app: Arc<App>,
    watch_token: &str,
) {
    let Some(watching) = sessions::open_watcher(&app, client.clone(), watch_token).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(8);
    let reader = tokio::spawn(client::read_loop(
        stream,
        client.clone(),
        app.cfg.client_rate,
        tx,
        command_parser(&app),
    ));
    while let Some(Incoming::Valid(req)) = rx.recv().await {
        let answer = match req {
            InferenceRequest::Command(SessionCommand::Status) => watcher_status(&app, &watching.id),
            InferenceRequest::Probe(probe) => {
                let ask = ProbeAsk {
                    client: client.clone(),
                    probe,
                };
                match watching.probes.as_ref().map(|p| p.try_send(ask)) {
                    Some(Ok(())) => continue,
                    Some(Err(_)) => busy_probing(),
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
fn watcher_status(app: &App, id: &str) -> ServerMessage {
    let remote = app.watch_relay.as_ref().and_then(|r| r.status(id));
    if let Some(st) = remote {
        return ServerMessage::SessionStatus(st);
    }
    match app.sessions.lock().get(id) {
        Some(r) => ServerMessage::SessionStatus(ipc_proto::browser::SessionStatus {
            session_id: r.id.clone(),
            model: r.model.clone(),
            playing: r.playing,
            speed: r.speed,
            max_steps: r.max_steps,
            episode: r.episode,
            step: r.step,
            cumulative_reward: r.cumulative_reward,
        }),
        None => ServerMessage::error(ErrorCode::UnknownWatchLink, "the watched session has ended"),
    }
}

fn busy_probing() -> ServerMessage {
    ServerMessage::error(
        ErrorCode::RateLimited,
        "too many probes of this session at once; try again",
    )
}

/// `--max-sessions` worker processes run already: the browser is told so and closed with 1013.
pub fn refuse_full(app: &App, client: &Client) {
    app.metrics.sessions_refused.fetch_add(1, Relaxed);
    client.send(&ServerMessage::error(
        ErrorCode::TooManySessions,
        format!(
            "the server is at its limit of {} sessions; try again later",
            app.cfg.max_sessions
        ),
    ));
    client.close(close::TRY_AGAIN_LATER, "too many sessions");
}

fn new_row(id: &str, max_steps: u32) -> SessionInfo {
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
        connected_at: crate::supervisor::unix_now(),
        attached: false,
        watchers: 0,
        cumulative_reward: 0.0,
        max_steps,
    }
}

/// The owner's `connected`: the worker's, with the secrets and whether it came back.
fn owner_connected(base: &Connected, o: &OwnerConn) -> Connected {
    Connected {
        resume_token: Some(o.token.clone()),
        watch_token: Some(watch_token_for(&o.token)),
        resumed: Some(o.resumed),
        resume_error: o.resume_error.then(|| "unknown_or_expired".to_owned()),
        ..base.clone()
    }
}

/// A watcher's `connected`: no secrets, the id it watches, read-only.
fn watcher_connected(base: &Connected) -> Connected {
    Connected {
        watching: Some(base.session_id.clone()),
        read_only: Some(true),
        resume_token: None,
        watch_token: None,
        resumed: None,
        resume_error: None,
        ..base.clone()
    }
}

impl SessionTask {
    pub fn new(
        app: Arc<App>,
        ident: Identity,
        restored: Restored,
        inbox: Inbox,
        permit: OwnedSemaphorePermit,
    ) -> SessionTask {
        let (control_tx, control_rx) = mpsc::channel(4);
        let drain = app.drain.token();
        // A session started for its watchers (its owner gone) lives at most until the owner's
        // resume window ends, counted from when the owner left (its last stored copy).
        let owner_left = restored.owner_left_ms_ago.map(|ago| {
            let ago = Duration::from_millis(ago);
            Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
        });
        SessionTask {
            drain,
            _permit: permit,
            publish_frames: false,
            budget: RestartBudget::new(app.cfg.restart_policy()),
            id: ident.id.clone(),
            app,
            ident,
            owner: None,
            watchers: Vec::new(),
            inbox,
            snapshot: restored.snapshot,
            recent: restored.recent.into_iter().collect(),
            probes: HashMap::new(),
            last_probe: 0,
            control_tx,
            control_rx,
            last_busy_notice: None,
            announced: false,
            last_seq: 0,
            unacked: VecDeque::new(),
            connected: None,
            last_frame: None,
            dirty: false,
            flushing: None,
            owner_left,
            write: Arc::default(),
            written: (Instant::now(), 0),
        }
    }

    /// The session's life: attach its first browser, serve, then put it away or end it.
    pub async fn run(mut self, first: Attach) {
        let app = self.app.clone();
        app.sessions
            .lock()
            .insert(self.id.clone(), new_row(&self.id, app.cfg.max_steps));
        app.metrics.sessions_active.fetch_add(1, Relaxed);
        info!(session = %self.id, resumed = self.snapshot.is_some(), "session task started");
        self.attach(first);
        let end = loop {
            let end = self.serve().await;
            // A detach is durable: if the store cannot take the session now, the task stays
            // (without a worker) and keeps trying; a browser that comes back resumes it here.
            if matches!(end, Wake::Detach) && self.put_away_durably().await == Stored::Reattached {
                continue;
            }
            break end;
        };
        self.finish(end).await;
        app.sessions.lock().remove(&self.id);
        app.metrics.sessions_active.fetch_sub(1, Relaxed);
        info!(session = %self.id, "session task ended");
    }

    fn start_message(&self) -> ToInference {
        ToInference::Start(Box::new(SessionStart {
            session_id: self.id.clone(),
            model: self.app.models.default_model(),
            max_steps: self.app.cfg.max_steps,
            snapshot: self.snapshot.clone(),
            // The first worker of this task introduces the session (`connected`; for a session
            // back from the store, its current frame too); replacements do not.
            announce: !self.announced,
            seed: self.ident.seed,
        }))
    }

    /// A browser joins: the owner (taking over from a present one) or a watcher. One that joins a
    /// running session gets `connected` and the current frame at once.
    fn attach(&mut self, a: Attach) {
        match a {
            Attach::Owner(o) => self.attach_owner(o),
            Attach::Watcher(c) => self.attach_watcher(c),
        }
        self.update_row();
    }

    fn attach_owner(&mut self, o: OwnerConn) {
        if let Some(e) = o.claimed.filter(|e| *e > self.ident.epoch) {
            // The newest claim wins: this task writes with it from now on.
            self.ident.epoch = e;
            self.dirty = true;
        }
        if let Some(old) = self.owner.take() {
            self.app.metrics.sessions_taken_over.fetch_add(1, Relaxed);
            info!(session = %self.id, "session taken over by a new connection");
            old.client.send(&ServerMessage::error(
                ErrorCode::SessionTakenOver,
                "this session was opened in another tab or window",
            ));
            old.client.close(close::TAKEN_OVER, "session taken over");
        }
        if let Some(base) = &self.connected {
            let c = owner_connected(&self.refreshed(base), &o);
            o.client.send(&ServerMessage::Connected(c));
            if let Some(f) = &self.last_frame {
                o.client
                    .send_encoded(f.clone(), Delivery::Droppable, Instant::now());
            }
        }
        self.owner_left = None;
        self.owner = Some(o);
    }

    fn attach_watcher(&mut self, c: Client) {
        self.prune_watchers();
        if self.watchers.len() >= self.app.cfg.max_watchers {
            c.send(&ServerMessage::error(
                ErrorCode::TooManyWatchers,
                format!(
                    "this session already has {} watchers, the most allowed",
                    self.app.cfg.max_watchers
                ),
            ));
            c.close(close::TRY_AGAIN_LATER, "too many watchers");
            return;
        }
        if let Some(base) = &self.connected {
            let w = watcher_connected(&self.refreshed(base));
            c.send(&ServerMessage::Connected(w));
            if let Some(f) = &self.last_frame {
                c.send_encoded(f.clone(), Delivery::Droppable, Instant::now());
            }
        }
        self.app.metrics.watchers.fetch_add(1, Relaxed);
        self.watchers.push(c);
    }

    /// The worker's `connected` brought up to date from the latest snapshot, with the recent
    /// episodes.
    fn refreshed(&self, base: &Connected) -> Connected {
        let mut c = base.clone();
        if let Some(s) = &self.snapshot {
            c.model = s.model.clone();
            c.playing = s.playing;
            c.speed = s.speed;
            c.epsilon = s.epsilon;
            c.start_mode = s.start;
            c.detail = s.detail;
        }
        c.available_models = self.app.models.listing().names.clone();
        c.recent_episodes = self.recent.iter().cloned().collect();
        c
    }

    fn prune_watchers(&mut self) {
        let before = self.watchers.len();
        self.watchers.retain(|w| !w.is_closed());
        let gone = before - self.watchers.len();
        if gone > 0 {
            self.app.metrics.watchers.fetch_sub(gone as i64, Relaxed);
            self.update_row();
        }
    }

    fn update_row(&self) {
        let (attached, watchers) = (self.owner.is_some(), self.watchers.len());
        self.app.update_session(&self.id, |r| {
            r.attached = attached;
            r.watchers = watchers;
        });
    }

    /// Gets a worker (warm if possible) and gives it this session. `replacing` says why the
    /// previous worker went; every failure on the way counts against the budget, except an
    /// operator's restart.
    async fn start_worker(&mut self, mut replacing: Option<Replace>) -> Option<InferenceWorker> {
        loop {
            if let Some(r) = &replacing {
                if !self.allow_restart(r).await {
                    return None;
                }
            }
            let w = match self.app.pool.get(&self.app.sup).await {
                Ok(w) => w,
                Err(e) => {
                    let reason = RestartReason::StartFailed;
                    replacing = Some(Replace::new(reason, e.to_string(), Instant::now()));
                    continue;
                }
            };
            if !self.hand_over(&w) {
                w.kill();
                let text = "worker closed its socket on start";
                replacing = Some(Replace::new(RestartReason::Crash, text, w.started));
                continue;
            }
            self.adopt(&w, replacing.as_ref());
            return Some(w);
        }
    }

    /// Records a restart; sleeps the backoff, or ends the session when the budget is spent.
    async fn allow_restart(&mut self, r: &Replace) -> bool {
        if r.reason != RestartReason::StartFailed {
            self.app.metrics.restart(WorkerKind::Inference, r.reason);
        }
        self.app.update_session(&self.id, |s| s.restarts += 1);
        if r.reason == RestartReason::Operator {
            return true;
        }
        match self.budget.record(Instant::now(), r.started) {
            Verdict::RestartAfter(d) => {
                tokio::time::sleep(d).await;
                true
            }
            Verdict::GiveUp => {
                warn!(session = %self.id, last_exit = %r.text, "restart budget spent: closing session");
                let c = &self.app.cfg;
                let e = ServerMessage::error(
                    ErrorCode::WorkerFailed,
                    format!(
                        "the worker behind this session failed {} times in {} s; giving up. Last exit: {}",
                        c.max_restarts + 1,
                        c.restart_window_secs,
                        r.text
                    ),
                );
                for client in self.clients() {
                    client.send(&e);
                    client.close(close::INTERNAL, "worker keeps failing");
                }
                false
            }
        }
    }

    /// The owner's client (if attached) and every watcher's.
    fn clients(&self) -> Vec<Client> {
        self.owner
            .iter()
            .map(|o| o.client.clone())
            .chain(self.watchers.iter().cloned())
            .collect()
    }

    /// Gives the new worker the session, then every command its predecessor had not confirmed,
    /// in order. False if the worker's queue is already closed.
    fn hand_over(&self, w: &InferenceWorker) -> bool {
        w.send(self.start_message()).is_ok()
            && self.unacked.iter().all(|(seq, c)| {
                let m = ToInference::Command {
                    seq: *seq,
                    command: c.clone(),
                };
                w.send(m).is_ok()
            })
    }

    /// Registers the worker as this session's and tells the browsers, if this is a replacement.
    fn adopt(&mut self, w: &InferenceWorker, replacing: Option<&Replace>) {
        let registry = &self.app.sup.registry;
        registry.update(&w.id, |i| {
            i.state = WorkerState::Active;
            i.session = Some(self.id.clone());
            i.restarts = self.budget.total;
            // The row of the worker that died is gone with it; its successor says why.
            i.last_exit = replacing.map(|r| r.text.clone());
        });
        registry.set_control(&w.id, self.control_tx.clone());
        self.app.update_session(&self.id, |s| {
            s.worker_id = Some(w.id.clone());
            s.worker_pid = Some(w.pid());
        });
        if let (Some(r), true) = (replacing, self.announced) {
            info!(session = %self.id, worker = %w.id, pid = w.pid(), "worker restarted");
            // Without a snapshot yet, the session restarts at its beginning.
            let (episode, step) = self
                .snapshot
                .as_ref()
                .map_or((1, 0), |s| (s.episode, s.world.step));
            let m = ServerMessage::WorkerRestarted(WorkerRestarted {
                reason: r.text.clone(),
                resumed_episode: episode,
                resumed_step: step,
            });
            self.fan_out(&m, Instant::now());
        }
        self.announced = true;
    }

    /// A node elsewhere has just started watching: its watchers get the session as it is now (its
    /// settings and its current frame), not only the frames from the next step on.
    fn greet_remote_watchers(&self) {
        let Some(r) = &self.app.watch_relay else {
            return;
        };
        tracing::debug!(session = %self.id, has_snapshot = self.snapshot.is_some(), "greeting watchers elsewhere");
        if let Some(s) = &self.snapshot {
            let settings = ServerMessage::Settings(ipc_proto::browser::Settings {
                speed: s.speed,
                epsilon: s.epsilon,
                start_mode: s.start,
                detail: s.detail,
            });
            r.publish(&self.id, &Utf8Bytes::from(settings.to_json()));
        }
        if let Some(f) = &self.last_frame {
            r.publish(&self.id, f);
        }
    }

    /// Sends a frame to the owner and every watcher, encoded once.
    fn fan_out(&mut self, m: &ServerMessage, arrived: Instant) {
        let text = Utf8Bytes::from(m.to_json());
        let delivery = Delivery::of(m);
        match m {
            ServerMessage::StateUpdate(_) => self.last_frame = Some(text.clone()),
            ServerMessage::EpisodeEnd(e) => {
                if self.recent.len() == RECENT_EPISODES {
                    self.recent.pop_front();
                }
                self.recent.push_back(e.into());
            }
            _ => {}
        }
        if let Some(o) = &self.owner {
            o.client.send_encoded(text.clone(), delivery, arrived);
        }
        for w in &self.watchers {
            w.send_encoded(text.clone(), delivery, arrived);
        }
        if self.publish_frames {
            if let Some(r) = &self.app.watch_relay {
                r.publish(&self.id, &text);
            }
        }
    }

    fn on_event(&mut self, ev: FromInference) {
        match ev {
            FromInference::Message(ServerMessage::Connected(c)) => self.greet(c),
            // Answers to the owner's own commands go to the owner only.
            FromInference::Message(
                m @ (ServerMessage::Error(_) | ServerMessage::SessionStatus(_)),
            ) => {
                if let Some(o) = &self.owner {
                    o.client.relay(&m, Instant::now());
                }
            }
            FromInference::Message(m) => self.fan_out(&m, Instant::now()),
            FromInference::State(u) => self.fan_out(&ServerMessage::StateUpdate(u), Instant::now()),
            FromInference::Stepped(s) => {
                let (frame, snapshot) = s.into_parts();
                self.fan_out(&ServerMessage::StateUpdate(Box::new(frame)), Instant::now());
                self.on_snapshot(snapshot);
            }
            FromInference::Snapshot(s) => self.on_snapshot(*s),
            FromInference::Probed { id, answer } => self.answer_probe(id, answer),
            FromInference::Pong { .. } | FromInference::Ready => {}
            FromInference::Fatal { reason } => {
                warn!(session = %self.id, %reason, "worker reported a fatal error")
            }
        }
    }

    /// The worker introduced the session: each browser gets its own `connected`.
    fn greet(&mut self, mut c: Connected) {
        c.recent_episodes = self.recent.iter().cloned().collect();
        // The server's listing: the models it offers (usable ones only).
        c.available_models = self.app.models.listing().names.clone();
        if let Some(o) = &self.owner {
            o.client
                .send(&ServerMessage::Connected(owner_connected(&c, o)));
        }
        let w = ServerMessage::Connected(watcher_connected(&c));
        for client in &self.watchers {
            client.send(&w);
        }
        self.connected = Some(c);
    }

    fn on_snapshot(&mut self, s: SessionSnapshot) {
        self.app.update_session(&self.id, |i| {
            // Compared first: it seldom changes, and this runs for every frame.
            if i.model != s.model {
                i.model = s.model.clone();
            }
            i.episode = s.episode;
            i.step = s.world.step;
            i.playing = s.playing;
            i.speed = s.speed;
            i.cumulative_reward = s.cumulative_reward;
        });
        let applied = s.commands_applied;
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= applied) {
            self.unacked.pop_front();
        }
        self.snapshot = Some(s);
        self.dirty = true;
    }

    /// Sends `probe` to the worker for `client` (owner or watcher), unless too many are in flight.
    fn ask_probe(&mut self, w: &InferenceWorker, client: Client, probe: Probe) {
        if self.probes.len() >= MAX_PENDING_PROBES {
            client.send(&busy_probing());
            return;
        }
        self.last_probe += 1;
        let id = self.last_probe;
        if w.send(ToInference::Probe { id, probe }).is_ok() {
            self.probes.insert(id, client);
        } else {
            client.send(&busy_probing());
        }
    }

    fn answer_probe(&mut self, id: u64, answer: Result<Box<ProbeResult>, ErrorMsg>) {
        let Some(client) = self.probes.remove(&id) else {
            return;
        };
        client.send(&match answer {
            Ok(r) => ServerMessage::ProbeResult(r),
            Err(e) => ServerMessage::Error(e),
        });
    }

    /// Probes the lost worker would have answered: their askers are told to ask again.
    fn forget_probes(&mut self) {
        for (_, client) in self.probes.drain() {
            client.send(&ServerMessage::error(
                ErrorCode::WorkerFailed,
                "the agent's process was restarted before it answered; probe again",
            ));
        }
    }

    /// Numbers an owner's command and queues it for the worker (kept until a snapshot confirms it).
    fn forward(&mut self, w: &InferenceWorker, cmd: SessionCommand) {
        self.last_seq += 1;
        let seq = self.last_seq;
        let sent = w.send(ToInference::Command {
            seq,
            command: cmd.clone(),
        });
        if sent.is_ok() && cmd != SessionCommand::Status {
            if self.unacked.len() == MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back((seq, cmd));
        }
        if sent == Err(SendError::Full) {
            let quiet = self
                .last_busy_notice
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if let (false, Some(o)) = (quiet, &self.owner) {
                self.last_busy_notice = Some(Instant::now());
                o.client.send(&ServerMessage::error(
                    ErrorCode::RateLimited,
                    "the session is busy: too many commands in flight; excess commands are dropped",
                ));
            }
        }
        // A closed queue: the link's end reports why.
    }

    /// Turns the end of a worker's link into the reason to replace it.
    async fn link_ended(&mut self, w: &mut InferenceWorker, end: LinkEnd) -> Replace {
        let started = w.started;
        let (reason, text) = match end {
            LinkEnd::Closed => {
                let exit = w.wait_exit().await;
                (RestartReason::Crash, exit.to_string())
            }
            LinkEnd::Unresponsive => {
                w.kill();
                let _ = w.wait_exit().await;
                let text = "worker stopped answering heartbeats".to_owned();
                (RestartReason::Unresponsive, text)
            }
            LinkEnd::ProtocolError(e) => {
                w.kill();
                let _ = w.wait_exit().await;
                (RestartReason::ProtocolError, format!("protocol error: {e}"))
            }
        };
        warn!(session = %self.id, worker = %w.id, pid = w.pid(), reason = %text, "worker lost");
        Replace::new(reason, text, started)
    }

    /// The owner's next command; pends while no owner is attached.
    async fn owner_command(owner: &mut Option<Owner>) -> Option<Incoming<InferenceRequest>> {
        match owner {
            Some(o) => o.commands.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Waits for the next thing to do with worker `w`.
    async fn wake(&mut self, w: &mut InferenceWorker, tick: &mut tokio::time::Interval) -> Wake {
        // Borrowed, not cloned: this runs two or three times per relayed frame, and cloning or
        // dropping a token takes its tree's lock.
        let (shutdown, drain) = (&self.app.shutdown, &self.drain);
        tokio::select! {
            inc = Self::owner_command(&mut self.owner) => match inc {
                Some(Incoming::Valid(InferenceRequest::Command(cmd))) => { self.forward(w, cmd); Wake::Continue }
                Some(Incoming::Valid(InferenceRequest::Probe(p))) => {
                    if let Some(o) = &self.owner {
                        let client = o.client.clone();
                        self.ask_probe(w, client, p);
                    }
                    Wake::Continue
                }
                _ => self.owner_gone(),
            },
            Some(ask) = self.inbox.probes.recv() => { self.ask_probe(w, ask.client, ask.probe); Wake::Continue }
            ev = w.recv() => match ev {
                LinkEvent::Event(ev) => { self.on_event(ev); Wake::Continue }
                LinkEvent::Ended(end) => Wake::Replace(self.link_ended(w, end).await),
            },
            Some(a) = self.inbox.attach.recv() => { self.attach(a); Wake::Continue }
            Some(WorkerControl::Restart) = self.control_rx.recv() => {
                let text = "restarted by an operator";
                Wake::Replace(Replace::new(RestartReason::Operator, text, w.started))
            }
            _ = tick.tick() => self.housekeeping(),
            _ = shutdown.cancelled() => Wake::ServerGoing,
            _ = drain.cancelled() => Wake::ServerGoing,
        }
    }

    /// The owner's browser went away (closed, or the connection dropped).
    fn owner_gone(&mut self) -> Wake {
        self.owner = None;
        self.prune_watchers();
        self.update_row();
        if self.watchers.is_empty() {
            return Wake::Detach;
        }
        // Watchers keep the session running, until the owner's resume window ends.
        self.owner_left = Some(Instant::now());
        Wake::Continue
    }

    /// Every flush interval: write a changed snapshot, let go of departed watchers, end a session
    /// whose owner stayed away too long.
    fn housekeeping(&mut self) -> Wake {
        let refused = self.write.superseded.swap(0, Relaxed);
        if refused != 0 {
            if refused >= self.ident.epoch {
                return Wake::Superseded;
            }
            // Refused before this task adopted a newer claim (a second resume joined it).
            self.dirty = true;
        }
        if self.write.failed.swap(false, Relaxed) {
            self.dirty = true;
        }
        // A store that forgets by itself (a cluster's Redis) hears again from a session that has
        // not changed for a while, or when it may have come back empty.
        let store = &self.app.store;
        let stale = store
            .refresh_every()
            .is_some_and(|every| self.written.0.elapsed() >= every);
        if stale || store.generation() != self.written.1 {
            self.dirty = true;
        }
        self.flush_in_background();
        self.prune_watchers();
        if let Some(w) = self.app.watch_relay.as_ref().map(|r| r.watched(&self.id)) {
            if w.greet {
                self.greet_remote_watchers();
            }
            self.publish_frames = w.publish;
        }
        if self.owner.is_none() {
            if self.watchers.is_empty() {
                return Wake::Detach;
            }
            let window = Duration::from_secs(self.app.cfg.resume_window_secs);
            if self.owner_left.is_some_and(|t| t.elapsed() >= window) {
                return Wake::Expired;
            }
        }
        Wake::Continue
    }

    /// The session as the store keeps it.
    fn stored(&self, running: bool) -> StoredSession {
        StoredSession {
            id: self.id.clone(),
            token: self.ident.token.clone(),
            watch: self.ident.watch.clone(),
            seed: self.ident.seed,
            snapshot: self.snapshot.clone(),
            epoch: self.ident.epoch,
            saved_at_ms: now_ms(),
            running,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    /// Starts writing a changed snapshot unless a write is still in progress (the next tick
    /// writes what changed meanwhile): the relay never waits for the disk.
    fn flush_in_background(&mut self) {
        if !self.dirty || self.flushing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.dirty = false;
        self.written = (Instant::now(), self.app.store.generation());
        let (app, entry, outcome) = (self.app.clone(), self.stored(true), self.write.clone());
        self.flushing = Some(tokio::task::spawn_blocking(move || {
            write_entry(&app, &entry, &outcome);
        }));
    }

    /// Writes the snapshot now, after any write in progress, as the session is put away; true
    /// if the store has it (or a newer owner's copy).
    async fn put_away(&mut self) -> bool {
        if let Some(h) = self.flushing.take() {
            let _ = h.await;
        }
        self.dirty = false;
        let (app, entry, outcome) = (self.app.clone(), self.stored(false), self.write.clone());
        let w = tokio::task::spawn_blocking(move || write_entry(&app, &entry, &outcome)).await;
        w.unwrap_or(false)
    }

    /// Puts a detached session away, retrying with backoff while the store refuses the write
    /// (a read-only directory, Redis down), until the owner's resume window ends. Meanwhile the
    /// session stays live here: a browser that attaches resumes it from memory.
    async fn put_away_durably(&mut self) -> Stored {
        if self.put_away().await {
            return Stored::Written;
        }
        let window = Duration::from_secs(self.app.cfg.resume_window_secs);
        let deadline = tokio::time::Instant::now() + window;
        let metrics = self.app.metrics.clone();
        let pending = &metrics.store_writes_pending;
        pending.fetch_add(1, Relaxed);
        let mut backoff = Duration::from_millis(250);
        let outcome = loop {
            warn!(session = %self.id, retry_in_ms = backoff.as_millis() as u64, "the store refused a detached session; keeping it in memory and retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                Some(a) = self.inbox.attach.recv() => {
                    self.attach(a);
                    break Stored::Reattached;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(session = %self.id, "the resume window ended before the store took the session; it is forgotten");
                    break Stored::Written;
                }
                _ = self.app.shutdown.cancelled() => break Stored::Written,
            }
            if self.put_away().await {
                info!(session = %self.id, "the store took the detached session after all");
                break Stored::Written;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        pending.fetch_sub(1, Relaxed);
        outcome
    }

    async fn serve(&mut self) -> Wake {
        let Some(mut w) = self.start_worker(None).await else {
            return Wake::Expired;
        };
        let period = Duration::from_millis(self.app.cfg.snapshot_flush_ms.max(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.wake(&mut w, &mut tick).await {
                Wake::Continue => continue,
                Wake::Replace(r) => {
                    if r.reason == RestartReason::Operator {
                        self.retire(w).await;
                    }
                    self.forget_probes();
                    match self.start_worker(Some(r)).await {
                        Some(next) => w = next,
                        // The budget is spent: the browsers were told; the session is over.
                        None => return Wake::Expired,
                    }
                }
                end => {
                    // A detached session's state is in its snapshot already: a worker that does
                    // not stop at once (a hung one) is not worth the browser's wait to resume.
                    let full = Duration::from_millis(self.app.cfg.shutdown_grace_ms);
                    let grace = match end {
                        Wake::Detach | Wake::Superseded => full.min(DETACH_GRACE),
                        _ => full,
                    };
                    self.retire_within(w, grace).await;
                    return end;
                }
            }
        }
    }

    /// Puts the session away (the server going; a detach was written already) or forgets it
    /// (expired, failed).
    async fn finish(&mut self, end: Wake) {
        match end {
            Wake::Detach => {}
            Wake::ServerGoing => {
                self.put_away().await;
            }
            // The newer owner's copy stays as it is.
            Wake::Superseded => {}
            _ => {
                if let Some(h) = self.flushing.take() {
                    let _ = h.await;
                }
                let (store, token, epoch) = (
                    self.app.store.clone(),
                    self.ident.token.clone(),
                    self.ident.epoch,
                );
                let _ = tokio::task::spawn_blocking(move || store.remove(&token, epoch)).await;
            }
        }
        let pending = self
            .app
            .live
            .leave(&self.ident.token, &mut self.inbox.attach);
        match end {
            Wake::ServerGoing => {
                for c in self.clients() {
                    c.close(
                        close::SERVICE_RESTART,
                        "server restarting: reconnect to resume",
                    );
                }
                for a in pending {
                    a.into_client()
                        .close(close::SERVICE_RESTART, "server restarting");
                }
            }
            Wake::Expired => {
                for c in self.clients() {
                    c.close(close::GOING_AWAY, "the session has ended");
                }
                sessions::redispatch(&self.app, pending);
            }
            Wake::Superseded => {
                info!(session = %self.id, "session taken by another node; letting go");
                self.app.metrics.sessions_taken_over.fetch_add(1, Relaxed);
                if let Some(o) = &self.owner {
                    o.client.send(&ServerMessage::error(
                        ErrorCode::SessionTakenOver,
                        "this session was opened in another tab or window",
                    ));
                    o.client.close(close::TAKEN_OVER, "session taken over");
                }
                // Watchers come back through their link and find the new owner's copy.
                for c in &self.watchers {
                    c.close(close::SERVICE_RESTART, "session moved: reconnect");
                }
                sessions::redispatch(&self.app, pending);
            }
            _ => sessions::redispatch(&self.app, pending),
        }
        self.app
            .metrics
            .watchers
            .fetch_sub(self.watchers.len() as i64, Relaxed);
        self.watchers.clear();
    }

    /// Ends a worker gracefully, relaying what it still sends.
    async fn retire(&mut self, w: InferenceWorker) {
        let grace = Duration::from_millis(self.app.cfg.shutdown_grace_ms);
        self.retire_within(w, grace).await;
    }

    /// Ends a worker, killing it if it has not stopped within `grace`.
    async fn retire_within(&mut self, w: InferenceWorker, grace: Duration) {
        w.retire(ToInference::Shutdown, grace, |ev| self.on_event(ev))
            .await;
    }
}

/// Whether a detached session reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Written (or given up: the window ended, the server is stopping).
    Written,
    /// A browser came back while the store refused it: serve again.
    Reattached,
}

/// One write to the store, timed; its outcome is left in `outcome`. True unless it failed.
fn write_entry(app: &App, entry: &StoredSession, outcome: &WriteOutcome) -> bool {
    let t = Instant::now();
    match app.store.put(entry) {
        Ok(Put::Written) => {
            app.metrics.observe_flush(t.elapsed());
            true
        }
        Ok(Put::Superseded) => {
            outcome.superseded.store(entry.epoch.max(1), Relaxed);
            warn!(session = %entry.id, "the stored session has a newer owner; not overwritten");
            true
        }
        Err(e) => {
            outcome.failed.store(true, Relaxed);
            app.metrics.store_flush_failures.fetch_add(1, Relaxed);
            warn!(session = %entry.id, error = %e, "could not write the session to the store");
            false
        }
    }
}
