//! A warm pool of started, authenticated inference workers with ONNX Runtime loaded, so a new
//! session's first frame does not wait for process start-up.

use super::registry::WorkerState;
use super::supervisor::{Supervisor, WorkerHandle};
use ipc_proto::inference::ToInference;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::warn;

pub type InferenceWorker = WorkerHandle<ToInference>;

pub struct WarmPool {
    ready: Mutex<VecDeque<InferenceWorker>>,
    target: usize,
    refill: Notify,
}

impl WarmPool {
    pub fn new(target: usize) -> Arc<Self> {
        Arc::new(WarmPool {
            ready: Mutex::new(VecDeque::new()),
            target,
            refill: Notify::new(),
        })
    }

    /// A ready worker if one is warm, else `None`. Dead or hung ones found on the way are killed
    /// and dropped.
    pub fn take(&self) -> Option<InferenceWorker> {
        let mut q = self.ready.lock();
        let w = std::iter::from_fn(|| q.pop_front()).find(|w| {
            if !w.is_usable() {
                w.kill();
            }
            w.is_usable()
        });
        drop(q);
        self.refill.notify_one();
        w
    }

    /// Gets a worker: warm if possible, else spawned now.
    pub async fn get(
        &self,
        sup: &Supervisor,
    ) -> Result<InferenceWorker, super::supervisor::SpawnError> {
        match self.take() {
            Some(w) => Ok(w),
            None => sup.spawn::<ToInference>().await,
        }
    }

    pub fn warm_count(&self) -> usize {
        self.ready.lock().iter().filter(|w| w.is_usable()).count()
    }

    /// Workers currently held warm (for shutdown).
    pub fn drain(&self) -> Vec<InferenceWorker> {
        self.ready.lock().drain(..).collect()
    }

    /// Keeps the pool filled; failures back off so a broken worker binary cannot spin.
    pub async fn run(
        self: Arc<Self>,
        sup: Arc<Supervisor>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let missing = {
                let mut q = self.ready.lock();
                q.retain(|w| {
                    if !w.is_usable() {
                        w.kill();
                    }
                    w.is_usable()
                });
                self.target.saturating_sub(q.len())
            };
            if missing == 0 {
                tokio::select! {
                    _ = self.refill.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            match sup.spawn::<ToInference>().await {
                Ok(w) => {
                    backoff = Duration::from_millis(100);
                    sup.registry.update(&w.id, |i| i.state = WorkerState::Warm);
                    self.ready.lock().push_back(w);
                }
                Err(e) => {
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "warm worker failed to start");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
