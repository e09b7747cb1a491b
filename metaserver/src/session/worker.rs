//! A session's worker process: getting one (warm if possible) and giving it the session, relaying
//! the owner's numbered commands to it and its events back, replacing it within the restart
//! budget, and retiring it.

use super::task::SessionTask;
use crate::client::close;
use crate::metrics::RestartReason;
use crate::workers::pool::InferenceWorker;
use crate::workers::registry::WorkerState;
use crate::workers::replacement::{Replacement, Turn};
use crate::workers::supervisor::WORKER_QUEUE;
use ipc_proto::browser::{ErrorCode, ServerMessage, WorkerRestarted};
use ipc_proto::inference::{
    EpisodePhase, FromInference, SessionCommand, SessionSnapshot, SessionStart, StepProgress,
    ToInference,
};
use ipc_proto::link::SendError;
use ipc_proto::WorkerKind;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// At most this many unacknowledged commands are kept (more than a worker's queue holds).
const MAX_UNACKED: usize = 2 * WORKER_QUEUE;

impl SessionTask {
    /// Gets a worker (warm if possible) and gives it this session. `replacing` says why the
    /// previous worker went; every failure on the way counts against the budget, except an
    /// operator's restart. `None` when the budget is spent (the browsers were told).
    pub(super) async fn start_worker(
        &mut self,
        mut replacing: Option<Replacement>,
    ) -> Option<InferenceWorker> {
        loop {
            if let Some(r) = &replacing {
                if !self.allow_restart(r).await {
                    return None;
                }
            }
            let w = match self.sessions.pool.get(&self.sessions.sup).await {
                Ok(w) => w,
                Err(e) => {
                    let reason = RestartReason::StartFailed;
                    replacing = Some(Replacement::new(reason, e.to_string(), Instant::now()));
                    continue;
                }
            };
            if !self.hand_over(&w) {
                w.kill();
                let text = "worker closed its socket on start";
                replacing = Some(Replacement::new(RestartReason::Crash, text, w.started));
                continue;
            }
            self.adopt(&w, replacing.as_ref());
            // A new worker has computed nothing ahead, and counts its steps from 0.
            self.pacer.reset();
            return Some(w);
        }
    }

    /// Counts a restart; waits its backoff, or ends the session when the budget is spent.
    async fn allow_restart(&mut self, r: &Replacement) -> bool {
        if r.reason != RestartReason::StartFailed {
            self.sessions
                .metrics
                .restart(WorkerKind::Inference, r.reason);
        }
        self.sessions
            .live
            .update_row(&self.ident.token_hash, |s| s.restarts += 1);
        if r.wait_turn(&mut self.budget).await == Turn::Go {
            return true;
        }
        warn!(session = %self.id(), last_exit = %r.text, "restart budget spent: closing session");
        let c = &self.sessions.cfg;
        let e = ServerMessage::error(
            ErrorCode::WorkerFailed,
            format!(
                "the worker behind this session failed {} times in {} s; giving up. Last exit: {}",
                c.max_restarts + 1,
                c.restart_window_secs,
                r.text
            ),
        );
        for client in self.clients() {
            client.send(&e);
            client.close(close::INTERNAL, "worker keeps failing");
        }
        false
    }

    fn start_message(&self) -> ToInference {
        ToInference::Start(Box::new(SessionStart {
            session_id: self.ident.id.clone(),
            model: self.sessions.models.default_model(),
            max_steps: self.sessions.cfg.max_steps,
            snapshot: self.snapshot.clone(),
            // The first worker of this task introduces the session (`connected`; for a session
            // back from the store, its current frame too); replacements do not.
            announce: !self.announced,
            seed: self.ident.seed,
        }))
    }

    /// Gives the new worker the session, then every command its predecessor had not confirmed,
    /// in order. False if the worker's queue is already closed.
    fn hand_over(&self, w: &InferenceWorker) -> bool {
        w.send(self.start_message()).is_ok()
            && self.unacked.iter().all(|(seq, c)| {
                let m = ToInference::Command {
                    seq: *seq,
                    command: c.clone(),
                };
                w.send(m).is_ok()
            })
    }

    /// Registers the worker as this session's and tells the browsers, if this is a replacement.
    fn adopt(&mut self, w: &InferenceWorker, replacing: Option<&Replacement>) {
        let registry = &self.sessions.sup.registry;
        registry.update(&w.id, |i| {
            i.state = WorkerState::Active;
            i.session = Some(self.ident.id.clone());
            i.restarts = self.budget.total;
            // The row of the worker that died is gone with it; its successor says why.
            i.last_exit = replacing.map(|r| r.text.clone());
        });
        registry.set_control(&w.id, self.control_tx.clone());
        self.sessions.live.update_row(&self.ident.token_hash, |s| {
            s.worker_id = Some(w.id.clone());
            s.worker_pid = Some(w.pid());
        });
        if let (Some(r), true) = (replacing, self.announced) {
            info!(session = %self.id(), worker = %w.id, pid = w.pid(), "worker restarted");
            // Without a snapshot yet, the session restarts at its beginning.
            let (episode, step) = self
                .snapshot
                .as_ref()
                .map_or((1, 0), |s| (s.episode, s.world.step));
            let m = ServerMessage::WorkerRestarted(WorkerRestarted {
                reason: r.text.clone(),
                resumed_episode: episode,
                resumed_step: step,
            });
            self.fan_out(&m, Instant::now());
        }
        self.announced = true;
    }

    /// Before a command or a probe: the worker takes back the steps computed past the last one
    /// released, so what follows acts on the step the browsers last saw.
    pub(super) fn take_back(&mut self, w: &InferenceWorker) -> Result<(), SendError> {
        let Some(m) = self.pacer.take_back() else {
            return Ok(());
        };
        w.send(m)?;
        self.pacer.took_back();
        Ok(())
    }

