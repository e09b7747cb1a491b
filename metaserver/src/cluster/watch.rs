//! Watching a session that runs on another node (cluster.md "Watching across nodes"). A watch
//! token never claims a session: a watcher that lands on a node where its session is not live is
//! served from Redis instead.
//!
//! - **The watching node** answers `connected` and the session's stored frame at once, subscribes
//!   to `hamlet:sess:{id}:frames`, relays what arrives there to its watchers, and every second
//!   asks on `hamlet:watch` for the session's frames to be published.
//! - **The owner's node** hears those requests and publishes a session's frames (and `settings`)
//!   to its channel only while a request is fresh (the last 3 s): a session nobody watches from
//!   elsewhere costs Redis nothing.
//! - If no node runs the session, the watcher keeps the stored frame (the session as its owner
//!   left it) until the owner resumes it somewhere; then frames flow again.
//!
//! Pub/sub is at-most-once: a watcher may miss a `state_update`, as a slow one may anyway. What
//! arrives is parsed and checked as browser input is (only the messages a watcher may get, each
//! encoded again by this node), so nothing written into Redis reaches a browser as it was sent.

use super::{key, Cluster};
use crate::client::{close, Client};
use crate::metrics::Metrics;
use crate::outqueue::Delivery;
use crate::session::elsewhere::{WatchElsewhere, Watched};
use crate::session::registry::Watching;
use crate::session::watcher_view::WatcherView;
use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use ipc_proto::browser::{ServerMessage, SessionStatus};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a watch request keeps the owner's node publishing.
const REQUEST_FRESH: Duration = Duration::from_secs(3);
/// How often a watching node asks again.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// Frames waiting to be published; beyond, new ones are dropped (at-most-once anyway).
const PUBLISH_QUEUE: usize = 4096;

fn frames_channel(id: &str) -> String {
    key(&format!("sess:{id}:frames"))
}

fn requests_channel() -> String {
    key("watch")
}

/// What a remote watcher's session looks like here: its watchers and what was last seen of it.
struct Remote {
    watchers: Vec<Client>,
    status: SessionStatus,
}

/// Who asked for a session's frames, and when last.
#[derive(Default)]
struct Requests {
    by_node: HashMap<String, Instant>,
    /// A node asked for the first time: it is greeted with the session as it is now.
    new_node: bool,
}

/// This node's part in cross-node watching.
pub struct WatchRelay {
    cluster: Arc<Cluster>,
    /// Its watchers count in `hamlet_watchers` (and against `--max-watchers-total`).
    metrics: Arc<Metrics>,
    /// Sessions live here that other nodes watch.
    requested: Mutex<HashMap<String, Requests>>,
    /// Sessions watched here that run elsewhere (or nowhere).
    remote: Mutex<HashMap<String, Remote>>,
    publish_tx: mpsc::Sender<(String, String)>,
    publish_rx: Mutex<Option<mpsc::Receiver<(String, String)>>>,
    subscribe_tx: mpsc::UnboundedSender<Subscription>,
    subscribe_rx: Mutex<Option<mpsc::UnboundedReceiver<Subscription>>>,
}

enum Subscription {
    Add(String),
    Remove(String),
}

impl WatchRelay {
    pub fn new(cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> Arc<WatchRelay> {
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscribe_tx, subscribe_rx) = mpsc::unbounded_channel();
        Arc::new(WatchRelay {
            cluster,
            metrics,
            requested: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            publish_tx,
            publish_rx: Mutex::new(Some(publish_rx)),
            subscribe_tx,
            subscribe_rx: Mutex::new(Some(subscribe_rx)),
        })
    }

