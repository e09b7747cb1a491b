//! Why a worker is being replaced — one type for both kinds of worker — and the restart budget's
//! say on when its replacement may start.

use super::budget::{RestartBudget, Verdict};
use super::supervisor::WorkerHandle;
use crate::metrics::RestartReason;
use ipc_proto::link::Heartbeat;
use ipc_proto::link::LinkEnd;
use std::time::Instant;
use tracing::warn;

/// A worker that must be replaced: why, and since when it had been running (one that lived
/// `--stable-after-secs` resets the budget).
#[derive(Debug, Clone)]
pub struct Replacement {
    pub reason: RestartReason,
    /// Said to the browsers (`worker_restarted`, `training_restarted`) and to operators.
    pub text: String,
    pub started: Instant,
}

/// What the budget said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Start the replacement now (after the backoff, already waited).
    Go,
    /// Too many failures in the window: give up.
    GiveUp,
}

impl Replacement {
    pub fn new(reason: RestartReason, text: impl Into<String>, started: Instant) -> Self {
        Replacement {
            reason,
            text: text.into(),
            started,
        }
    }

    /// How a worker's link ended, as the reason to replace it. The worker is reaped first (killed
    /// if it still runs: a hung one, or one that sent a frame that is not a valid message).
    pub async fn after<C: Heartbeat>(w: &mut WorkerHandle<C>, end: LinkEnd) -> Replacement {
        let started = w.started;
        let (reason, text) = match end {
            LinkEnd::Closed => (RestartReason::Crash, w.wait_exit().await.to_string()),
            LinkEnd::Unresponsive => {
                w.kill();
                let _ = w.wait_exit().await;
                let text = "worker stopped answering heartbeats".to_owned();
                (RestartReason::Unresponsive, text)
            }
            LinkEnd::ProtocolError(e) => {
                w.kill();
                let _ = w.wait_exit().await;
                (RestartReason::ProtocolError, format!("protocol error: {e}"))
            }
        };
        warn!(worker = %w.id, pid = w.pid(), reason = %text, "worker lost");
        Replacement::new(reason, text, started)
    }

    /// Records this replacement against `budget` and waits its backoff. An operator's restart
    /// is not a failure: it costs nothing and waits for nothing.
    pub async fn wait_turn(&self, budget: &mut RestartBudget) -> Turn {
        if self.reason == RestartReason::Operator {
            return Turn::Go;
        }
        match budget.record(Instant::now(), self.started) {
            Verdict::RestartAfter(d) => {
                tokio::time::sleep(d).await;
                Turn::Go
            }
            Verdict::GiveUp => Turn::GiveUp,
        }
    }
}
