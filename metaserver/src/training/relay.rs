//! A cluster follower's side of the run: the holder's frames (from Redis) relayed to this node's
//! viewers — parsed, checked and encoded again here, so nothing written into Redis reaches a
//! browser as it was sent — and the holder's status for viewers who just arrived.

use super::hub::TrainingHub;
use super::state::{HubCmd, RunState};
use crate::outqueue::Delivery;
use axum::extract::ws::Utf8Bytes;
use ipc_proto::browser::{ServerMessage, TrainingStatus};
use ipc_proto::training::RunControl;
use std::time::Instant;
use tracing::warn;

/// A relayed frame larger than this is not one of ours.
const MAX_REMOTE_FRAME: usize = 256 * 1024;

/// A training frame from another node, if it is one every viewer may be sent: parsed, bounded,
/// never a secret (a `training_started` carrying a control token is the starter's alone) and with
/// a valid configuration.
fn checked_remote_frame(text: &str) -> Option<ServerMessage> {
    if text.len() > MAX_REMOTE_FRAME {
        return None;
    }
    let m: ServerMessage = serde_json::from_str(text).ok()?;
    let ok = match &m {
        ServerMessage::TrainingStarted(t) => {
            t.control_token.is_none() && t.config.validate().is_ok()
        }
        ServerMessage::TrainingStatus(st) => {
            st.config.as_ref().is_none_or(|c| c.validate().is_ok())
        }
        ServerMessage::StateUpdate(_)
        | ServerMessage::EpisodeStart(_)
        | ServerMessage::EpisodeComplete(_)
        | ServerMessage::Evaluation(_)
        | ServerMessage::TrainingComplete(_)
        | ServerMessage::TrainingRestarted(_)
        | ServerMessage::Paused {}
        | ServerMessage::Resumed {}
        | ServerMessage::Error(_) => true,
        // A forwarded start waiting for a slot on the node it went to (`forward.rs`).
        ServerMessage::Queued(q) => crate::validate::room_name(&q.room).is_some(),
        _ => false,
    };
    ok.then_some(m)
}

impl TrainingHub {
    /// Cluster holder: a command a viewer on another node sent (checked there).
    pub fn remote_command(&self, c: RunControl) {
        if self.cmd_tx.try_send(HubCmd::Remote(c)).is_err() {
            warn!("training command from another node dropped: the hub is busy");
        }
    }

    /// Cluster: a frame the holder published, for this node's viewers; lifecycle messages update
    /// this node's mirror so its late joiners and `/api/status` agree with the holder.
    pub fn relay_remote(&self, text: &str) {
        let Some(m) = checked_remote_frame(text) else {
            warn!("a frame on the training channel is not one a viewer may get; dropped");
            return;
        };
        self.mirror(&m);
        if let ServerMessage::TrainingStarted(_) = m {
            // Started elsewhere: nobody here owns it — unless this node forwarded the start
            // (`forward.rs`): then its starter is here, and gets its control token now.
            if self.state.lock().control_token.is_some() {
                return self.announce_start(&m, Instant::now());
            }
            self.state.lock().owner = None;
        }
        let delivery = match m {
            ServerMessage::StateUpdate(_) => self.remote_frame_delivery(),
            _ => Delivery::Always,
        };
        self.broadcast_local(
            Utf8Bytes::from(m.to_json_in(Some(&self.room))),
            delivery,
            Instant::now(),
        );
    }

    /// The holder's frames arrive as text, without the worker's word on their order; the run's
    /// `step_delay` says it (as the holder's worker decided, `outbox.rs`): a viewer can be sent
    /// every step when it is no faster than `--viewer-fps`.
    fn remote_frame_delivery(&self) -> Delivery {
        let delay = self
            .state
            .lock()
            .status
            .config
            .as_ref()
            .map_or(0.0, |c| c.step_delay);
        let fps = self.sup.cfg.viewer_fps;
        if delay > 0.0 && (fps <= 0.0 || delay >= 1.0 / fps) {
            Delivery::Droppable
        } else {
            Delivery::Latest
        }
    }

    /// Cluster follower: the holder's latest status, for a viewer who just arrived here.
    pub(super) async fn refresh_from_cluster(&self) {
        let Some(ct) = self.cluster.as_ref().filter(|c| !c.is_holder()) else {
            return;
        };
        let Ok(Some(json)) = ct.status().await else {
            return;
        };
        let st = serde_json::from_str::<TrainingStatus>(&json)
            .ok()
            .filter(|st| st.config.as_ref().is_none_or(|c| c.validate().is_ok()));
        if let Some(st) = st {
            let mut s = self.state.lock();
            s.run = match (st.is_training, s.run) {
                (true, _) => RunState::Running,
                (false, RunState::Running) => RunState::Completed,
                (false, other) => other,
            };
            s.status = st;
        }
    }
}
