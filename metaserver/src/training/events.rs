//! The worker's events: relayed to every viewer (encoded once), mirrored into the hub's status so
//! a late viewer is answered at once, recorded in the run's history and pace, and told to Redis on
//! a cluster's holder.

use super::history::RunHistory;
use super::hub::TrainingHub;
use super::runs::{Outcome, RunRow};
use super::state::{episode_being_run, RedisUpdate, RunState};
use crate::outqueue::Delivery;
use ipc_proto::browser::{ErrorCode, ServerMessage, TrainingRestarted};
use ipc_proto::training::FromTraining;
use std::time::Instant;
use tracing::{info, warn};

impl TrainingHub {
    pub(super) fn on_event(&self, ev: FromTraining) {
        let arrived = Instant::now();
        match ev {
            // Frames faster than a viewer sees: the newest wins.
            FromTraining::Frame(m) => self.broadcast(&m, Delivery::Latest, arrived),
            FromTraining::Message(m) => self.on_message(m, arrived),
            FromTraining::Checkpointed { episode, path } => {
                self.state.lock().checkpoint = Some((episode, path.clone()));
                self.tell_redis(RedisUpdate::Checkpoint(path));
            }
            FromTraining::RunEnded {
                failed: Some(reason),
                ..
            } => self.fail_run(reason),
            FromTraining::RunEnded {
                failed: None,
                model_saved,
            } => {
                info!(model = ?model_saved, "training run ended");
                self.tell_redis(RedisUpdate::Finished);
                let mut s = self.state.lock();
                s.status.is_training = false;
                s.checkpoint = None;
            }
            FromTraining::Resumed { episode } => self.on_resumed(episode),
            FromTraining::Pong { .. } | FromTraining::Ready => {}
        }
    }

    fn on_message(&self, m: ServerMessage, arrived: Instant) {
        if let ServerMessage::TrainingComplete(c) = &m {
            // Written by this node's worker: offered to sessions at once.
            if let Some(name) = &c.model_saved {
                self.models.note_new(name);
            }
        }
        self.mirror(&m);
        self.announce_start(&m, arrived);
        match m {
            ServerMessage::TrainingComplete(_) => self.tell_redis(RedisUpdate::Finished),
            ServerMessage::Paused {} | ServerMessage::Resumed {} => {
                self.tell_redis(RedisUpdate::Run)
            }
            ServerMessage::StateUpdate(_) => {}
            _ => self.tell_redis(RedisUpdate::Status),
        }
    }

    /// Brings the hub's status, history and pace up to date with a message of the run (this
    /// node's worker's, or the cluster holder's).
    pub(super) fn mirror(&self, m: &ServerMessage) {
        let mut s = self.state.lock();
        let st = &mut s.status;
        match m {
            ServerMessage::TrainingStarted(t) => {
                st.is_training = true;
                st.paused = false;
                st.total_episodes = t.num_episodes;
                st.current_episode = 1;
                st.config = Some(t.config.clone());
                st.last_episode = None;
                st.best = None;
                s.run = RunState::Running;
                s.pace.start(&t.config);
                let finished = std::mem::replace(&mut s.history, RunHistory::new(t.config.clone()));
                if !finished.is_empty() {
                    s.previous = Some(finished);
                }
            }
            ServerMessage::EpisodeComplete(e) => {
                st.current_episode = episode_being_run(e.episode, st.total_episodes);
                st.last_episode = Some(e.clone());
                s.history.episode(e);
                s.pace.record(e.episode, e.length);
            }
            ServerMessage::Evaluation(e) => {
                st.best = Some(e.best);
                s.history.evaluation(e.episode, e.steps, e.reward);
            }
            ServerMessage::Paused {} => {
                st.paused = true;
                s.pace.interrupt();
            }
            ServerMessage::Resumed {} => st.paused = false,
            ServerMessage::TrainingComplete(c) => {
                st.is_training = false;
                st.paused = false;
                if c.best.is_some() {
                    st.best = c.best;
                }
                s.run = RunState::Completed;
                s.checkpoint = None;
                s.pace.stop();
                let outcome = match (c.competent, c.stopped) {
                    (true, _) => Outcome::Competent,
                    (false, true) => Outcome::Stopped,
                    (false, false) => Outcome::Completed,
                };
                let row = RunRow::of(&self.room, &s.history, s.status.best);
                let pace = s.pace.clone();
                drop(s);
                self.record_finished(row, outcome, c.model_saved.clone());
                // Small and rare (once a run): written where it is learned.
                pace.save(self.pace_file().as_ref());
            }
            _ => {}
        }
    }

    /// A run ended: kept for the board, and older runs' snapshots let go.
    fn record_finished(&self, row: RunRow, outcome: Outcome, model: Option<String>) {
        self.runs.record(row, outcome, model);
        self.prune_snapshots();
    }

    pub(super) fn fail_run(&self, reason: String) {
        self.tell_redis(RedisUpdate::Finished);
        let row = {
            let mut s = self.state.lock();
            s.status.is_training = false;
            s.status.paused = false;
            s.run = RunState::Failed;
            s.last_error = Some(reason.clone());
            s.checkpoint = None;
            RunRow::of(&self.room, &s.history, s.status.best)
        };
        self.record_finished(row, Outcome::Failed, None);
        warn!(%reason, "training run failed");
        self.announce(&ServerMessage::error(
            ErrorCode::TrainingFailed,
            format!("training failed: {reason}"),
        ));
        self.announce(&ServerMessage::TrainingStatus(Box::new(self.status())));
    }

    /// The checkpoint file may be newer than the last `Checkpointed` we heard of (the worker can
    /// die between writing it and saying so): announce where the replacement really resumed.
    fn on_resumed(&self, episode: u32) {
        let reason = {
            let mut st = self.state.lock();
            st.status.current_episode = episode_being_run(episode, st.status.total_episodes);
            st.pending_restart.take()
        };
        if let Some(reason) = reason {
            info!(
                resumed_from_episode = episode,
                "training resumed from its checkpoint"
            );
            self.announce(&ServerMessage::TrainingRestarted(TrainingRestarted {
                reason,
                resumed_from_episode: episode,
            }));
        }
    }
}
