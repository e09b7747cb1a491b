//! Starting and stopping the server: the parts built once and handed out as narrow handles, the
//! background tasks, the listener, and graceful shutdown by one cancellation everyone watches
//! (then a wait for every browser connection's task).

use crate::cluster::training::ClusterTraining;
use crate::cluster::watch::WatchRelay;
use crate::cluster::Cluster;
use crate::config::{Config, StoreLocation};
use crate::guard::{HostRule, Operators};
use crate::http::routes::router;
use crate::http::state::ServerState;
use crate::metrics::Metrics;
use crate::model_catalog::ModelCatalog;
use crate::session::dir_store::DirStore;
use crate::session::elsewhere::WatchElsewhere;
use crate::session::registry::LiveSessions;
use crate::session::sessions::Sessions;
use crate::session::store::SessionStore;
use crate::session::store_writer::StoreWriter;
use crate::training::hub::{HubParts, TrainingHub};
use crate::training::rooms::Rooms;
use crate::training::runs::RunLog;
use crate::training::slots::RunSlots;
use crate::workers::pool::WarmPool;
use crate::workers::supervisor::{check_workers_dir, Supervisor};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Runs the server until SIGTERM/Ctrl-C; returns once everything is cleaned up. Prints
/// `metaserver listening on http://ADDR` when bound (tests pass port 0 and read the line).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    check_environment(&cfg)?;
    raise_fd_limit();
    let cfg = Arc::new(cfg);
    let stop = CancellationToken::new();
    let cluster = match &cfg.store {
        StoreLocation::Redis(url) => Some(Cluster::new(url, cfg.node_id())?),
        StoreLocation::Dir(_) => None,
    };
    let state = build(cfg.clone(), stop.clone(), cluster.clone())?;
    let sessions = state.sessions.clone();
    tokio::spawn(sessions.models.clone().run(stop.clone()));
    let pool_task = tokio::spawn(
        sessions
            .pool
            .clone()
            .run(sessions.sup.clone(), stop.clone()),
    );
    let hub_task = tokio::spawn(state.training.clone().run());
    state.rooms.reopen_kept();
    tokio::spawn(state.rooms.clone().look_after());
    tokio::spawn(expire_detached(sessions.clone()));
    if let Some(c) = cluster {
        start_cluster_tasks(&state, c);
    }
    let server_task = listen(&state, stop.clone()).await?;

    wait_for_signal().await;
    info!("shutting down");
    stop.cancel();
    // Sessions write their snapshots to the store, close their browsers with 1012 (reconnect and
    // resume) and retire their workers; the hub saves the run.
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    sessions.tasks.close();
    let _ = tokio::time::timeout(grace + Duration::from_secs(2), async {
        let _ = hub_task.await;
        state.rooms.wait_all().await;
        sessions.tasks.wait().await;
    })
    .await;
    let _ = pool_task.await;
    stop_warm_workers(&sessions.pool).await;
    // Whatever is still alive after the grace period is killed.
    let sup = &sessions.sup;
    for w in sup.registry.signal_all(nix::sys::signal::Signal::SIGKILL) {
        warn!(worker = %w.id, pid = w.pid, "killed a worker left after the grace period");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), server_task).await;
    sup.cleanup();
    info!("bye");
    Ok(())
}

/// Every part of the server, each owned by the handle that uses it.
fn build(
    cfg: Arc<Config>,
    stop: CancellationToken,
    cluster: Option<Arc<Cluster>>,
) -> anyhow::Result<Arc<ServerState>> {
    let metrics = Arc::new(Metrics::default());
    let sup = Arc::new(Supervisor::new(cfg.clone(), metrics.clone())?);
    let models = ModelCatalog::open(cfg.models_dir.clone(), cfg.default_model.clone());
    let operators = Operators::new(cfg.admin_token.clone(), cfg.loopback_is_operator);
    let store = open_store(&cfg, cluster.as_ref())?;
    // In a cluster each node trains at most its own share of runs (the leases decide which).
    let runs = cfg.max_training_runs();
    let parts = HubParts {
        sup: sup.clone(),
        stop: stop.clone(),
        models: models.clone(),
        operators: operators.clone(),
        slots: Arc::new(RunSlots::new(runs)),
        runs: Arc::new(RunLog::new(cfg.max_runs_kept as usize)),
    };
    let class_run = cluster.clone().map(|c| ClusterTraining::new(c, None));
    let class = TrainingHub::class(parts.clone(), class_run);
    let rooms = Rooms::new(class.clone(), parts, cluster.clone());
    // A cluster node's watchers of sessions that run elsewhere, relayed through Redis.
    let relay = cluster.clone().map(|c| {
        let relay = WatchRelay::new(c, metrics.clone());
        crate::cluster::watch::start(&relay, stop.clone());
        relay
    });
    let sessions = Arc::new(Sessions {
        live: LiveSessions::new(cfg.max_sessions, cfg.max_steps),
        pool: WarmPool::new(cfg.warm_workers),
        watch_relay: relay.map(|r| r as Arc<dyn WatchElsewhere>),
        cfg: cfg.clone(),
        metrics,
        sup,
        writer: StoreWriter::new(store.clone())?,
        store,
        models,
        stop,
        drain: Default::default(),
        tasks: TaskTracker::new(),
    });
    Ok(Arc::new(ServerState {
        cfg,
        sessions,
        training: class,
        rooms,
        operators,
        cluster,
        started: Instant::now(),
        random_reference: crate::training::history::measure_random_policy(500, 500, 1),
    }))
}

