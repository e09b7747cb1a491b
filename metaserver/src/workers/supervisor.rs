//! Worker processes: spawn, authenticate, wait for ready, hand out as [`WorkerHandle`]s.
//!
//! **Architecture Invariant: no orphans, no zombies, no litter.** Every child gets
//! `PR_SET_PDEATHSIG(SIGKILL)` (set in `pre_exec`, from a runtime worker thread, never from
//! `spawn_blocking`, whose threads exit when idle and would fire the signal), its own process group,
//! and a task that reaps it (`process.rs`). Sockets live in a private 0700 directory, each removed
//! as soon as its worker has connected; the directory is removed on exit and stale ones are cleaned
//! at start.

use super::process::{ChildProcess, ExitInfo};
use super::registry::{Registry, WorkerInfo, WorkerState};
use crate::config::Config;
use crate::metrics::Metrics;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::{FromInference, ToInference};
use ipc_proto::link::{Heartbeat, LinkConfig, LinkEvent, SendError, WorkerLink};
use ipc_proto::training::{FromTraining, ToTraining};
use ipc_proto::transport::{self, HandshakeFailure};
use ipc_proto::WorkerKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Commands queued for one worker, at most this many.
pub const WORKER_QUEUE: usize = 256;

/// The command type of a worker kind, and how its events say it is ready.
pub trait WorkerProtocol: Heartbeat {
    const KIND: WorkerKind;
    /// `Some(Ok)` for the ready event, `Some(Err(reason))` for a fatal start-up error.
    fn readiness(ev: &Self::Event) -> Option<Result<(), String>>;
}

impl WorkerProtocol for ToInference {
    const KIND: WorkerKind = WorkerKind::Inference;
    fn readiness(ev: &FromInference) -> Option<Result<(), String>> {
        match ev {
            FromInference::Ready => Some(Ok(())),
            FromInference::Fatal { reason } => Some(Err(reason.clone())),
            _ => None,
        }
    }
}

impl WorkerProtocol for ToTraining {
    const KIND: WorkerKind = WorkerKind::Training;
    fn readiness(ev: &FromTraining) -> Option<Result<(), String>> {
        matches!(ev, FromTraining::Ready).then_some(Ok(()))
    }
}

/// A live, authenticated, ready worker: its process and its link.
pub struct WorkerHandle<C: Heartbeat> {
    pub id: String,
    pub started: Instant,
    pub process: ChildProcess,
    pub link: WorkerLink<C>,
}

impl<C: Heartbeat> WorkerHandle<C> {
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    pub fn send(&self, c: C) -> Result<(), SendError> {
        self.link.sender.send(c)
    }

    pub async fn recv(&mut self) -> LinkEvent<C::Event> {
        self.link.recv().await
    }

    pub fn kill(&self) {
        self.process.kill();
    }

    /// Usable for a new session: alive, and its link has not ended.
    pub fn is_usable(&self) -> bool {
        !self.process.has_exited() && !self.link.is_ended()
    }

    pub async fn wait_exit(&mut self) -> ExitInfo {
        self.process.wait_exit().await
    }

    /// Ends the worker gracefully: sends `shutdown`, hands every event it still sends to
    /// `on_event` (a last snapshot, checkpoint or model notice), kills it if it outlives `grace`.
    pub async fn retire(
        mut self,
        shutdown: C,
        grace: Duration,
        mut on_event: impl FnMut(C::Event),
    ) {
        let _ = self.send(shutdown);
        let _ = tokio::time::timeout(grace, async {
            while let LinkEvent::Event(ev) = self.recv().await {
                on_event(ev);
            }
        })
        .await;
        if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
            self.kill();
            let _ = self.wait_exit().await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {path}: {source}")]
    Exec {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create worker socket: {0}")]
    Socket(std::io::Error),
    #[error("worker {0} before it was ready")]
    DiedDuringStart(ExitInfo),
    #[error("worker start failed: {0}")]
    Handshake(#[from] HandshakeFailure),
    #[error("worker could not start: {0}")]
    Fatal(String),
    #[error("worker did not become ready within {0:?}")]
    Timeout(Duration),
}

pub struct Supervisor {
    pub cfg: Arc<Config>,
    sock_dir: PathBuf,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    ort_lib: PathBuf,
    models_dir: PathBuf,
    checkpoint_dir: PathBuf,
}

fn socket_root() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Removes socket directories of metaservers that no longer run (killed with SIGKILL).
fn clean_stale_socket_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hamlet-metaserver-"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive && std::fs::remove_dir_all(e.path()).is_ok() {
            info!(path = %e.path().display(), "removed stale socket directory");
        }
    }
}

