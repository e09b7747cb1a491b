//! The hub's actor: the one task that owns the run's worker process. It takes the viewers',
//! operators' and cluster's commands in order, relays the worker's events, replaces the worker
//! when it fails, and at shutdown saves the run for the next server (or another node).

use super::hub::TrainingHub;
use super::slots::Queued;
use super::state::{HubCmd, RedisUpdate, RunState, TrainingWorker, Viewer};
use crate::client;
use crate::metrics::RestartReason;
use crate::tokens::TokenHash;
use crate::workers::budget::{RestartBudget, RestartPolicy};
use crate::workers::registry::WorkerControl;
use crate::workers::replacement::Replacement;
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::link::LinkEvent;
use ipc_proto::training::{FromTraining, ToTraining, TrainingConfig};
use std::sync::Arc;
use tracing::info;

/// The worker's next event (never, without a worker).
async fn next_event(w: &mut Option<TrainingWorker>) -> LinkEvent<FromTraining> {
    match w {
        Some(w) => w.recv().await,
        None => std::future::pending().await,
    }
}

impl TrainingHub {
    /// Runs the hub until the server stops. A run the previous server left (SIGTERM) resumes
    /// first.
    pub async fn run(self: Arc<Self>) {
        let Some(mut cmds) = self.take_commands() else {
            return;
        };
        let mut worker: Option<TrainingWorker> = None;
        let mut budget = RestartBudget::new(RestartPolicy::of(&self.sup.cfg));
        if let Some(left) = self.take_run_file() {
            // The run the previous server left holds a slot of the pool from the start (it runs
            // either way: nothing is queued yet when the server starts).
            let _ = self.slots.try_take(&self.room);
            let reason = "server restarted";
            worker = self.resume_after_restart(left, &mut budget, reason).await;
        }
        loop {
            tokio::select! {
                c = cmds.recv() => match c {
                    None => return,
                    Some(c) => self.on_command(c, &mut worker, &mut budget).await,
                },
                ev = next_event(&mut worker) => self.on_link_event(ev, &mut worker, &mut budget).await,
                _ = self.stop.cancelled() => return self.on_stop(worker).await,
            }
        }
    }

    async fn on_command(
        &self,
        cmd: HubCmd,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
    ) {
        match cmd {
            HubCmd::Start(config, v) => self.start_run(worker, budget, config, v).await,
            HubCmd::StartForwarded(config, hash) => {
                self.start_forwarded(worker, budget, config, hash).await
            }
            HubCmd::MoveQueued(start) => self.move_queued(*start).await,
            HubCmd::Control(c, v, token) => self.on_control(worker.as_ref(), c, &v, token),
            HubCmd::TakeControl(v) => self.take_control(&v),
            HubCmd::Operator(WorkerControl::Restart) => {
                let Some(w) = worker.take() else { return };
                let started = w.started;
                // Graceful: the worker checkpoints and exits; a new one resumes the run.
                self.retire(w, ToTraining::Handover).await;
                let text = "restarted by an operator";
                let r = Replacement::new(RestartReason::Operator, text, started);
                self.replace(worker, budget, r).await;
            }
            other => self.on_cluster_cmd(other, worker, budget).await,
        }
    }

    async fn on_link_event(
        &self,
        ev: LinkEvent<FromTraining>,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
    ) {
        match ev {
            LinkEvent::Event(ev) => self.on_event(ev),
            LinkEvent::Ended(end) => {
                let Some(mut w) = worker.take() else { return };
                let lost = Replacement::after(&mut w, end).await;
                // Frames the worker sent before dying still count (a checkpoint notice).
                while let Some(ev) = w.link.try_recv() {
                    self.on_event(ev);
                }
                self.replace(worker, budget, lost).await;
            }
        }
    }

    /// The server is stopping: the run is handed over (checkpointed for another node or the
    /// next server) or ended with its model saved; viewers are told to reconnect.
    async fn on_stop(&self, worker: Option<TrainingWorker>) {
        if let Some(w) = worker {
            if self.is_training() && self.cluster.is_some() {
                // The worker checkpoints; another node continues the run.
                self.retire(w, ToTraining::Handover).await;
                self.hand_over_to_cluster().await;
            } else if self.is_training() && !self.sup.cfg.no_resume_training {
                // The worker checkpoints; the next server resumes the run.
                self.retire(w, ToTraining::Handover).await;
                self.save_run_file();
            } else {
                // The worker checkpoints and saves its model on Shutdown.
                self.retire(w, ToTraining::Shutdown).await;
            }
        }
        for c in self.state.lock().viewers.values() {
            c.close(
                client::close::SERVICE_RESTART,
                "server restarting: reconnect",
            );
        }
    }

    /// A viewer's `start_training`: refused while a run is in progress or to one who may not
    /// start it; otherwise the worker (started if need be) is given the run.
    async fn start_run(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        config: Box<TrainingConfig>,
        v: Viewer,
    ) {
        if !self.may_start_now(&v, &config, worker.is_some()).await {
            return;
        }
        if !self.slots.try_take(&self.room) {
            if self.forward_start(&config, &v).await {
                return;
            }
            return self.wait_for_slot(HubCmd::Start(config, v));
        }
        let begin = |c: &TrainingConfig| self.begin_run(c, &v);
        if let Err(e) = self.launch(worker, budget, config, begin).await {
            v.client.send(&ServerMessage::error(
                ErrorCode::TrainingFailed,
                format!("cannot start the training worker: {e}"),
            ));
        }
    }

