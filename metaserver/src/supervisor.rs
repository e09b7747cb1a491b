//! Worker processes: spawn, authenticate, watch, kill, reap.
//!
//! **Architecture Invariant: no orphans, no zombies, no litter.** Every child gets
//! `PR_SET_PDEATHSIG(SIGKILL)` (set in `pre_exec`, from a runtime worker thread, never from
//! `spawn_blocking`, whose threads exit when idle and would fire the signal), its own process group,
//! and a waiter task that reaps it. Sockets live in a private 0700 directory, each removed as soon as
//! its worker has connected; the directory is removed on exit and stale ones are cleaned at start.

use crate::config::Config;
use crate::metrics::Metrics;
use ipc_proto::frame::DEFAULT_MAX_FRAME;
use ipc_proto::inference::FromInference;
use ipc_proto::training::FromTraining;
use ipc_proto::transport::{self, FrameWriter, HandshakeFailure};
use ipc_proto::WorkerKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr_tail: Vec<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?");
                write!(f, "killed by signal {s} ({name})")?
            }
            (Some(c), _) => write!(f, "exited with code {c}")?,
            _ => write!(f, "exited")?,
        }
        if let Some(last) = self.stderr_tail.last() {
            write!(f, "; last stderr line: {last}")?;
        }
        Ok(())
    }
}

/// Events a worker kind sends, and how each says it is ready.
pub trait WorkerEvent: DeserializeOwned + Send + 'static {
    const KIND: WorkerKind;
    /// `Some(Ok)` for the ready event, `Some(Err(reason))` for a fatal start-up error.
    fn readiness(&self) -> Option<Result<(), String>>;
}

impl WorkerEvent for FromInference {
    const KIND: WorkerKind = WorkerKind::Inference;
    fn readiness(&self) -> Option<Result<(), String>> {
        match self {
            FromInference::Ready => Some(Ok(())),
            FromInference::Fatal { reason } => Some(Err(reason.clone())),
            _ => None,
        }
    }
}

impl WorkerEvent for FromTraining {
    const KIND: WorkerKind = WorkerKind::Training;
    fn readiness(&self) -> Option<Result<(), String>> {
        matches!(self, FromTraining::Ready).then_some(Ok(()))
    }
}

/// Commands queued for one worker, at most this many. The queue, not the socket, absorbs bursts,
/// so no task ever blocks writing to a worker that is busy writing back to us.
pub const WORKER_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the worker has too many commands in flight")]
    Full,
    #[error("the worker's connection is closed")]
    Closed,
}

/// Where to send a worker its commands: a bounded queue drained by a writer task.
#[derive(Clone)]
pub struct WorkerSender {
    tx: mpsc::Sender<Vec<u8>>,
}