    /// Asks the node that runs session `id` (whichever it is) for its frames.
    fn ask(&self, id: &str) {
        let body = format!("{id} {}", self.cluster.node_id);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _ = cluster
                .cmd::<()>(redis::cmd("PUBLISH").arg(requests_channel()).arg(body))
                .await;
        });
    }

    fn requested_by(&self, payload: &str) {
        let Some((id, node)) = payload.split_once(' ') else {
            return;
        };
        if id.len() > 64 || node.len() > 128 || node == self.cluster.node_id {
            return;
        }
        let mut all = self.requested.lock();
        let r = all.entry(id.to_owned()).or_default();
        if r.by_node.insert(node.to_owned(), Instant::now()).is_none() {
            tracing::debug!(session = %id, %node, "a node asks for a session's frames");
            r.new_node = true;
        }
    }

    /// Every second: lets go of departed watchers, asks again for the sessions still watched.
    async fn keep_asking(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(ASK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => {
                    for r in self.remote.lock().values() {
                        for c in &r.watchers {
                            c.close(close::SERVICE_RESTART, "server restarting: reconnect");
                        }
                    }
                    return;
                }
            }
            let ids: Vec<String> = {
                let mut remote = self.remote.lock();
                remote.retain(|id, r| {
                    let before = r.watchers.len();
                    r.watchers.retain(|c| !c.is_closed());
                    let gone = before - r.watchers.len();
                    self.metrics.watchers.fetch_sub(gone as i64, Relaxed);
                    if r.watchers.is_empty() {
                        let _ = self.subscribe_tx.send(Subscription::Remove(id.clone()));
                    }
                    !r.watchers.is_empty()
                });
                remote.keys().cloned().collect()
            };
            for id in ids {
                self.ask(&id);
            }
            self.requested.lock().retain(|_, r| {
                r.by_node.retain(|_, t| t.elapsed() < REQUEST_FRESH);
                !r.by_node.is_empty()
            });
        }
    }

    /// A frame from a session's channel, for this node's watchers of it: parsed, checked, encoded
    /// again.
    fn relay(&self, id: &str, text: &str) {
        let Some(m) = checked(text) else {
            warn!(session = %id, "a frame on a session's channel is not one a watcher may get; dropped");
            return;
        };
        let mut remote = self.remote.lock();
        let Some(r) = remote.get_mut(id) else { return };
        if let ServerMessage::StateUpdate(u) = &m {
            r.status.episode = u.episode;
            r.status.step = u.step;
            r.status.cumulative_reward = u.cumulative_reward;
        }
        if let ServerMessage::Settings(st) = &m {
            r.status.speed = st.speed;
        }
        let text = Utf8Bytes::from(m.to_json());
        let delivery = Delivery::of(&m);
        for c in &r.watchers {
            c.send_encoded(text.clone(), delivery, Instant::now());
        }
    }

    /// Publishes queued frames until the queue closes.
    async fn publisher(self: Arc<Self>) {
        let Some(mut rx) = self.publish_rx.lock().take() else {
            return;
        };
        while let Some((channel, text)) = rx.recv().await {
            let _ = self
                .cluster
                .cmd::<()>(redis::cmd("PUBLISH").arg(channel).arg(text))
                .await;
        }
    }

    /// One subscription connection: the watch requests, and the frames of every session watched
    /// here (subscribed and unsubscribed as watchers come and go). Again after a lost
    /// connection, with backoff.
    async fn subscriber(self: Arc<Self>, stop: CancellationToken) {
        let Some(changes) = self.subscribe_rx.lock().take() else {
            return;
        };
        // Each subscription takes the changes while it runs (one at a time).
        let (me, changes) = (&*self, &tokio::sync::Mutex::new(changes));
        let once = || -> super::Subscribed<'_> { Box::pin(me.subscribe_once(changes)) };
        super::resubscribing("watch", once, &stop).await;
    }

    async fn subscribe_once(
        &self,
        changes: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Subscription>>,
    ) -> redis::RedisResult<()> {
        let mut changes = changes.lock().await;
        let ps = self.cluster.client().get_async_pubsub().await?;
        let (mut sink, mut stream) = ps.split();
        sink.subscribe(requests_channel()).await?;
        let watched: Vec<String> = self.remote.lock().keys().cloned().collect();
        for id in watched {
            sink.subscribe(frames_channel(&id)).await?;
        }
        let prefix = key("sess:");
        loop {
            tokio::select! {
                m = stream.next() => {
                    let Some(m) = m else { break };
                    let Ok(payload) = m.get_payload::<String>() else { continue };
                    let channel = m.get_channel_name().to_owned();
                    if channel == requests_channel() {
                        self.requested_by(&payload);
                    } else if let Some(id) = channel.strip_prefix(&prefix).and_then(|r| r.strip_suffix(":frames")) {
                        self.relay(id, &payload);
                    }
                }
                c = changes.recv() => match c {
                    Some(Subscription::Add(id)) => {
                        sink.subscribe(frames_channel(&id)).await?;
                        tracing::debug!(session = %id, "subscribed to a session's frames");
                        self.ask(&id);
                    }
                    Some(Subscription::Remove(id)) => sink.unsubscribe(frames_channel(&id)).await?,
                    None => break,
                },
            }
        }
        Err((redis::ErrorKind::Io, "subscription ended").into())
    }
}

