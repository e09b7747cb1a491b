//! One inference session's task: its worker process, its owner's browser (when attached), its
//! read-only watchers, and its snapshot in the session store. This file holds the task's state and
//! its life; `browsers.rs`, `worker.rs` and `persist.rs` hold what it does with each.
//!
//! **Architecture Invariant: sessions survive their worker.** The session's snapshot follows
//! every step released to its browsers (`pacer.rs`); when it dies (crash, `kill -9`, hang, a frame that is not a valid message) a
//! replacement is started from the last snapshot and the browsers are told `worker_restarted`.
//! The connections are closed only when the restart budget is spent (`error`, then close 1011).
//!
//! **Architecture Invariant: sessions survive their connection and the server** (sessions.md). The
//! snapshot reaches the store at most every `--snapshot-flush-ms` while it changes, and at once
//! when the owner's browser leaves and at shutdown. A session whose owner has gone and that nobody
//! watches is *detached*: its task ends, its worker is released, and only the stored snapshot
//! remains, until its token brings it back or the resume window ends.

use super::identity::{Identity, OwnerConn, Restored};
use super::pacer::Pacer;
use super::registry::{Attach, Inbox, SessionAsk};
use super::sessions::Sessions;
use crate::client::{close, Client, Incoming};
use crate::metrics::RestartReason;
use crate::validate::InferenceRequest;
use crate::workers::budget::{RestartBudget, RestartPolicy};
use crate::workers::pool::InferenceWorker;
use crate::workers::registry::WorkerControl;
use crate::workers::replacement::Replacement;
use axum::extract::ws::Utf8Bytes;
use ipc_proto::browser::{Connected, EpisodeSummary};
use ipc_proto::inference::{SessionCommand, SessionSnapshot};
use ipc_proto::link::LinkEvent;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the session does next, once something woke its task.
pub(super) enum NextStep {
    /// Keep relaying with the same worker.
    Continue,
    /// Replace the worker.
    Replace(Replacement),
    /// The owner left and nobody watches: put the session away in the store.
    Detach,
    /// The server is stopping or draining: flush, close browsers with 1012.
    ServerGoing,
    /// The session is over: the owner did not come back within the resume window (watchers are
    /// let go), or its worker keeps failing.
    Over,
    /// The store refused a write: another process (a cluster node where the browser resumed)
    /// owns the session now. This one lets go without writing.
    Superseded,
}

/// Whether a detached session reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// Written (or given up: the window ended, the server is stopping).
    Written,
    /// A browser came back while the store refused it: serve again.
    Reattached,
}

/// Flags a background write leaves for the session task.
#[derive(Default)]
pub(super) struct WriteOutcome {
    /// The store refused a write made with this epoch (0: none was refused): a newer owner has
    /// the session — unless this task has since adopted a newer claim itself.
    pub superseded: AtomicU64,
    /// It failed (the store unreachable): write again at the next tick.
    pub failed: AtomicBool,
}

pub struct SessionTask {
    pub(super) sessions: Arc<Sessions>,
    pub(super) ident: Identity,
    pub(super) owner: Option<OwnerConn>,
    pub(super) watchers: Vec<Client>,
    pub(super) inbox: Inbox,
    /// The session as of the last step released to its browsers.
    pub(super) snapshot: Option<SessionSnapshot>,
    /// The steps its worker computed ahead, released one per period.
    pub(super) pacer: Pacer,
    /// The last ≤ [`RECENT_EPISODES`] episode ends, for `connected` after a reload.
    pub(super) recent: VecDeque<EpisodeSummary>,
    /// Probes sent to the worker and not yet answered: who asked.
    pub(super) probes: HashMap<u64, Client>,
    pub(super) last_probe: u64,
    pub(super) budget: RestartBudget,
    pub(super) control_tx: mpsc::Sender<WorkerControl>,
    control_rx: mpsc::Receiver<WorkerControl>,
    /// When the owner was last told its commands are being dropped (told at most once a second,
    /// so a flood cannot turn into a flood of undroppable error frames).
    pub(super) last_busy_notice: Option<Instant>,
    /// A worker of this task has been started (the next ones are replacements).
    pub(super) announced: bool,
    /// Number of the last command sent to a worker.
    pub(super) last_seq: u64,
    /// Commands sent but not yet covered by a snapshot: replayed to a replacement worker so that
    /// none is lost with a dying one. Queries (`status`) are not kept.
    pub(super) unacked: VecDeque<(u64, SessionCommand)>,
    /// The worker's `connected`, for owners and watchers who attach later.
    pub(super) connected: Option<Connected>,
    /// The last `state_update`, encoded: a browser that attaches draws at once.
    pub(super) last_frame: Option<Utf8Bytes>,
    /// The snapshot changed since it last reached the store.
    pub(super) dirty: bool,
    /// A periodic write to the store still in progress.
    pub(super) flushing: Option<tokio::task::JoinHandle<()>>,
    /// When the owner left while watchers kept the session running.
    pub(super) owner_left: Option<Instant>,
    /// What the last write to the store came to (set from the blocking thread that wrote).
    pub(super) write: Arc<WriteOutcome>,
    /// When the last periodic write started, and the store's generation then.
    pub(super) written: (Instant, u64),
    /// Cancelled when the server drains (the drain current when this session started).
    drain: CancellationToken,
    /// This task's share of `--max-sessions`: every worker process counts, whoever caused it.
    _permit: OwnedSemaphorePermit,
    /// A node elsewhere in the cluster watches this session: its frames go to Redis too.
    pub(super) publish_frames: bool,
}

