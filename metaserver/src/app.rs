//! Shared state of the running server, start-up and graceful shutdown.

use crate::cluster::training::ClusterTraining;
use crate::cluster::Cluster;
use crate::config::{Config, StoreLocation};
use crate::metrics::Metrics;
use crate::pool::WarmPool;
use crate::session::SessionInfo;
use crate::supervisor::{check_workers_dir, Supervisor};
use crate::training::TrainingHub;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub struct App {
    pub cfg: Arc<Config>,
    pub sup: Arc<Supervisor>,
    pub pool: Arc<WarmPool>,
    pub metrics: Arc<Metrics>,
    pub sessions: Mutex<BTreeMap<String, SessionInfo>>,
    pub session_permits: Arc<Semaphore>,
    pub training: Arc<TrainingHub>,
    /// Cancelled once, at shutdown: every session, the hub and the pool watch it.
    pub shutdown: CancellationToken,
    /// `POST /api/drain` and `/api/undrain`: sessions are put away and browsers told to
    /// reconnect (1012); no new session starts here while draining, HTTP keeps being served.
    pub drain: crate::drain::Drain,
    /// Sessions with a task in this process, by token hash (resume, watch).
    pub live: crate::sessions::LiveSessions,
    /// Where sessions outlive their connection and this process.
    pub store: Arc<dyn crate::store::SessionStore>,
    /// This node's link to the cluster (`--store redis://…`); `None` on one machine.
    pub cluster: Option<Arc<Cluster>>,
    /// Every browser connection's task, so shutdown can wait for them to finish.
    pub tasks: TaskTracker,
    pub started: Instant,
    /// How the random policy does (measured once at start, for the learning curves).
    pub random_reference: crate::history::RandomReference,
    /// The models offered, kept fresh off the runtime.
    pub models: Arc<crate::model_catalog::ModelCatalog>,
    /// A cluster node's watchers of sessions that run elsewhere; `None` on one machine.
    pub watch_relay: Option<Arc<crate::cluster::watch::WatchRelay>>,
}

impl App {
    /// The operator rule for a request from `peer` (protocol.md; `--loopback-is-operator`).
    pub fn is_operator(&self, peer: SocketAddr, h: &axum::http::HeaderMap) -> bool {
        crate::guard::operator_allowed(
            self.cfg.admin_token.as_deref(),
            self.cfg.loopback_is_operator,
            peer,
            h,
        )
    }

    /// Does `given` (from a WebSocket message, where a browser cannot set headers) match the
    /// admin token? Constant time; false when no token is configured.
    pub fn is_admin_token(&self, given: &str) -> bool {
        self.cfg
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .is_some_and(|t| ipc_proto::handshake::secret_eq(given, t))
    }

    pub fn update_session(&self, id: &str, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(s) = self.sessions.lock().get_mut(id) {
            f(s);
        }
    }
}

/// Runs the server until SIGTERM/Ctrl-C; returns once everything is cleaned up. Prints
/// `metaserver listening on http://ADDR` when bound (tests pass port 0 and read the line).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    check_environment(&cfg)?;
    raise_fd_limit();
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let sup = Arc::new(Supervisor::new(cfg.clone(), metrics.clone())?);
    let shutdown = CancellationToken::new();
    let pool = WarmPool::new(cfg.warm_workers);
    let cluster = match &cfg.store {
        StoreLocation::Redis(url) => Some(Cluster::new(url, cfg.node_id())?),
        StoreLocation::Dir(_) => None,
    };
    let cluster_training = cluster.clone().map(ClusterTraining::new);
    let models =
        crate::model_catalog::ModelCatalog::open(cfg.models_dir.clone(), cfg.default_model.clone());
    let training = TrainingHub::new(
        sup.clone(),
        shutdown.clone(),
        cluster_training.clone(),
        models.clone(),
    );
    let store: Arc<dyn crate::store::SessionStore> = match (&cfg.store, &cluster) {
        (StoreLocation::Dir(dir), _) => Arc::new(
            crate::store::DirStore::open(dir)
                .map_err(|e| anyhow::anyhow!("session store {}: {e}", dir.display()))?,
        ),
        (StoreLocation::Redis(_), Some(c)) => Arc::new(crate::cluster::store::RedisStore::new(
            c.clone(),
            cfg.resume_window_secs,
        )),
        (StoreLocation::Redis(_), None) => unreachable!("a redis store makes a cluster"),
    };
    let app = Arc::new(App {
        drain: Default::default(),
        live: Default::default(),
        store,
        cluster: cluster.clone(),
        session_permits: Arc::new(Semaphore::new(cfg.max_sessions)),
        cfg: cfg.clone(),
        sup: sup.clone(),
        pool: pool.clone(),
        metrics,
        sessions: Mutex::new(BTreeMap::new()),
        training: training.clone(),
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        started: Instant::now(),
        random_reference: crate::history::measure_random_policy(500, 500, 1),
        models: models.clone(),
        watch_relay: cluster.clone().map(crate::cluster::watch::WatchRelay::new),
    });
    tokio::spawn(models.clone().run(shutdown.clone()));
    let pool_task = tokio::spawn(pool.clone().run(sup.clone(), shutdown.clone()));
    let hub_task = tokio::spawn(training.clone().run());
    tokio::spawn(expire_detached(app.clone()));
    if let (Some(c), Some(ct)) = (cluster, cluster_training) {
        start_cluster_tasks(&app, c, ct);
    }

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.host, cfg.port)).await?;
    let addr = listener.local_addr()?;
    // Frames are small and must leave at once: without TCP_NODELAY, a frame written while the
    // previous one is unacknowledged waits for the browser's delayed ACK (up to 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    println!("metaserver listening on http://{addr}");
    info!(%addr, socket_dir = %sup.socket_dir().display(), "listening");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let hosts =
        crate::guard::HostRule::new(&cfg.public_host, &cfg.allowed_origins, hostname.as_deref());
    let router = crate::http::router(app.clone(), hosts);
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server_task = tokio::spawn(async move { server.await });

    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
    // Sessions write their snapshots to the store, close their browsers with 1012 (reconnect and
    // resume) and retire their workers; the hub saves the run.
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    app.tasks.close();
    let _ = tokio::time::timeout(grace + Duration::from_secs(2), async {
        let _ = hub_task.await;
        app.tasks.wait().await;
    })
    .await;
    let _ = pool_task.await;
    stop_warm_workers(&pool).await;
    // Whatever is still alive after the grace period is killed.
    for w in sup.registry.signal_all(nix::sys::signal::Signal::SIGKILL) {
        warn!(worker = %w.id, pid = w.pid, "killed a worker left after the grace period");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
    sup.cleanup();
    info!("bye");
    Ok(())
}

