//! [`Sessions`]: what every `/ws` connection and session task of this server uses — the live
//! registry, the store, the models offered, where worker processes come from, and how the server
//! ends. Each is a narrow handle owned here; nothing else of the server is reachable from a session.

use super::elsewhere::WatchElsewhere;
use super::registry::LiveSessions;
use super::store::SessionStore;
use super::store_writer::StoreWriter;
use crate::client::Client;
use crate::config::Config;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::model_catalog::ModelCatalog;
use crate::workers::pool::WarmPool;
use crate::workers::supervisor::Supervisor;
use ipc_proto::browser::ErrorCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct Sessions {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Spawns, authenticates and lists worker processes.
    pub sup: Arc<Supervisor>,
    /// Warm workers, so a new session does not wait for a process to start.
    pub pool: Arc<WarmPool>,
    /// Sessions with a task in this process.
    pub live: LiveSessions,
    /// Where sessions outlive their connection and this process.
    pub store: Arc<dyn SessionStore>,
    /// How live sessions' snapshots reach `store` (in rounds, for the directory).
    pub writer: StoreWriter,
    /// The models offered, kept fresh off the runtime.
    pub models: Arc<ModelCatalog>,
    /// A cluster node's watchers of sessions that run elsewhere; `None` on one machine.
    pub watch_relay: Option<Arc<dyn WatchElsewhere>>,
    /// Cancelled once, at shutdown.
    pub stop: CancellationToken,
    /// `POST /api/drain` and `/api/undrain`.
    pub drain: Arc<Drain>,
    /// Every browser connection's and session's task, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Sessions {
    /// Is this a cluster node (sessions found in the shared store may run on another node)?
    pub fn in_cluster(&self) -> bool {
        self.watch_relay.is_some()
    }

    /// `--max-sessions` worker processes run already: the browser is told so and closed with 1013.
    pub fn refuse_full(&self, client: &Client) {
        self.metrics.sessions_refused.fetch_add(1, Relaxed);
        let most = self.cfg.max_sessions;
        let why = format!("the server is at its limit of {most} sessions; try again later");
        client.try_again_later(ErrorCode::TooManySessions, why, "too many sessions");
    }

    /// Sessions put away in the store and not live here (for `/metrics` and `/api/status`).
    pub fn detached_count(&self) -> usize {
        self.store.stored_count().saturating_sub(self.live.len())
    }
}