/// The session store: the cluster's Redis, or the directory.
fn open_store(
    cfg: &Config,
    cluster: Option<&Arc<Cluster>>,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    Ok(match (&cfg.store, cluster) {
        (StoreLocation::Redis(_), Some(c)) => Arc::new(crate::cluster::store::RedisStore::new(
            c.clone(),
            cfg.resume_window_secs,
        )),
        (StoreLocation::Redis(_), None) => unreachable!("a redis store makes a cluster"),
        (StoreLocation::Dir(dir), _) => Arc::new(
            DirStore::open(dir)
                .map_err(|e| anyhow::anyhow!("session store {}: {e}", dir.display()))?,
        ),
    })
}

/// Binds the listener and serves until `stop`.
async fn listen(
    state: &Arc<ServerState>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let cfg = &state.cfg;
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
    let socket_dir = state.sessions.sup.socket_dir().display().to_string();
    info!(%addr, socket_dir, "listening");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let hosts = HostRule::new(&cfg.public_host, &cfg.allowed_origins, hostname.as_deref());
    let app = router(state.clone(), hosts);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned());
    Ok(tokio::spawn(async move { server.await }))
}

/// A cluster node's background work: heartbeats, the model sync, and its part in the training
/// run (publishing, subscribing, the lease).
fn start_cluster_tasks(state: &ServerState, c: Arc<Cluster>) {
    info!(node = %c.node_id, "cluster node (sessions, models and training shared through redis)");
    let (sessions, training) = (state.sessions.clone(), state.training.clone());
    let me = {
        let (sessions, training, rooms) = (sessions.clone(), training.clone(), state.rooms.clone());
        move || crate::cluster::NodeRow {
            id: sessions.cfg.node_id(),
            sessions: sessions.live.len(),
            training_viewers: training.info().viewers,
            ready: !sessions.drain.is_draining(),
            training_holder: training.is_cluster_holder(),
            free_training_slots: rooms.free_training_slots(),
            heartbeat_ms: crate::clock::now_ms(),
        }
    };
    let stop = sessions.stop.clone();
    tokio::spawn(c.clone().heartbeats(me, stop.clone()));
    let dir = sessions.cfg.models_dir.clone();
    let models = sessions.models.clone();
    tokio::spawn(crate::cluster::models::sync(
        c.clone(),
        dir,
        models,
        stop.clone(),
    ));
    let rooms = state.rooms.clone();
    let starts = crate::cluster::training::forwarded_starts(
        c,
        move |s| rooms.take_forwarded(s),
        stop.clone(),
    );
    tokio::spawn(starts);
    if let Some(cluster_run) = training.cluster_run() {
        crate::training::cluster::start_tasks(&training, cluster_run, stop);
    }
}

/// Forgets detached sessions whose resume window has passed, and the oldest beyond
/// `--max-detached`; keeps the detached count for `/metrics`.
async fn expire_detached(sessions: Arc<Sessions>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sessions.stop.cancelled() => return,
        }
        let window_ms = sessions.cfg.resume_window_secs.saturating_mul(1000);
        let cutoff = crate::clock::now_ms().saturating_sub(window_ms);
        let s = sessions.clone();
        let done = tokio::task::spawn_blocking(move || {
            let live = s.live.ids();
            let n = s
                .store
                .expire(cutoff, s.cfg.max_detached, &|id| live.contains(id));
            (n, s.detached_count())
        })
        .await;
        match done {
            Ok((Ok(n), detached)) => {
                let m = &sessions.metrics;
                m.sessions_expired.fetch_add(n as u64, Relaxed);
                m.sessions_detached.store(detached as i64, Relaxed);
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