/// Episode ends `connected.recent_episodes` carries (protocol.md: the last ≤ 100).
pub(super) const RECENT_EPISODES: usize = 100;

/// How long a detached session's worker may take to stop before it is killed.
const DETACH_GRACE: Duration = Duration::from_millis(500);

impl SessionTask {
    pub fn new(
        sessions: Arc<Sessions>,
        ident: Identity,
        restored: Restored,
        inbox: Inbox,
        permit: OwnedSemaphorePermit,
    ) -> SessionTask {
        let (control_tx, control_rx) = mpsc::channel(4);
        let drain = sessions.drain.token();
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
            budget: RestartBudget::new(RestartPolicy::of(&sessions.cfg)),
            sessions,
            ident,
            owner: None,
            watchers: Vec::new(),
            inbox,
            snapshot: restored.snapshot,
            pacer: Pacer::new(),
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

    pub(super) fn id(&self) -> &str {
        &self.ident.id
    }

    /// The session's life: attach its first browser, serve, then put it away or end it. Returns
    /// the connections that reached it as it ended, to be dispatched again.
    pub async fn run(mut self, first: Attach) -> Vec<Attach> {
        let metrics = self.sessions.metrics.clone();
        metrics.sessions_active.fetch_add(1, Relaxed);
        info!(session = %self.id(), resumed = self.snapshot.is_some(), "session task started");
        self.attach(first);
        let end = loop {
            let end = self.serve().await;
            // A detach is durable: if the store cannot take the session now, the task stays
            // (without a worker) and keeps trying; a browser that comes back resumes it here.
            if matches!(end, NextStep::Detach)
                && self.put_away_durably().await == Stored::Reattached
            {
                continue;
            }
            break end;
        };
        let pending = self.finish(end).await;
        metrics.sessions_active.fetch_sub(1, Relaxed);
        info!(session = %self.id(), "session task ended");
        pending
    }

    /// Serves the session with one worker after another until it detaches, ends or the server
    /// goes; the worker is retired before this returns.
    async fn serve(&mut self) -> NextStep {
        let Some(mut w) = self.start_worker(None).await else {
            return NextStep::Over;
        };
        let period = Duration::from_millis(self.sessions.cfg.snapshot_flush_ms.max(10));
        let mut tick = self.sessions.writer.flush_ticks(period);
        loop {
            match self.next_step(&mut w, &mut tick).await {
                NextStep::Continue => continue,
                NextStep::Replace(r) => {
                    if r.reason == RestartReason::Operator {
                        self.retire(w).await;
                    }
                    self.forget_probes();
                    match self.start_worker(Some(r)).await {
                        Some(next) => w = next,
                        // The budget is spent: the browsers were told; the session is over.
                        None => return NextStep::Over,
                    }
                }
                end => {
                    // A detached session's state is in its snapshot already: a worker that does
                    // not stop at once (a hung one) is not worth the browser's wait to resume.
                    let full = Duration::from_millis(self.sessions.cfg.shutdown_grace_ms);
                    let grace = match end {
                        NextStep::Detach | NextStep::Superseded => full.min(DETACH_GRACE),
                        _ => full,
                    };
                    self.retire_within(w, grace).await;
                    return end;
                }
            }
        }
    }

    /// The owner's next command; pends while no owner is attached.
    async fn owner_command(owner: &mut Option<OwnerConn>) -> Option<Incoming<InferenceRequest>> {
        match owner {
            Some(o) => o.commands.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Waits for the next thing to do with worker `w`.
    async fn next_step(
        &mut self,
        w: &mut InferenceWorker,
        tick: &mut tokio::time::Interval,
    ) -> NextStep {
        // Borrowed, not cloned: this runs two or three times per relayed frame, and cloning or
        // dropping a token takes its tree's lock.
        let (stop, drain) = (&self.sessions.stop, &self.drain);
        tokio::select! {
            inc = Self::owner_command(&mut self.owner) => match inc {
                Some(Incoming::Valid(InferenceRequest::Command(cmd))) => { self.forward(w, cmd); NextStep::Continue }
                Some(Incoming::Valid(InferenceRequest::Probe(p))) => {
                    if let Some(client) = self.owner.as_ref().map(|o| o.client.clone()) {
                        self.ask_probe(w, client, p);
                    }
                    NextStep::Continue
                }
                _ => self.owner_gone(),
            },
            Some(ask) = self.inbox.asks.recv() => {
                match ask {
                    SessionAsk::Probe(p) => self.ask_probe(w, p.client, p.probe),
                    // The snapshot of the last frame sent: where the watched browsers are.
                    SessionAsk::Snapshot(tx) => { let _ = tx.send(self.snapshot.clone()); }
                }
                NextStep::Continue
            }
            ev = w.recv() => match ev {
                LinkEvent::Event(ev) => { self.on_worker_event(w, ev); NextStep::Continue }
                LinkEvent::Ended(end) => NextStep::Replace(Replacement::after(w, end).await),
            },
            _ = self.pacer.timer(), if self.pacer.has_due() => { self.release_due(w); NextStep::Continue }
            Some(a) = self.inbox.attach.recv() => { self.attach(a); NextStep::Continue }
            Some(WorkerControl::Restart) = self.control_rx.recv() => {
                let text = "restarted by an operator";
                NextStep::Replace(Replacement::new(RestartReason::Operator, text, w.started))
            }
            _ = tick.tick() => self.housekeeping(),
            _ = stop.cancelled() => NextStep::ServerGoing,
            _ = drain.cancelled() => NextStep::ServerGoing,
        }
    }

    /// The owner's browser went away (closed, or the connection dropped).
    fn owner_gone(&mut self) -> NextStep {
        self.owner = None;
        self.prune_watchers();
        self.update_row();
        if self.watchers.is_empty() {
            return NextStep::Detach;
        }
        // Watchers keep the session running, until the owner's resume window ends.
        self.owner_left = Some(Instant::now());
        NextStep::Continue
    }

    /// Every flush interval: write a changed snapshot, let go of departed watchers, tell watchers
    /// elsewhere, end a session whose owner stayed away too long.
    fn housekeeping(&mut self) -> NextStep {
        if self.superseded() {
            return NextStep::Superseded;
        }
        self.flush_in_background();
        self.prune_watchers();
        if let Some(w) = self
            .sessions
            .watch_relay
            .as_ref()
            .map(|r| r.watched(self.id()))
        {
            if w.greet {
                self.greet_remote_watchers();
            }
            self.publish_frames = w.publish;
        }
        if self.owner.is_none() {
            if self.watchers.is_empty() {
                return NextStep::Detach;
            }
            let window = Duration::from_secs(self.sessions.cfg.resume_window_secs);
            if self.owner_left.is_some_and(|t| t.elapsed() >= window) {
                return NextStep::Over;
            }
        }
        NextStep::Continue
    }

    /// Puts the session away (the server going; a detach was written already) or forgets it
    /// (over), leaves the registry and lets its browsers go. Returns the connections that
    /// reached it meanwhile, for the caller to dispatch again.
    async fn finish(&mut self, end: NextStep) -> Vec<Attach> {
        match end {
            NextStep::ServerGoing => {
                self.put_away().await;
            }
            NextStep::Over => self.forget().await,
            // Detached: written already. Superseded: the newer owner's copy stays as it is.
            _ => {}
        }
        let mut pending = self
            .sessions
            .live
            .leave(&self.ident.token_hash, &mut self.inbox.attach);
        self.let_browsers_go(&end);
        if let NextStep::ServerGoing = end {
            for a in pending.drain(..) {
                a.into_client()
                    .close(close::SERVICE_RESTART, "server restarting");
            }
        }
        pending
    }
}
