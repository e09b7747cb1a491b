//! Every live worker process, for `/api/workers`, `/metrics` and operator requests.

use super::process::PidFd;
use ipc_proto::WorkerKind;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started and ready, not yet given to anyone.
    Ready,
    /// Held in the warm pool for the next session.
    Warm,
    /// Serving a session or the training run.
    Active,
}

/// One row of `/api/workers`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub kind: WorkerKind,
    pub pid: u32,
    pub state: WorkerState,
    pub session: Option<String>,
    /// Seconds since the Unix epoch.
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

struct Entry {
    info: WorkerInfo,
    pidfd: Arc<PidFd>,
    /// Where operator requests go once someone owns the worker.
    control: Option<mpsc::Sender<WorkerControl>>,
}

/// What an operator's restart request reaches.
pub enum RestartRoute {
    /// The worker's owner replaces it gracefully.
    Owner(mpsc::Sender<WorkerControl>),
    /// An unowned (warm) worker: ending it is replacing it; the pool refills.
    Unowned(Arc<PidFd>),
}

#[derive(Default)]
pub struct Registry {
    workers: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.workers
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    pub fn count(&self, kind: WorkerKind) -> usize {
        self.workers
            .lock()
            .values()
            .filter(|e| e.info.kind == kind)
            .count()
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut WorkerInfo)) {
        if let Some(e) = self.workers.lock().get_mut(id) {
            f(&mut e.info);
        }
    }

    pub fn set_control(&self, id: &str, tx: mpsc::Sender<WorkerControl>) {
        if let Some(e) = self.workers.lock().get_mut(id) {
            e.control = Some(tx);
        }
    }

    pub fn restart_route(&self, id: &str) -> Option<RestartRoute> {
        self.workers.lock().get(id).map(|e| match &e.control {
            Some(tx) => RestartRoute::Owner(tx.clone()),
            None => RestartRoute::Unowned(e.pidfd.clone()),
        })
    }

    /// Signals every registered worker (at shutdown, for those left after the grace period);
    /// returns the rows of those the signal reached (rows of processes already gone are skipped).
    pub fn signal_all(&self, sig: Signal) -> Vec<WorkerInfo> {
        let w = self.workers.lock();
        w.values()
            .filter(|e| e.pidfd.signal(sig))
            .map(|e| e.info.clone())
            .collect()
    }

    pub(crate) fn insert(&self, info: WorkerInfo, pidfd: Arc<PidFd>) {
        let id = info.id.clone();
        let entry = Entry {
            info,
            pidfd,
            control: None,
        };
        self.workers.lock().insert(id, entry);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.workers.lock().remove(id);
    }
}