/// Checks `--workers-dir` at start: a missing or non-executable binary is a clear error.
pub fn check_workers_dir(dir: &Path) -> anyhow::Result<()> {
    for kind in [WorkerKind::Inference, WorkerKind::Training] {
        let p = dir.join(binary_name(kind));
        let meta = std::fs::metadata(&p).map_err(|_| {
            anyhow::anyhow!(
                "worker binary {} is missing: build it with `cargo build --release -p {}` \
                 (or run scripts/setup), or point --workers-dir at the directory that holds it",
                p.display(),
                binary_name(kind)
            )
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            anyhow::bail!(
                "worker binary {} is not an executable file: rebuild it with `cargo build --release -p {}`",
                p.display(),
                binary_name(kind)
            );
        }
    }
    Ok(())
}

pub fn binary_name(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::Inference => "worker-inference",
        WorkerKind::Training => "worker-training",
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Supervisor {
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let root = socket_root();
        clean_stale_socket_dirs(&root);
        let sock_dir = root.join(format!("hamlet-metaserver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&sock_dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&sock_dir)
            .map_err(|e| {
                anyhow::anyhow!("cannot create socket directory {}: {e}", sock_dir.display())
            })?;
        std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o700))?;
        let checkpoint_dir = absolute(&cfg.checkpoint_dir());
        std::fs::create_dir_all(&checkpoint_dir).ok();
        Ok(Supervisor {
            ort_lib: absolute(&cfg.ort_lib),
            models_dir: absolute(&cfg.models_dir),
            checkpoint_dir,
            cfg,
            sock_dir,
            registry: Arc::new(Registry::default()),
            metrics,
        })
    }

    pub fn socket_dir(&self) -> &Path {
        &self.sock_dir
    }

    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// Removes the socket directory (at shutdown).
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.sock_dir);
    }

    fn link_config(&self) -> LinkConfig {
        LinkConfig {
            queue: WORKER_QUEUE,
            ping_every: Duration::from_millis(self.cfg.ping_interval_ms),
            hang_after: Duration::from_millis(self.cfg.hang_timeout_ms),
        }
    }

    /// Starts a worker and waits until it has authenticated and reported ready.
    pub async fn spawn<C: WorkerProtocol>(&self) -> Result<WorkerHandle<C>, SpawnError> {
        let kind = C::KIND;
        let id = uuid::Uuid::new_v4().to_string();
        let sock = self.sock_dir.join(format!("{id}.sock"));
        let listener = transport::bind(&sock).map_err(SpawnError::Socket)?;
        let result = self.start_worker::<C>(&id, &sock, &listener).await;
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        match &result {
            Ok(h) => {
                self.metrics.worker_spawned(kind);
                info!(worker = %id, pid = h.pid(), kind = kind.as_str(), "worker ready");
            }
            Err(e) => {
                self.metrics
                    .restart(kind, crate::metrics::RestartReason::StartFailed);
                warn!(worker = %id, error = %e, "worker failed to start");
            }
        }
        result
    }

    fn command(
        &self,
        kind: WorkerKind,
        id: &str,
        token: &str,
        sock: &Path,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.cfg.workers_dir.join(binary_name(kind)));
        cmd.env(ipc_proto::ENV_SOCKET, sock)
            .env(ipc_proto::ENV_TOKEN, token)
            .env(ipc_proto::ENV_WORKER_ID, id)
            .env(ipc_proto::ENV_ORT_LIB, &self.ort_lib)
            .env(ipc_proto::ENV_MODELS_DIR, &self.models_dir)
            .env(ipc_proto::ENV_CHECKPOINT_DIR, &self.checkpoint_dir)
            .env(ipc_proto::ENV_LOG_FORMAT, &self.cfg.log_format)
            .env(ipc_proto::ENV_FRAME_RATE, self.cfg.viewer_fps.to_string());
        cmd
    }

    /// Spawns the process, then waits (bounded by `--spawn-timeout-ms`) for its handshake and its
    /// ready event; a worker that dies or times out on the way is killed and reported.
    async fn start_worker<C: WorkerProtocol>(
        &self,
        id: &str,
        sock: &Path,
        listener: &interprocess::local_socket::tokio::Listener,
    ) -> Result<WorkerHandle<C>, SpawnError> {
        let kind = C::KIND;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let bin = self.cfg.workers_dir.join(binary_name(kind));
        let mut process =
            ChildProcess::start(self.command(kind, id, &token, sock), id).map_err(|source| {
                SpawnError::Exec {
                    path: bin.display().to_string(),
                    source,
                }
            })?;
        let started = Instant::now();
        let timeout = Duration::from_millis(self.cfg.spawn_timeout_ms);
        let mut died = process.clone();
        let ready = tokio::select! {
            r = tokio::time::timeout(timeout, self.connect::<C>(listener, &token, timeout)) => match r {
                Ok(r) => r,
                Err(_) => Err(SpawnError::Timeout(timeout)),
            },
            e = died.wait_exit() => Err(SpawnError::DiedDuringStart(e)),
        };
        let link = match ready {
            Ok(link) => link,
            Err(e) => {
                process.kill();
                let _ = process.wait_exit().await;
                return Err(e);
            }
        };
        self.register(id, kind, &process);
        Ok(WorkerHandle {
            id: id.to_owned(),
            started,
            process,
            link,
        })
    }

    /// Accepts the worker's connection, checks its hello and waits for its ready event.
    async fn connect<C: WorkerProtocol>(
        &self,
        listener: &interprocess::local_socket::tokio::Listener,
        token: &str,
        timeout: Duration,
    ) -> Result<WorkerLink<C>, SpawnError> {
        let (conn, hello) =
            transport::accept_worker(listener, C::KIND, token, DEFAULT_MAX_FRAME, timeout).await?;
        debug!(claimed_pid = hello.pid, "worker authenticated");
        let mut link = WorkerLink::<C>::start(conn, self.link_config());
        loop {
            match link.recv().await {
                LinkEvent::Event(ev) => match C::readiness(&ev) {
                    Some(r) => return r.map(|()| link).map_err(SpawnError::Fatal),
                    None => continue,
                },
                LinkEvent::Ended(end) => {
                    return Err(SpawnError::Fatal(format!(
                        "link ended before ready: {end:?}"
                    )))
                }
            }
        }
    }

    /// Adds the worker's row; it goes away when the process is reaped.
    fn register(&self, id: &str, kind: WorkerKind, process: &ChildProcess) {
        self.registry.insert(
            WorkerInfo {
                id: id.to_owned(),
                kind,
                pid: process.pid,
                state: WorkerState::Ready,
                session: None,
                started: crate::clock::now_secs(),
                restarts: 0,
                last_exit: None,
            },
            process.pidfd.clone(),
        );
        let mut exit = process.exit.clone();
        let reg = self.registry.clone();
        let wid = id.to_owned();
        tokio::spawn(async move {
            let _ = exit.wait_for(Option::is_some).await;
            reg.remove(&wid);
        });
    }
}
