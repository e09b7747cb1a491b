//! One `/ws/training` viewer: registered with the hub, brought up to date at once from the hub's
//! mirror of the run, and its requests checked and queued for the hub's actor.

use super::hub::TrainingHub;
use super::state::{HubCmd, Viewer};
use crate::client::{self, Incoming};
use crate::metrics::Metrics;
use crate::validate::{self, TrainingRequest};
use axum::extract::ws::WebSocket;
use ipc_proto::browser::{ErrorCode, ServerMessage};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One `/ws/training` viewer; `operator` by the operator rule at connect.
pub async fn viewer(socket: WebSocket, hub: Arc<TrainingHub>, operator: bool) {
    let cfg = hub.sup.cfg.clone();
    let metrics: Arc<Metrics> = hub.sup.metrics.clone();
    let fps = Some(cfg.viewer_fps);
    let (client, stream) = client::start(socket, cfg.client_queue, fps, metrics.clone());
    let client = client.in_room(&hub.room);
    let Some(mut v) = hub.join(client.clone(), operator) else {
        let why = "too many training viewers; try again later";
        client.try_again_later(ErrorCode::TooManySessions, why, "too many viewers");
        return;
    };
    // Late joiners catch up at once from the mirror (on a cluster follower, first brought up to
    // date from the holder's `training:status`).
    hub.refresh_from_cluster().await;
    client.send(&ServerMessage::TrainingStatus(Box::new(hub.status_for(&v))));
    metrics.training_viewers.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::channel(32);
    let parse = validate::parse_training;
    tokio::spawn(client::read_loop(
        stream,
        client.clone(),
        cfg.client_rate,
        tx,
        parse,
    ));
    while let Some(Incoming::Valid((req, creds))) = rx.recv().await {
        // A browser cannot send headers on a WebSocket: the teacher's page sends the admin token
        // in its messages, which makes that connection an operator from then on.
        v.operator |= creds
            .admin_token
            .as_deref()
            .is_some_and(|t| hub.operators.token_matches(t));
        let cmd = match req {
            TrainingRequest::Status => {
                client.send(&ServerMessage::TrainingStatus(Box::new(hub.status_for(&v))));
                continue;
            }
            TrainingRequest::Start(c) => HubCmd::Start(c, v.clone()),
            TrainingRequest::Control(c) => HubCmd::Control(c, v.clone(), creds.control_token),
            TrainingRequest::TakeControl => HubCmd::TakeControl(v.clone()),
        };
        let _ = hub.cmd_tx.send(cmd).await;
    }
    hub.state.lock().viewers.remove(&v.id);
    metrics.training_viewers.fetch_sub(1, Relaxed);
}

impl TrainingHub {
    /// Registers a viewer; `None` at `--max-training-viewers`.
    fn join(&self, client: client::Client, operator: bool) -> Option<Viewer> {
        let mut s = self.state.lock();
        if s.viewers.len() >= self.sup.cfg.max_training_viewers {
            return None;
        }
        let id = s.next_viewer;
        s.next_viewer += 1;
        s.viewers.insert(id, client.clone());
        Some(Viewer {
            id,
            client,
            operator,
        })
    }
}
