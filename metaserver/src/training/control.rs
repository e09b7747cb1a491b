//! Who may start the run and who may control it (protocol.md): the viewer who started it, anyone
//! holding its control token, and operators — who may also take control, and on a server started
//! with `--start-training operators` are the only ones who start runs.

use super::hub::TrainingHub;
use super::state::{HubCmd, RedisUpdate, TrainingWorker, Viewer};
use crate::tokens::{new_token, TokenHash};
use ipc_proto::browser::{ControlGranted, ErrorCode, ServerMessage};
use ipc_proto::training::{RunControl, ToTraining, TrainingConfig};
use tracing::info;

/// The refusal of run control to a viewer who may not.
pub(super) fn not_run_owner() -> ServerMessage {
    ServerMessage::error(
        ErrorCode::NotRunOwner,
        "only the person who started this run (or an operator) can pause, resume or stop it",
    )
}

/// The answer while the cluster's store cannot be reached.
pub(super) fn store_unavailable() -> ServerMessage {
    ServerMessage::error(
        ErrorCode::StoreUnavailable,
        "the cluster's shared store is unreachable; try again in a moment",
    )
}

impl TrainingHub {
    /// A viewer's pause, resume or stop: carried out if it may give it, else refused.
    pub(super) fn on_control(
        &self,
        worker: Option<&TrainingWorker>,
        c: RunControl,
        v: &Viewer,
        token: Option<String>,
    ) {
        let follower = self.cluster.as_ref().is_some_and(|ct| !ct.is_holder());
        if c == RunControl::Stop && !self.is_training() && self.withdraw_queued(v) {
            return;
        }
        let refusal = match worker {
            _ if !self.is_training() => {
                ServerMessage::error(ErrorCode::NotTraining, "no training run is in progress")
            }
            None if follower => return self.forward_control(c, v, token),
            _ if !self.may_control(v, token.as_deref()) => not_run_owner(),
            Some(w) => return self.user_control(w, c, v),
            None => ServerMessage::error(
                ErrorCode::NotTraining,
                "the training worker is being replaced; try again in a moment",
            ),
        };
        v.client.send(&refusal);
    }

    /// `stop` of a start still waiting for a slot, by its starter or an operator: it leaves the
    /// queue and the room is told there is no run.
    fn withdraw_queued(&self, v: &Viewer) -> bool {
        let mine = |start: &HubCmd| matches!(start, HubCmd::Start(_, by) if by.id == v.id);
        if !self
            .slots
            .withdraw(&self.room, |start| v.operator || mine(start))
        {
            return false;
        }
        self.announce(&ServerMessage::TrainingStatus(Box::new(self.status())));
        true
    }

    /// May `v` (with `token`, if it sent one) pause, resume or stop the current run?
    fn may_control(&self, v: &Viewer, token: Option<&str>) -> bool {
        let s = self.state.lock();
        v.operator
            || s.owner == Some(v.id)
            || matches!((token, &s.control_hash), (Some(t), Some(want)) if TokenHash::of(t).matches(want))
    }

    /// A pause, resume or stop from someone allowed to give it. While the lease is unreachable
    /// the run stays paused whatever its user asks (it resumes by itself when it can).
    fn user_control(&self, w: &TrainingWorker, c: RunControl, v: &Viewer) {
        let lease_paused = {
            let mut s = self.state.lock();
            match c {
                RunControl::Pause => s.user_paused = true,
                RunControl::Resume => s.user_paused = false,
                RunControl::Stop => {}
            }
            s.lease_paused
        };
        if lease_paused && c == RunControl::Resume {
            v.client.send(&store_unavailable());
            return;
        }
        let _ = w.send(ToTraining::Control(c));
    }

    /// Who may start which run: `--start-training operators` keeps runs for operators;
    /// `--max-student-episodes` bounds the runs of everyone else.
    pub(super) fn may_start(&self, v: &Viewer, c: &TrainingConfig) -> Result<(), String> {
        let cfg = &self.sup.cfg;
        if v.operator {
            return Ok(());
        }
        if cfg.only_operators_start() {
            return Err(
                "only the teacher (an operator) can start training runs on this server".into(),
            );
        }
        if c.num_episodes > cfg.max_student_episodes {
            return Err(format!(
                "runs started by students are limited to {} episodes on this server \
                     (--max-student-episodes); ask the teacher for a longer one",
                cfg.max_student_episodes
            ));
        }
        Ok(())
    }

    /// The run's owner from now on is `v`, with a new control token (given to it in its
    /// `training_started`); only the token's hash is kept.
    pub(super) fn grant_control_to_starter(&self, v: &Viewer) {
        let mut s = self.state.lock();
        s.owner = Some(v.id);
        let token = new_token();
        s.control_hash = Some(TokenHash::of(&token));
        s.control_token = Some(token);
    }

    /// An operator takes the run over: a new control token for its connection; the previous
    /// holder's token no longer controls it.
    pub(super) fn take_control(&self, v: &Viewer) {
        if !v.operator {
            v.client.send(&ServerMessage::error(
                ErrorCode::OperatorsOnly,
                "only an operator (the teacher) can take control of a run",
            ));
            return;
        }
        if !self.is_training() {
            v.client.send(&ServerMessage::error(
                ErrorCode::NotTraining,
                "no training run is in progress",
            ));
            return;
        }
        let token = new_token();
        let previous = {
            let mut s = self.state.lock();
            s.control_hash = Some(TokenHash::of(&token));
            s.control_token = None;
            let previous = s.owner.replace(v.id);
            previous.and_then(|id| s.viewers.get(&id).cloned().map(|c| (id, c)))
        };
        self.tell_redis(RedisUpdate::Run);
        info!("an operator took control of the training run");
        v.client
            .send(&ServerMessage::ControlGranted(ControlGranted {
                control_token: token,
            }));
        // The previous holder's page learns at once that its controls no longer work.
        if let Some((_, c)) = previous.filter(|(id, _)| *id != v.id) {
            let mut st = self.status();
            st.can_control = Some(false);
            c.send(&ServerMessage::TrainingStatus(Box::new(st)));
        }
    }
}
