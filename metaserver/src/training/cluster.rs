//! The run in a cluster (cluster.md): only the lease holder runs the worker. The holder tells
//! Redis what changed (in order, by one task: the hub never waits for Redis) and keeps its lease;
//! a node that finds the lease free with a run recorded adopts the run from its last checkpoint;
//! a follower forwards its viewers' checked commands to the holder.

use super::control::{not_run_owner, store_unavailable};
use super::hub::TrainingHub;
use super::state::{HubCmd, RedisUpdate, TrainingWorker, Viewer};
use crate::client::Client;
use crate::cluster::lease::RENEW_EVERY;
use crate::cluster::training::{AbandonedRun, ClusterTraining};
use crate::resumable::RunWithCheckpoint;
use crate::workers::budget::RestartBudget;
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::training::{RunControl, ToTraining};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Starts a hub's part in the cluster — publishing its frames, telling Redis its run, keeping
/// or taking over its lease, relaying the holder's frames and commands — until `stop`.
pub fn start_tasks(hub: &Arc<TrainingHub>, ct: Arc<ClusterTraining>, stop: CancellationToken) {
    tokio::spawn(ct.clone().publisher(stop.clone()));
    tokio::spawn(hub.clone().sharer(ct.clone()));
    tokio::spawn(hub.clone().lease_keeper(ct.clone()));
    let (frames_to, commands_to) = (hub.clone(), hub.clone());
    tokio::spawn(ct.subscriber(
        move |text| frames_to.relay_remote(text),
        move |c| commands_to.remote_command(c),
        stop,
    ));
}

/// Updates for Redis waiting for the sharer.
const TO_REDIS_QUEUE: usize = 256;

impl TrainingHub {
    /// Queues `what` for Redis, on a cluster's holder (nothing otherwise).
    pub(super) fn tell_redis(&self, what: RedisUpdate) {
        if let (Some(ct), Some(tx)) = (&self.cluster, self.to_redis.lock().as_ref()) {
            if ct.is_holder() && tx.try_send(what).is_err() {
                warn!("training updates for redis are backing up; one skipped");
            }
        }
    }

