//! Watching across a cluster's nodes, as a session sees it (cluster.md "Watching across nodes"):
//! a trait the cluster implements (`cluster/watch.rs`), as it implements the session store, so
//! sessions do not depend on the cluster.

use super::registry::Watching;
use super::watcher_view::WatcherView;
use crate::client::Client;
use axum::extract::ws::Utf8Bytes;
use ipc_proto::browser::SessionStatus;

/// What a session's task should do about watchers elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// Publish its frames.
    pub publish: bool,
    /// A node started watching: publish its settings and current frame now.
    pub greet: bool,
}

pub trait WatchElsewhere: Send + Sync + 'static {
    /// Should session `id`, live here, publish its frames now, and greet a node that started
    /// watching? (Asked by its task every flush tick.)
    fn watched(&self, id: &str) -> Watched;
    /// Queues one of a live session's frames for its watchers elsewhere.
    fn publish(&self, id: &str, text: &Utf8Bytes);
    /// A watcher here of session `id`, which is not live here: `connected` and the stored frame
    /// at once, then the owner's frames from wherever it runs.
    fn add_watcher(&self, client: Client, id: &str, view: WatcherView) -> Watching;
    /// A remote watcher's `status`: the session as last seen here.
    fn status(&self, id: &str) -> Option<SessionStatus>;
}
