//! Cluster: a start on a node without a free training slot goes to a node that has one (rooms.md,
//! "Beyond one machine"). The receiving node makes the run's control token for its starter, as if
//! it ran the run, and sends only the token's hash along; the node with the slot starts the run
//! under the room's lease, and its `training_started` reaches the starter through the room's
//! channel, where the starter's node hands the starter its token. A start already waiting in a
//! node's queue moves the same way when another node's slot frees first.

use super::hub::TrainingHub;
use super::slots::Queued;
use super::state::{HubCmd, TrainingWorker, Viewer};
use crate::cluster::training::ForwardedStart;
use crate::tokens::TokenHash;
use crate::workers::budget::RestartBudget;
use ipc_proto::training::TrainingConfig;
use tracing::{info, warn};

impl TrainingHub {
    /// A start this node has no slot for: forwarded to the least loaded other node with a free
    /// slot, if there is one (true); false: it waits here.
    pub(super) async fn forward_start(&self, config: &TrainingConfig, v: &Viewer) -> bool {
        let Some(ct) = &self.cluster else {
            return false;
        };
        if ct.node_with_free_slot().is_none() {
            return false;
        }
        // The room's lease was taken for this start (`may_start_in_cluster`): it is the other
        // node's to take now.
        ct.lease.release().await;
        self.grant_control_to_starter(v);
        let control_hash = self.state.lock().control_hash.clone();
        self.send_start(config, control_hash.map(|h| h.hex().to_owned()))
            .await
    }

    /// Sends a start (with its starter's control-token hash) to the other node with the most
    /// free slots; false if there is none or Redis cannot take it.
    async fn send_start(&self, config: &TrainingConfig, control_hash: Option<String>) -> bool {
        let Some(ct) = &self.cluster else {
            return false;
        };
        let Some(node) = ct.node_with_free_slot() else {
            return false;
        };
        let start = ForwardedStart {
            room: self.room.clone(),
            config: config.clone(),
            control_hash,
        };
        match ct.forward_start(&node, &start).await {
            Ok(()) => {
                info!(room = %self.room, to = %node, "no free training slot here: the start goes to another node");
                true
            }
            Err(e) => {
                warn!(error = %e, "could not forward a start; it waits here");
                false
            }
        }
    }

    /// A start waiting in this node's queue while another node has a free slot (`rooms.rs`):
    /// it goes there; if it cannot, it is back at the head of the queue.
    pub(super) async fn move_queued(&self, start: HubCmd) {
        let moved = match &start {
            HubCmd::Start(config, v) => self.forward_start(config, v).await,
            HubCmd::StartForwarded(config, hash) => self.send_start(config, hash.clone()).await,
            _ => true,
        };
        if !moved {
            let (to, room) = (self.cmd_tx.clone(), self.room.clone());
            self.slots.push_front(Queued { room, to, start });
        }
    }

    /// A start another node forwarded here: run under the room's lease if it is still free and a
    /// slot is (else it waits in this node's queue), its control token's hash as the starter's
    /// node made it.
    pub(super) async fn start_forwarded(
        &self,
        worker: &mut Option<TrainingWorker>,
        budget: &mut RestartBudget,
        config: Box<TrainingConfig>,
        control_hash: Option<String>,
    ) {
        let Some(ct) = self.cluster.clone() else {
            return;
        };
        if self.is_training() && worker.is_some() {
            return;
        }
        if !self.slots.try_take(&self.room) {
            return self.wait_for_slot(HubCmd::StartForwarded(config, control_hash));
        }
        let free = matches!(ct.run_exists().await, Ok(false))
            && matches!(ct.lease.acquire().await, Ok(Some(_)));
        if !free {
            warn!(room = %self.room, "a forwarded start found the room's run taken; dropped");
            return;
        }
        let hash = control_hash.as_deref().and_then(TokenHash::from_hex);
        let begin = |c: &TrainingConfig| self.begin_forwarded_run(c, hash);
        if let Err(e) = self.launch(worker, budget, config, begin).await {
            warn!(error = %e, "cannot start the training worker for a forwarded start");
        }
    }
}