    /// Cluster: carries out the holder's [`RedisUpdate`]s in order.
    pub async fn sharer(self: Arc<Self>, ct: Arc<ClusterTraining>) {
        let (tx, mut rx) = mpsc::channel(TO_REDIS_QUEUE);
        *self.to_redis.lock() = Some(tx);
        loop {
            // A closed room's updates end with it (the server's stop is its stop's parent).
            let what = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => return },
                _ = self.stop.cancelled() => return,
            };
            let status = || serde_json::to_string(&self.status()).expect("serialises");
            match what {
                RedisUpdate::Status => ct.set_status(status()).await,
                RedisUpdate::Run => {
                    if let Some(r) = self.resumable(false) {
                        ct.save_run(&r).await;
                    }
                    ct.set_status(status()).await;
                }
                RedisUpdate::Checkpoint(path) => {
                    if let Some(r) = self.resumable(false) {
                        ct.save_checkpoint(&r, std::path::Path::new(&path)).await;
                    }
                }
                RedisUpdate::Finished => {
                    ct.set_status(status()).await;
                    ct.finish_run().await;
                }
            }
        }
    }

    /// Cluster: renews the lease while holding it; otherwise adopts a run whose holder is gone.
    pub async fn lease_keeper(self: Arc<Self>, ct: Arc<ClusterTraining>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unreachable = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let cmd = if ct.is_holder() {
                match ct.lease.renew().await {
                    Ok(true) if unreachable => Some(HubCmd::LeaseReachable(true)),
                    Ok(true) => None,
                    Ok(false) => Some(HubCmd::LeaseLost),
                    Err(_) if !unreachable => Some(HubCmd::LeaseReachable(false)),
                    Err(_) => None,
                }
            } else if self.slots.has_free(&self.room) {
                // A run whose holder is gone is taken over only with a free training slot:
                // otherwise it waits, queued behind this node's runs, for one to end.
                match ct.take_abandoned().await {
                    Ok(Some(run)) => Some(HubCmd::Adopt(Box::new(run))),
                    _ => None,
                }
            } else {
                None
            };
            match &cmd {
                Some(HubCmd::LeaseReachable(r)) => unreachable = !*r,
                Some(HubCmd::LeaseLost) => unreachable = false,
                _ => {}
            }
            if let Some(c) = cmd {
                let _ = self.cmd_tx.send(c).await;
            }
        }
    }

    /// The cluster's commands to the hub's actor (never sent on one machine).
    pub(super) async fn on_cluster_cmd(
        &self,
        cmd: HubCmd,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
    ) {
        match cmd {
            HubCmd::Remote(c) => {
                if let Some(w) = worker.as_ref() {
                    let _ = w.send(ToTraining::Control(c));
                }
            }
            HubCmd::Adopt(run) if worker.is_none() => *worker = self.adopt(*run, budget).await,
            HubCmd::Adopt(_) => warn!("took the training lease while running a worker"),
            HubCmd::LeaseLost => {
                if let Some(mut w) = worker.take() {
                    // Another node continues the run: nothing of this worker's may be saved.
                    warn!(worker = %w.id, "training lease lost: stopping this node's worker");
                    w.kill();
                    let _ = w.wait_exit().await;
                    self.state.lock().worker = None;
                }
                self.state.lock().lease_paused = false;
                self.end_if_gone_from_cluster().await;
            }
            HubCmd::LeaseReachable(reachable) => self.on_lease_reachable(worker, reachable),
            HubCmd::Start(..)
            | HubCmd::StartForwarded(..)
            | HubCmd::MoveQueued(_)
            | HubCmd::Control(..)
            | HubCmd::TakeControl(_)
            | HubCmd::Operator(_) => {}
        }
    }

    /// The holder's lease cannot be renewed (pause the run) or can again (resume it). A pause
    /// for a lost lease is the lease's: it never undoes, nor is undone by, a pause its user asked
    /// for.
    fn on_lease_reachable(&self, worker: &Option<TrainingWorker>, reachable: bool) {
        let c = {
            let mut s = self.state.lock();
            let user_paused = s.status.paused && !s.lease_paused;
            match (reachable, s.lease_paused) {
                (false, false) if !user_paused => {
                    s.lease_paused = true;
                    Some(RunControl::Pause)
                }
                (true, true) => {
                    s.lease_paused = false;
                    (!s.user_paused).then_some(RunControl::Resume)
                }
                _ => None,
            }
        };
        if let (Some(w), Some(c)) = (worker.as_ref(), c) {
            warn!(?c, "training lease renewal: redis reachable = {reachable}");
            let _ = w.send(ToTraining::Control(c));
        }
    }

    /// Cluster: a run taken over from a lost holder continues here from its last checkpoint.
    async fn adopt(&self, run: AbandonedRun, budget: &mut RestartBudget) -> Option<TrainingWorker> {
        // The slot was free a moment ago (`lease_keeper`); it is this run's now.
        let _ = self.slots.try_take(&self.room);
        let checkpoint = match run.checkpoint {
            Some(bytes) => {
                let name = format!("cluster-{}.ckpt", run.fence);
                let path = self.sup.cfg.checkpoint_dir().join(name);
                let p = path.clone();
                let written =
                    tokio::task::spawn_blocking(move || hamlet_onnx::write_atomic(&p, &bytes));
                match written.await {
                    Ok(Ok(())) => Some(path.display().to_string()),
                    _ => None,
                }
            }
            None => None,
        };
        let reason = if run.run.handed_over {
            "server restarted"
        } else {
            "node lost"
        };
        info!(
            fence = run.fence,
            episode = run.run.episodes_completed,
            reason,
            "training run taken over"
        );
        let left = RunWithCheckpoint {
            checkpoint,
            run: run.run,
        };
        let w = self.resume_after_restart(left, budget, reason).await;
        self.tell_redis(RedisUpdate::Run);
        w
    }

    /// Cluster: may this follower's viewer control the run? Then forward it to the holder.
    pub(super) fn forward_control(&self, c: RunControl, v: &Viewer, token: Option<String>) {
        let Some(ct) = self.cluster.clone() else {
            return;
        };
        let (client, operator) = (v.client.clone(), v.operator);
        tokio::spawn(async move {
            let allowed = match token {
                _ if operator => Ok(true),
                Some(t) => ct.token_controls(&t).await,
                None => Ok(false),
            };
            let refusal = match allowed {
                Ok(true) => match ct.forward(c).await {
                    Ok(()) => return,
                    Err(_) => store_unavailable(),
                },
                Ok(false) => not_run_owner(),
                Err(_) => store_unavailable(),
            };
            client.send(&refusal);
        });
    }

    /// Cluster holder at SIGTERM: the worker has checkpointed; share the checkpoint and let go.
    pub(super) async fn hand_over_to_cluster(&self) {
        let Some(ct) = &self.cluster else { return };
        let path = self.state.lock().checkpoint.as_ref().map(|c| c.1.clone());
        if let (Some(r), Some(p)) = (self.resumable(true), path) {
            if ct.save_checkpoint(&r, std::path::Path::new(&p)).await {
                info!(
                    episode = r.episodes_completed,
                    "training run handed over to the cluster"
                );
            }
        }
        ct.lease.release().await;
    }

    /// Cluster: a run with neither a record nor a holder left in Redis (Redis restarted empty)
    /// is over: it ends here, its viewers are told, a new run may start.
    pub(super) async fn end_if_gone_from_cluster(&self) {
        let Some(ct) = &self.cluster else { return };
        if !self.is_training() || ct.run_or_lease_exists().await.unwrap_or(true) {
            return;
        }
        warn!("the cluster's store no longer knows the training run (redis restarted empty?): it ends here");
        self.fail_run(
            "the cluster's store lost this run (Redis restarted empty); start it again".into(),
        );
    }

    /// Cluster: a run may start here only if none is recorded and the lease is free.
    pub(super) async fn may_start_in_cluster(&self, client: &Client) -> bool {
        let Some(ct) = &self.cluster else {
            return true;
        };
        let taken = match ct.run_exists().await {
            Ok(false) => ct.lease.acquire().await.map(|f| f.is_none()),
            other => other,
        };
        match taken {
            Ok(false) => true,
            Ok(true) => {
                client.send(&ServerMessage::error(
                    ErrorCode::TrainingInProgress,
                    "a training run is in progress on another node: watch it, or stop it first",
                ));
                false
            }
            Err(_) => {
                client.send(&store_unavailable());
                false
            }
        }
    }
}