impl WatchRelay {
    /// Session `id` is live here now (its owner resumed on this node) while some of this node's
    /// watchers still wait for it on its channel — where no node publishes it any more, since a
    /// node does not answer its own requests. They are asked to reconnect (1012), and come back
    /// as watchers of the live session. Found by the cluster's chaos run: such a watcher saw no
    /// frame for as long as the session stayed here.
    fn hand_back_remote_watchers(&self, id: &str) {
        let Some(r) = self.remote.lock().remove(id) else {
            return;
        };
        for c in &r.watchers {
            c.close(close::SERVICE_RESTART, "the session moved here: reconnect");
        }
        self.metrics
            .watchers
            .fetch_sub(r.watchers.len() as i64, Relaxed);
        let _ = self.subscribe_tx.send(Subscription::Remove(id.to_owned()));
        info!(session = %id, watchers = r.watchers.len(), "the session is live here now: its watchers here reconnect to it");
    }
}

impl WatchElsewhere for WatchRelay {
    /// Should a session live here publish its frames now, and greet a node that started
    /// watching? (Asked by its task every flush tick.)
    fn watched(&self, id: &str) -> Watched {
        self.hand_back_remote_watchers(id);
        let mut all = self.requested.lock();
        let Some(r) = all.get_mut(id) else {
            return Watched {
                publish: false,
                greet: false,
            };
        };
        r.by_node.retain(|_, t| t.elapsed() < REQUEST_FRESH);
        Watched {
            publish: !r.by_node.is_empty(),
            greet: std::mem::take(&mut r.new_node),
        }
    }

    /// Queues one of a live session's frames for its watchers elsewhere.
    fn publish(&self, id: &str, text: &Utf8Bytes) {
        let _ = self
            .publish_tx
            .try_send((frames_channel(id), text.as_str().to_owned()));
    }

    /// A watcher here of session `id`, which is not live here: `connected` and the stored frame
    /// at once, then the owner's frames through Redis.
    fn add_watcher(&self, client: Client, id: &str, view: WatcherView) -> Watching {
        client.send(&ServerMessage::Connected(view.connected));
        if let Some(f) = view.frame {
            client.send(&f);
        }
        self.metrics.watchers.fetch_add(1, Relaxed);
        let mut remote = self.remote.lock();
        let entry = remote.entry(id.to_owned()).or_insert_with(|| {
            let _ = self.subscribe_tx.send(Subscription::Add(id.to_owned()));
            Remote {
                watchers: Vec::new(),
                status: view.status,
            }
        });
        entry.watchers.push(client);
        drop(remote);
        // Asked by the subscriber once the channel is subscribed, so no greeting is missed.
        Watching {
            id: id.to_owned(),
            asks: None,
        }
    }

    /// A remote watcher's `status`: the session as last seen here.
    fn status(&self, id: &str) -> Option<SessionStatus> {
        self.remote.lock().get(id).map(|r| r.status.clone())
    }
}

/// Starts the relay's background work on a cluster node.
pub fn start(relay: &Arc<WatchRelay>, stop: CancellationToken) {
    info!("watching across nodes through redis");
    tokio::spawn(relay.clone().publisher());
    tokio::spawn(relay.clone().subscriber(stop.clone()));
    tokio::spawn(relay.clone().keep_asking(stop));
}

/// Only what a watcher may be sent, parsed from what arrived.
fn checked(text: &str) -> Option<ServerMessage> {
    if text.len() > 64 * 1024 {
        return None;
    }
    let m: ServerMessage = serde_json::from_str(text).ok()?;
    matches!(
        m,
        ServerMessage::StateUpdate(_)
            | ServerMessage::EpisodeStart(_)
            | ServerMessage::EpisodeEnd(_)
            | ServerMessage::Settings(_)
            | ServerMessage::ModelLoaded(_)
            | ServerMessage::WorkerRestarted(_)
    )
    .then_some(m)
}