impl WorkerSender {
    fn start(mut writer: FrameWriter) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WORKER_QUEUE);
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.write_raw(&frame).await.is_err() {
                    break;
                }
            }
        });
        WorkerSender { tx }
    }

    /// Queues a message without waiting.
    pub fn send<T: serde::Serialize>(&self, msg: &T) -> Result<(), SendError> {
        let frame =
            ipc_proto::frame::encode(msg, DEFAULT_MAX_FRAME).map_err(|_| SendError::Closed)?;
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// A live, authenticated, ready worker.
pub struct WorkerHandle<E> {
    pub id: String,
    pub pid: u32,
    pub started: Instant,
    pub sender: WorkerSender,
    pub events: mpsc::Receiver<E>,
    pub exit: watch::Receiver<Option<ExitInfo>>,
    reaped: Arc<AtomicBool>,
}

impl<E> WorkerHandle<E> {
    pub fn signal(&self, sig: Signal) {
        // Never signal a reaped pid: it may already belong to someone else.
        if !self.reaped.load(Ordering::SeqCst) {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Ends the worker gracefully: sends `shutdown`, hands every event it still sends to
    /// `on_event` (a last snapshot, checkpoint or model notice), kills it if it outlives `grace`.
    pub async fn retire<M: serde::Serialize>(
        mut self,
        shutdown: &M,
        grace: Duration,
        mut on_event: impl FnMut(E),
    ) {
        let _ = self.sender.send(shutdown);
        let _ = tokio::time::timeout(grace, async {
            while let Some(ev) = self.events.recv().await {
                on_event(ev);
            }
        })
        .await;
        if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
            self.kill();
            let _ = self.wait_exit().await;
        }
    }

    /// Waits for the process to be reaped.
    pub async fn wait_exit(&mut self) -> ExitInfo {
        loop {
            if let Some(e) = self.exit.borrow().clone() {
                return e;
            }
            if self.exit.changed().await.is_err() {
                return self.exit.borrow().clone().unwrap_or(ExitInfo {
                    code: None,
                    signal: None,
                    stderr_tail: vec![],
                });
            }
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

/// One row of `/api/workers`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub kind: &'static str,
    pub pid: u32,
    pub state: &'static str,
    pub session: Option<String>,
    pub started: u64,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// Operator requests routed to whoever owns a worker.
#[derive(Debug)]
pub enum WorkerControl {
    /// Replace the worker gracefully, carrying its session over.
    Restart,
}

/// A worker's row and, once someone owns it, where to send operator requests.
type RegistryEntry = (WorkerInfo, Option<mpsc::Sender<WorkerControl>>);

#[derive(Default)]
pub struct Registry {
    workers: Mutex<BTreeMap<String, RegistryEntry>>,
}

impl Registry {
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.workers
            .lock()
            .expect("registry")
            .values()
            .map(|(w, _)| w.clone())
            .collect()
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut WorkerInfo)) {
        if let Some((w, _)) = self.workers.lock().expect("registry").get_mut(id) {
            f(w);
        }
    }

    pub fn set_control(&self, id: &str, tx: mpsc::Sender<WorkerControl>) {
        if let Some(e) = self.workers.lock().expect("registry").get_mut(id) {
            e.1 = Some(tx);
        }
    }

    pub fn control(&self, id: &str) -> Option<Option<mpsc::Sender<WorkerControl>>> {
        self.workers
            .lock()
            .expect("registry")
            .get(id)
            .map(|e| e.1.clone())
    }

    pub fn pid(&self, id: &str) -> Option<u32> {
        self.workers
            .lock()
            .expect("registry")
            .get(id)
            .map(|e| e.0.pid)
    }

    fn insert(&self, w: WorkerInfo) {
        self.workers
            .lock()
            .expect("registry")
            .insert(w.id.clone(), (w, None));
    }

    fn remove(&self, id: &str) {
        self.workers.lock().expect("registry").remove(id);
    }
}

pub struct Supervisor {
    pub cfg: Arc<Config>,
    sock_dir: PathBuf,
    next_id: AtomicU64,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    ort_lib: PathBuf,
    models_dir: PathBuf,
    checkpoint_dir: PathBuf,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        let alive = kill(Pid::from_raw(pid), None).is_ok();
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
            next_id: AtomicU64::new(1),
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

    pub fn checkpoint_dir(&self) -> &Path {
        &self.checkpoint_dir
    }

    /// Removes the socket directory (at shutdown).
    pub fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(&self.sock_dir);
    }

    /// Starts a worker and waits until it has authenticated and reported ready.
    pub async fn spawn<E: WorkerEvent>(&self) -> Result<WorkerHandle<E>, SpawnError> {
        let kind = E::KIND;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", kind.as_str());
        let token: String = (0..32)
            .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
            .collect();
        let sock = self.sock_dir.join(format!("w-{n}.sock"));
        let _ = std::fs::remove_file(&sock);
        let listener = transport::bind(&sock).map_err(SpawnError::Socket)?;
        let result = self.start_process::<E>(&id, &token, &sock, &listener).await;
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        match &result {
            Ok(h) => {
                self.metrics.worker_spawned(kind);
                info!(worker = %id, pid = h.pid, kind = kind.as_str(), "worker ready");
            }
            Err(e) => {
                self.metrics.restart(kind, "start_failed");
                warn!(worker = %id, error = %e, "worker failed to start");
            }
        }
        result
    }

    async fn start_process<E: WorkerEvent>(
        &self,
        id: &str,
        token: &str,
        sock: &Path,
        listener: &interprocess::local_socket::tokio::Listener,
    ) -> Result<WorkerHandle<E>, SpawnError> {
        let kind = E::KIND;
        let bin = self.cfg.workers_dir.join(binary_name(kind));
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env(ipc_proto::ENV_SOCKET, sock)
            .env(ipc_proto::ENV_TOKEN, token)
            .env(ipc_proto::ENV_WORKER_ID, id)
            .env(ipc_proto::ENV_ORT_LIB, &self.ort_lib)
            .env(ipc_proto::ENV_MODELS_DIR, &self.models_dir)
            .env("HAMLET_CHECKPOINT_DIR", &self.checkpoint_dir)
            .env(ipc_proto::logging::ENV_LOG_FORMAT, &self.cfg.log_format)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            let parent = std::process::id() as i32;
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // The parent may have died between fork and prctl: then do not run at all.
                if nix::unistd::getppid().as_raw() != parent {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| SpawnError::Exec {
            path: bin.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let started = Instant::now();
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let stderr_done = child.stderr.take().map(|stderr| {
            let tail = tail.clone();
            let wid = id.to_owned();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    debug!(worker = %wid, pid, "{line}");
                    let mut t = tail.lock().expect("tail");
                    if t.len() == 5 {
                        t.pop_front();
                    }
                    t.push_back(line.chars().take(300).collect());
                }
            })
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let reaped = Arc::new(AtomicBool::new(false));
        {
            let reaped = reaped.clone();
            let tail = tail.clone();
            tokio::spawn(async move {
                use std::os::unix::process::ExitStatusExt;
                let status = child.wait().await;
                reaped.store(true, Ordering::SeqCst);
                debug!(pid, ?status, "worker reaped");
                // The last stderr lines say why it died: wait for the pipe's EOF (bounded, in case
                // a grandchild still holds it open).
                if let Some(done) = stderr_done {
                    let _ = tokio::time::timeout(Duration::from_millis(100), done).await;
                }
                let (code, signal) = match status {
                    Ok(s) => (s.code(), s.signal()),
                    Err(_) => (None, None),
                };
                let stderr_tail = tail.lock().expect("tail").iter().cloned().collect();
                let _ = exit_tx.send(Some(ExitInfo {
                    code,
                    signal,
                    stderr_tail,
                }));
            });
        }
        let timeout = Duration::from_millis(self.cfg.spawn_timeout_ms);
        let mut exit_watch = exit_rx.clone();
        let died = async move {
            loop {
                if let Some(e) = exit_watch.borrow().clone() {
                    return e;
                }
                if exit_watch.changed().await.is_err() {
                    futures_util::future::pending::<()>().await;
                }
            }
        };
        tokio::pin!(died);
        let kill_now = || {
            if !reaped.load(Ordering::SeqCst) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        };
        let (mut reader, writer, hello) = tokio::select! {
            r = transport::accept_worker(listener, kind, token, DEFAULT_MAX_FRAME, timeout) => match r {
                Ok(x) => x,
                Err(e) => { kill_now(); return Err(e.into()); }
            },
            e = &mut died => return Err(SpawnError::DiedDuringStart(e)),
        };
        if hello.pid != pid {
            debug!(worker = %id, claimed = hello.pid, pid, "worker reported another pid");
        }
        let (tx, mut events) = mpsc::channel::<E>(256);
        let wid = id.to_owned();
        tokio::spawn(async move {
            loop {
                match reader.read::<E>().await {
                    Ok(ev) => {
                        if tx.send(ev).await.is_err() {
                            break;
                        }
                    }
                    Err(ipc_proto::FrameError::Closed) => break,
                    Err(e) => {
                        // A worker that sends garbage is treated as crashed: stop listening.
                        warn!(worker = %wid, error = %e, "bad frame from worker");
                        break;
                    }
                }
            }
        });
        let ready = tokio::time::timeout_at(tokio::time::Instant::from_std(started + timeout), async {
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(ev) => if let Some(r) = ev.readiness() { return r.map_err(SpawnError::Fatal) },
                        None => return Err(SpawnError::DiedDuringStart((&mut died).await)),
                    },
                    e = &mut died => return Err(SpawnError::DiedDuringStart(e)),
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                kill_now();
                return Err(e);
            }
            Err(_) => {
                kill_now();
                return Err(SpawnError::Timeout(timeout));
            }
        }
        self.registry.insert(WorkerInfo {
            id: id.to_owned(),
            kind: kind.as_str(),
            pid,
            state: "ready",
            session: None,
            started: unix_now(),
            restarts: 0,
            last_exit: None,
        });
        // Drop the registry row when the process is reaped.
        {
            let mut exit = exit_rx.clone();
            let reg = self.registry.clone();
            let wid = id.to_owned();
            tokio::spawn(async move {
                while exit.borrow().is_none() {
                    if exit.changed().await.is_err() {
                        break;
                    }
                }
                reg.remove(&wid);
            });
        }
        Ok(WorkerHandle {
            id: id.to_owned(),
            pid,
            started,
            sender: WorkerSender::start(writer),
            events,
            exit: exit_rx,
            reaped,
        })
    }
}
