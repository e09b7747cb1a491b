//! The run's worker process: spawned and registered, replaced when it fails (from the last
//! checkpoint, within the restart budget; an operator's restart is a hand-over and costs
//! nothing), and retired.

use super::hub::TrainingHub;
use super::state::{HubCmd, TrainingWorker};
use crate::metrics::RestartReason;
use crate::workers::budget::RestartBudget;
use crate::workers::registry::{WorkerControl, WorkerState};
use crate::workers::replacement::{Replacement, Turn};
use ipc_proto::browser::{ServerMessage, TrainingRestarted};
use ipc_proto::training::ToTraining;
use ipc_proto::WorkerKind;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

impl TrainingHub {
    pub(super) async fn spawn_worker(&self) -> Result<TrainingWorker, String> {
        let w = self
            .sup
            .spawn::<ToTraining>()
            .await
            .map_err(|e| e.to_string())?;
        self.sup.registry.update(&w.id, |i| {
            i.state = WorkerState::Active;
            i.session = Some("training".into());
        });
        self.sup.registry.set_control(&w.id, self.operator_sender());
        self.state.lock().worker = Some((w.id.clone(), w.pid()));
        Ok(w)
    }

    /// Operator restarts arrive through the registry; forwarded into the hub's queue.
    fn operator_sender(&self) -> mpsc::Sender<WorkerControl> {
        let (tx, mut rx) = mpsc::channel::<WorkerControl>(2);
        let cmd = self.cmd_tx.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if cmd.send(HubCmd::Operator(c)).await.is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// After the worker is gone: replace it if a run is in progress.
    pub(super) async fn replace(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        lost: Replacement,
    ) {
        self.sup.metrics.restart(WorkerKind::Training, lost.reason);
        self.state.lock().worker = None;
        *worker = None;
        if self.is_training() {
            warn!(reason = %lost.text, "training worker replaced mid-run");
            *worker = self.resume_run(budget, lost).await;
        }
    }

    /// What a replacement worker is told: resume from the last checkpoint (falling back to the
    /// run's configuration if the file is unusable), or start the configuration afresh.
    fn resume_message(&self) -> Option<(ToTraining, bool)> {
        let s = self.state.lock();
        let config = s.status.config.clone().map(Box::new);
        let paused = s.status.paused;
        match (&s.checkpoint, config) {
            (Some((_, path)), config) => Some((
                ToTraining::ResumeFrom {
                    checkpoint: path.clone(),
                    config,
                    paused,
                },
                true,
            )),
            (None, Some(config)) => Some((ToTraining::Start { config, paused }, false)),
            (None, None) => None,
        }
    }

    /// Replaces a lost (or handed-over) worker mid-run. Crashes count against the budget; an
    /// operator's restart does not.
    pub(super) async fn resume_run(
        &self,
        budget: &mut RestartBudget,
        mut lost: Replacement,
    ) -> Option<TrainingWorker> {
        loop {
            if lost.wait_turn(budget).await == Turn::GiveUp {
                let text = &lost.text;
                let why = format!("the training worker failed repeatedly; last exit: {text}");
                self.fail_run(why);
                return None;
            }
            let w = match self.spawn_worker().await {
                Ok(w) => w,
                Err(e) if lost.reason != RestartReason::Operator => {
                    lost = Replacement::new(RestartReason::StartFailed, e, Instant::now());
                    continue;
                }
                Err(e) => {
                    self.fail_run(e);
                    return None;
                }
            };
            match self.hand_run_to(&w, &lost) {
                Ok(()) => return Some(w),
                Err(again) => lost = again,
            }
        }
    }

    /// Gives the run to a new worker (from its checkpoint, paused if it was) and tells viewers;
    /// `Err` when the worker is already gone.
    fn hand_run_to(&self, w: &TrainingWorker, lost: &Replacement) -> Result<(), Replacement> {
        let restarts = {
            let mut s = self.state.lock();
            s.restarts += 1;
            s.restarts
        };
        let text = lost.text.clone();
        self.sup.registry.update(&w.id, |i| {
            i.last_exit = Some(text);
            i.restarts = restarts;
        });
        let Some((msg, from_checkpoint)) = self.resume_message() else {
            self.fail_run("no configuration to resume".into());
            return Ok(());
        };
        // A paused run's replacement starts paused (said in `msg`, so nothing runs meanwhile).
        if w.send(msg).is_err() {
            let text = "replacement worker closed its socket";
            return Err(Replacement::new(RestartReason::Crash, text, w.started));
        }
        info!(worker = %w.id, pid = w.pid(), "training worker restarted");
        if from_checkpoint {
            // Announced when the worker says which episode it resumed after.
            self.state.lock().pending_restart = Some(lost.text.clone());
        } else {
            self.announce(&ServerMessage::TrainingRestarted(TrainingRestarted {
                reason: lost.text.clone(),
                resumed_from_episode: 0,
            }));
        }
        Ok(())
    }

    /// Ends a worker gracefully with `how` (`Shutdown` saves the run's model and ends it;
    /// `Handover` only checkpoints); its last notices are mirrored and broadcast.
    pub(super) async fn retire(&self, w: TrainingWorker, how: ToTraining) {
        let grace = Duration::from_millis(self.sup.cfg.shutdown_grace_ms);
        w.retire(how, grace, |ev| self.on_event(ev)).await;
    }
}