    /// Asks the worker for more steps when the session plays (or is between episodes) and the
    /// pacer runs low.
    fn keep_paced(&mut self, w: &InferenceWorker) {
        let wanted = self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.playing || s.phase == EpisodePhase::Ended);
        if let Some(m) = self.pacer.ask(wanted) {
            if w.send(m).is_err() {
                self.pacer.not_asked();
            }
        }
    }

    /// A message from the worker: steps computed ahead go to the pacer, the rest is handled now.
    pub(super) fn on_worker_event(&mut self, w: &InferenceWorker, ev: FromInference) {
        match ev {
            FromInference::Ahead(a) => self.pacer.accept(*a),
            ev => self.on_event(ev),
        }
        self.keep_paced(w);
    }

    /// The pacer's timer fired: the next step is shown.
    pub(super) fn release_due(&mut self, w: &InferenceWorker) {
        if let Some(step) = self.pacer.release(tokio::time::Instant::now()) {
            if step.fell_behind {
                self.sessions
                    .metrics
                    .paced_fell_behind
                    .fetch_add(1, Relaxed);
            }
            for ev in step.events {
                self.on_event(ev);
            }
        }
        self.keep_paced(w);
    }

    /// Numbers an owner's command and queues it for the worker (kept until a snapshot confirms it).
    pub(super) fn forward(&mut self, w: &InferenceWorker, cmd: SessionCommand) {
        self.last_seq += 1;
        let seq = self.last_seq;
        let sent = self.take_back(w).and_then(|()| {
            w.send(ToInference::Command {
                seq,
                command: cmd.clone(),
            })
        });
        if sent.is_ok() && cmd != SessionCommand::Status {
            if self.unacked.len() == MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back((seq, cmd));
        }
        if sent == Err(SendError::Full) {
            let quiet = self
                .last_busy_notice
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
            if let (false, Some(o)) = (quiet, &self.owner) {
                self.last_busy_notice = Some(Instant::now());
                o.client.send(&ServerMessage::error(
                    ErrorCode::RateLimited,
                    "the session is busy: too many commands in flight; excess commands are dropped",
                ));
            }
        }
        // A closed queue: the link's end reports why.
    }

    pub(super) fn on_event(&mut self, ev: FromInference) {
        match ev {
            FromInference::Message(ServerMessage::Connected(c)) => self.greet(c),
            // Answers to the owner's own commands go to the owner only.
            FromInference::Message(
                m @ (ServerMessage::Error(_) | ServerMessage::SessionStatus(_)),
            ) => {
                if let Some(o) = &self.owner {
                    o.client.relay(&m, Instant::now());
                }
            }
            FromInference::Message(m) => self.fan_out(&m, Instant::now()),
            FromInference::State(u) => self.fan_out(&ServerMessage::StateUpdate(u), Instant::now()),
            FromInference::Stepped(s) => {
                let (frame, progress) = s.into_parts();
                self.fan_out(&ServerMessage::StateUpdate(Box::new(frame)), Instant::now());
                self.on_progress(&progress);
            }
            FromInference::Snapshot(s) => self.on_snapshot(*s),
            FromInference::Probed { id, answer } => self.answer_probe(id, answer),
            // Steps computed ahead reach the pacer first (`on_worker_event`); these are a retiring
            // worker's, never shown: the session stays at the last step released.
            FromInference::Pong { .. } | FromInference::Ready | FromInference::Ahead(_) => {}
            FromInference::Fatal { reason } => {
                warn!(session = %self.id(), %reason, "worker reported a fatal error")
            }
        }
    }

    /// A step: what it changed, applied to the last snapshot (a worker sends one before its
    /// first step, so there always is one).
    fn on_progress(&mut self, p: &StepProgress) {
        let Some(s) = self.snapshot.as_mut() else {
            warn!(session = %self.id(), "a step before the session's first snapshot: not kept");
            return;
        };
        s.advance(p);
        self.sessions.live.update_row(&self.ident.token_hash, |i| {
            i.episode = p.episode;
            i.step = p.world.step;
            i.cumulative_reward = p.cumulative_reward;
        });
        self.confirm_applied(p.commands_applied);
        self.dirty = true;
    }

    /// Commands up to `applied` need no replay to a replacement worker any more.
    fn confirm_applied(&mut self, applied: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= applied) {
            self.unacked.pop_front();
        }
    }

    fn on_snapshot(&mut self, s: SessionSnapshot) {
        self.sessions.live.update_row(&self.ident.token_hash, |i| {
            // Compared first: it seldom changes, and this runs for every frame.
            if i.model != s.model {
                i.model = s.model.clone();
            }
            i.episode = s.episode;
            i.step = s.world.step;
            i.playing = s.playing;
            i.speed = s.speed;
            i.cumulative_reward = s.cumulative_reward;
        });
        self.confirm_applied(s.commands_applied);
        self.snapshot = Some(s);
        self.pacer.session_changed();
        self.dirty = true;
    }

    /// Ends a worker gracefully, relaying what it still sends.
    pub(super) async fn retire(&mut self, w: InferenceWorker) {
        let grace = Duration::from_millis(self.sessions.cfg.shutdown_grace_ms);
        self.retire_within(w, grace).await;
    }

    /// Ends a worker, killing it if it has not stopped within `grace`.
    pub(super) async fn retire_within(&mut self, w: InferenceWorker, grace: Duration) {
        w.retire(ToInference::Shutdown, grace, |ev| self.on_event(ev))
            .await;
    }
}