    /// Gives the run to the worker (spawned if need be), `begin` having set the hub's state for
    /// it; `Err`: the worker could not start (a cluster lease taken for this start is let go).
    pub(super) async fn launch(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        config: Box<TrainingConfig>,
        begin: impl FnOnce(&TrainingConfig),
    ) -> Result<(), String> {
        if worker.as_ref().is_none_or(|w| !w.is_usable()) {
            match self.spawn_worker().await {
                Ok(w) => *worker = Some(w),
                Err(e) => {
                    if let Some(ct) = &self.cluster {
                        ct.lease.release().await;
                    }
                    return Err(e.to_string());
                }
            }
        }
        *budget = RestartBudget::new(RestartPolicy::of(&self.sup.cfg));
        let config = self.named(config);
        begin(&config);
        if let Some(w) = worker.as_ref() {
            let _ = w.send(ToTraining::Start {
                config,
                paused: false,
            });
        }
        Ok(())
    }

    /// Every training slot is taken: the start (`Start` or `StartForwarded`) waits in the pool's
    /// queue, and the room is told its place (`rooms.rs` hands it back when a slot frees).
    pub(super) fn wait_for_slot(&self, start: HubCmd) {
        let (to, room) = (self.cmd_tx.clone(), self.room.clone());
        let position = self.slots.enqueue(Queued { room, to, start });
        self.tell_queued(position);
    }

    /// Tells the room's viewers — on every node: the start may have been forwarded here from
    /// another — their run's place in the queue.
    pub(super) fn tell_queued(&self, position: usize) {
        let m = ServerMessage::Queued(ipc_proto::browser::Queued {
            room: self.room.clone(),
            position: u32::try_from(position).unwrap_or(u32::MAX),
        });
        self.announce(&m);
        if let Some(ct) = self.cluster.as_ref().filter(|ct| !ct.is_holder()) {
            ct.publish_notice(&m.to_json_in(Some(&self.room)));
        }
    }

    /// Names what the run writes. A room's unnamed model is called after the room (rooms.md:
    /// `ROOM-…`), so the class can tell whose agent it is; the class's own runs keep the worker's
    /// `dqn-…` names. Every run's time-machine snapshots are named after its room, start and seed.
    pub(super) fn named(&self, mut config: Box<TrainingConfig>) -> Box<TrainingConfig> {
        let (net, seed) = (config.network.as_str(), config.seed);
        let stamp = crate::clock::now_secs();
        if self.room != super::hub::CLASS_ROOM && config.model_name.is_none() {
            config.model_name = Some(format!("{}-dqn-{net}-s{seed}-{stamp}", self.room));
        }
        config.snapshots = Some(format!("{}-{stamp}-s{seed}", self.room));
        config
    }

    /// No run in progress (here or, in a cluster, anywhere), and `v` may start this one.
    async fn may_start_now(&self, v: &Viewer, config: &TrainingConfig, has_worker: bool) -> bool {
        if self.is_training() && !has_worker {
            // A follower's mirror may describe a run Redis has forgotten.
            self.end_if_gone_from_cluster().await;
        }
        if self.is_training() {
            v.client
                .send(&ServerMessage::TrainingStatus(Box::new(self.status_for(v))));
            v.client.send(&ServerMessage::error(
                ErrorCode::TrainingInProgress,
                "a training run is in progress: watch it, or stop it first",
            ));
            return false;
        }
        if let Err(why) = self.may_start(v, config) {
            v.client
                .send(&ServerMessage::error(ErrorCode::OperatorsOnly, why));
            return false;
        }
        self.may_start_in_cluster(&v.client).await
    }

    /// The hub's state for a run starting now, owned by `v`.
    fn begin_run(&self, config: &TrainingConfig, v: &Viewer) {
        self.reset_for_run(config);
        self.grant_control_to_starter(v);
        self.run_begun(config);
    }

    /// The hub's state for a run another node forwarded here: its starter is there, and only
    /// the hash of the starter's control token is here.
    pub(super) fn begin_forwarded_run(&self, config: &TrainingConfig, hash: Option<TokenHash>) {
        self.reset_for_run(config);
        {
            let mut s = self.state.lock();
            (s.owner, s.control_token, s.control_hash) = (None, None, hash);
        }
        self.run_begun(config);
    }

    fn reset_for_run(&self, config: &TrainingConfig) {
        {
            let mut s = self.state.lock();
            s.status.is_training = true;
            s.status.config = Some(config.clone());
            s.status.total_episodes = config.num_episodes;
            s.status.current_episode = 1;
            s.status.last_episode = None;
            s.checkpoint = None;
            s.last_error = None;
            s.restarts = 0;
            s.run = RunState::Running;
            (s.lease_paused, s.user_paused) = (false, false);
        }
    }

    fn run_begun(&self, config: &TrainingConfig) {
        info!(
            episodes = config.num_episodes,
            network = config.network.as_str(),
            seed = config.seed,
            "training run starting"
        );
        self.tell_redis(RedisUpdate::Run);
    }
}
