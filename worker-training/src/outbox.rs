//! What the training thread hands to the worker's event loop.
//!
//! Lifecycle messages (episode start and end, evaluations, checkpoints, the end of the run) and
//! the frames of a paced episode go through a bounded channel, in order, and are never dropped.
//! Frames faster than a viewer can be sent (`--viewer-fps`) go to a one-frame slot where the
//! newest replaces one not yet taken, so an unpaced run never waits for its viewers (protocol.md:
//! the training thread never waits).

use ipc_proto::browser::ServerMessage;
use ipc_proto::training::FromTraining;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The newest latest-wins frame not yet taken by the event loop.
#[derive(Default)]
pub struct FrameSlot {
    latest: Mutex<Option<FromTraining>>,
    pub ready: tokio::sync::Notify,
}

impl FrameSlot {
    pub fn take(&self) -> Option<FromTraining> {
        self.latest.lock().take()
    }
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<FromTraining>,
    frames: Arc<FrameSlot>,
    /// The fastest frame period a viewer is sent (`--viewer-fps`); `None`: no limit.
    viewer_period: Option<Duration>,
}

impl Outbox {
    pub fn new(
        tx: mpsc::Sender<FromTraining>,
        frames: Arc<FrameSlot>,
        viewer_fps: Option<f64>,
    ) -> Self {
        let viewer_period = viewer_fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| Duration::from_secs_f64(1.0 / f));
        Outbox {
            tx,
            frames,
            viewer_period,
        }
    }

    /// A lifecycle message, in order; a pending latest-wins frame goes first.
    pub fn send(&self, m: FromTraining) {
        if let Some(f) = self.frames.take() {
            let _ = self.tx.blocking_send(f);
        }
        let _ = self.tx.blocking_send(m);
    }

    pub fn message(&self, m: ServerMessage) {
        self.send(FromTraining::Message(m));
    }

    /// A `state_update` of a shown episode, one per `delay`: in order when a viewer can be sent
    /// that many a second (every step reaches the screen), else latest wins.
    pub fn frame(&self, m: ServerMessage, delay: Duration) {
        let in_order = !delay.is_zero() && self.viewer_period.is_none_or(|p| delay >= p);
        if in_order {
            self.message(m);
        } else {
            *self.frames.latest.lock() = Some(FromTraining::Frame(m));
            self.frames.ready.notify_one();
        }
    }
}