/// A cluster node's background work: heartbeats, the model sync, and its part in the training
/// run (publishing, subscribing, the lease).
fn start_cluster_tasks(app: &Arc<App>, c: Arc<Cluster>, ct: Arc<ClusterTraining>) {
    info!(node = %c.node_id, "cluster node (sessions, models and training shared through redis)");
    let me = {
        let app = app.clone();
        move || crate::cluster::NodeRow {
            id: app.cfg.node_id(),
            sessions: app.live.len(),
            training_viewers: app.training.info().viewers,
            ready: !app.drain.is_draining(),
            training_holder: app.training.is_cluster_holder(),
            heartbeat_ms: crate::store::now_ms(),
        }
    };
    let stop = app.shutdown.clone();
    tokio::spawn(c.clone().heartbeats(me, stop.clone()));
    tokio::spawn(crate::cluster::models::sync(
        c,
        app.cfg.models_dir.clone(),
        app.models.clone(),
        stop.clone(),
    ));
    tokio::spawn(ct.clone().publisher());
    if let Some(r) = &app.watch_relay {
        crate::cluster::watch::start(r, app, stop.clone());
    }
    tokio::spawn(app.training.clone().sharer(ct.clone()));
    tokio::spawn(app.training.clone().lease_keeper(ct.clone()));
    let (hub, hub2) = (app.training.clone(), app.training.clone());
    tokio::spawn(ct.subscriber(
        move |text| hub.relay_remote(text),
        move |c| hub2.remote_command(c),
        stop,
    ));
}

/// Forgets detached sessions whose resume window has passed, and the oldest beyond
/// `--max-detached`; keeps the detached count for `/metrics`.
async fn expire_detached(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        let window_ms = app.cfg.resume_window_secs.saturating_mul(1000);
        let cutoff = crate::store::now_ms().saturating_sub(window_ms);
        let (store, app2) = (app.store.clone(), app.clone());
        let done = tokio::task::spawn_blocking(move || {
            let n = store.expire(cutoff, app2.cfg.max_detached, &|id| app2.live.is_live(id));
            let detached = store.stored_count().saturating_sub(app2.live.len());
            (n, detached)
        })
        .await;
        match done {
            Ok((Ok(n), detached)) => {
                app.metrics.sessions_expired.fetch_add(n as u64, Relaxed);
                app.metrics
                    .sessions_detached
                    .store(detached as i64, Relaxed);
            }
            Ok((Err(e), _)) => warn!(error = %e, "expiring detached sessions failed"),
            Err(_) => {}
        }
    }
}

/// Worker binaries and ONNX Runtime present, models directory ready and free of interrupted writes.
fn check_environment(cfg: &Config) -> anyhow::Result<()> {
    check_workers_dir(&cfg.workers_dir)?;
    if !cfg.ort_lib.is_file() {
        anyhow::bail!(
            "ONNX Runtime library {} not found: run scripts/setup (it fetches it from the onnxruntime wheel on PyPI) or pass --ort-lib",
            cfg.ort_lib.display()
        );
    }
    std::fs::create_dir_all(&cfg.models_dir)?;
    remove_interrupted_writes(&cfg.models_dir);
    remove_interrupted_writes(&cfg.checkpoint_dir());
    Ok(())
}

/// Warm workers have no session to save: SIGTERM, then SIGKILL after half a second.
async fn stop_warm_workers(pool: &WarmPool) {
    for mut w in pool.drain() {
        w.process.signal(nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_millis(500), w.wait_exit())
            .await
            .is_err()
        {
            w.kill();
            let _ = w.wait_exit().await;
        }
    }
}

/// Each browser and each worker costs descriptors: use the hard limit, not the (often 1024) soft one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            info!(from = soft, to = hard, "raised the open-file limit");
        }
    }
}

/// Temp files of atomic writes that a killed process never renamed (`hamlet_onnx::write_atomic`
/// names them `.tmp-*`). No writer runs before the server starts its workers, so all are litter.
fn remove_interrupted_writes(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-"))
            && std::fs::remove_file(e.path()).is_ok()
        {
            info!(file = %e.path().display(), "removed an interrupted write");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
