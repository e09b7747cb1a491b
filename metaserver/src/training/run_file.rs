//! A run in progress when the server stopped (SIGTERM) is kept as `training-run.json` beside the
//! session store, so the next server resumes it (sessions.md); a run taken over from a lost
//! cluster node resumes the same way.

use super::history::RunHistory;
use super::hub::TrainingHub;
use super::state::{episode_being_run, RunState, TrainingWorker};
use crate::metrics::RestartReason;
use crate::resumable::{ResumableRun, RunWithCheckpoint};
use crate::workers::budget::RestartBudget;
use crate::workers::replacement::Replacement;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{info, warn};

/// The run a stopping server leaves for the next, in its hub's `keep_dir`.
pub const RUN_FILE: &str = "training-run.json";

impl TrainingHub {
    fn run_file(&self) -> Option<PathBuf> {
        self.keep_dir.as_ref().map(|d| d.join(RUN_FILE))
    }

    /// The run as another server would continue it (`None` before a run has a configuration).
    pub(super) fn resumable(&self, handed_over: bool) -> Option<ResumableRun> {
        let s = self.state.lock();
        Some(ResumableRun {
            config: s.status.config.clone()?,
            paused: s.status.paused,
            episodes_completed: s.checkpoint.as_ref().map_or(0, |c| c.0),
            control_hash: s.control_hash.clone(),
            handed_over,
        })
    }

    /// Writes the run in progress for the next server (after its worker checkpointed).
    pub(super) fn save_run_file(&self) {
        let checkpoint = self.state.lock().checkpoint.as_ref().map(|c| c.1.clone());
        let (Some(checkpoint), Some(run)) = (checkpoint, self.resumable(true)) else {
            warn!("no checkpoint of the run in progress: it cannot be resumed");
            return;
        };
        let record = RunWithCheckpoint {
            checkpoint: Some(checkpoint),
            run,
        };
        let Some(path) = self.run_file() else {
            return;
        };
        if let Some(dir) = path.parent() {
            // A room's own directory (`rooms/NAME/`) is made when it first keeps a run.
            let _ = std::fs::create_dir_all(dir);
        }
        let bytes = serde_json::to_vec_pretty(&record).expect("a record serialises");
        match hamlet_onnx::write_atomic(&path, &bytes) {
            Ok(()) => info!(
                episode = record.run.episodes_completed,
                "training run saved for the next server"
            ),
            Err(e) => warn!(error = %e, "could not save the training run for the next server"),
        }
    }

    /// Reads and removes the run a previous server left; `None` if there is none, it is
    /// unreadable or invalid, or `--no-resume-training` says not to resume.
    pub(super) fn take_run_file(&self) -> Option<RunWithCheckpoint> {
        let path = self.run_file()?;
        let bytes = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        if self.sup.cfg.no_resume_training {
            info!("a training run was in progress when the server stopped; not resumed (--no-resume-training)");
            return None;
        }
        match serde_json::from_slice::<RunWithCheckpoint>(&bytes) {
            Ok(r) if r.run.config.validate().is_ok() => Some(r),
            _ => {
                warn!(file = %path.display(), "unreadable training run record ignored");
                None
            }
        }
    }

    /// Continues another server's run from its checkpoint; viewers get `training_restarted`
    /// (with `reason`) when the worker says where it resumed.
    pub(super) async fn resume_after_restart(
        &self,
        left: RunWithCheckpoint,
        budget: &mut RestartBudget,
        reason: &str,
    ) -> Option<TrainingWorker> {
        let RunWithCheckpoint { checkpoint, run: r } = left;
        {
            let mut s = self.state.lock();
            s.status.is_training = true;
            s.status.paused = r.paused;
            s.status.total_episodes = r.config.num_episodes;
            s.status.current_episode =
                episode_being_run(r.episodes_completed, r.config.num_episodes);
            s.status.config = Some(r.config.clone());
            s.checkpoint = checkpoint.map(|c| (r.episodes_completed, c));
            s.control_hash = r.control_hash;
            s.run = RunState::Running;
            s.history = RunHistory::new(r.config.clone());
        }
        info!(
            episode = r.episodes_completed,
            reason, "resuming a training run left by another server"
        );
        // Not a failure: it costs the budget nothing.
        let lost = Replacement::new(RestartReason::Operator, reason, Instant::now());
        self.resume_run(budget, lost).await
    }
}
