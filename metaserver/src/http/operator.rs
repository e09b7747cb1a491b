//! What operators may ask (protocol.md): the workers and their restart, draining, metrics. Every
//! route here takes an [`Operator`], whose extraction is the operator rule — and, for a request
//! that changes state, the Origin rule.

use super::state::ServerState;
use crate::guard;
use crate::workers::registry::{RestartRoute, WorkerControl};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ipc_proto::WorkerKind;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "operator endpoints are for loopback or --admin-token holders"})),
    )
        .into_response()
}

/// Proof that the request may use operator endpoints (loopback peer or `--admin-token`);
/// extracting it answers 403 otherwise. For a request that changes state it also proves the
/// request does not come from another site's page: its `Origin` (if any) is allowed.
pub(super) struct Operator;

impl FromRequestParts<Arc<ServerState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<ServerState>) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(forbidden)?;
        if !s.operators.allow(peer, &parts.headers) {
            return Err(forbidden());
        }
        let (origin, host) = guard::origin_and_host(&parts.headers);
        let changes_state = parts.method != axum::http::Method::GET;
        if changes_state && !guard::origin_allowed(&s.cfg.allowed_origins, origin, host) {
            let body = json!({"error": "a page of another site may not change this server's state (Origin not allowed; see --allowed-origins)"});
            return Err((StatusCode::FORBIDDEN, Json(body)).into_response());
        }
        Ok(Operator)
    }
}

pub(super) async fn workers(State(s): State<Arc<ServerState>>, _: Operator) -> Response {
    let list = s.sessions.sup.registry.list();
    // In a cluster each node lists its own workers: say whose list this is (behind a load
    // balancer, consecutive requests may reach different nodes).
    let node = s.cluster.as_ref().map(|c| c.node_id.clone());
    Json(json!({"workers": list, "count": list.len(), "node_id": node})).into_response()
}

/// Stops taking sessions: each is written to the store and its browsers are told to reconnect
/// (1012), which a load balancer sends elsewhere. HTTP keeps being served.
pub(super) async fn drain(State(s): State<Arc<ServerState>>, _: Operator) -> Response {
    if s.sessions.drain.start() {
        tracing::info!("draining: sessions are put away and their browsers told to reconnect");
    }
    (StatusCode::ACCEPTED, Json(json!({"draining": true}))).into_response()
}

/// Takes new sessions again after a drain (an operator's mistake, or a rolling upgrade called
/// off).
pub(super) async fn undrain(State(s): State<Arc<ServerState>>, _: Operator) -> Response {
    if s.sessions.drain.stop() {
        tracing::info!("drain ended: taking new sessions again");
    }
    Json(json!({"draining": false})).into_response()
}

pub(super) async fn restart_worker(
    State(s): State<Arc<ServerState>>,
    _: Operator,
    Path(id): Path<String>,
) -> Response {
    match s.sessions.sup.registry.restart_route(&id) {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no worker `{id}`")})),
        )
            .into_response(),
        Some(RestartRoute::Owner(tx)) => {
            let _ = tx.send(WorkerControl::Restart).await;
            (StatusCode::ACCEPTED, Json(json!({"restarting": id}))).into_response()
        }
        Some(RestartRoute::Unowned(pidfd)) => {
            // A warm worker has no session: replacing it is ending it; the pool refills. The
            // signal goes through the worker's pidfd, so it can only reach that process.
            pidfd.signal(nix::sys::signal::Signal::SIGTERM);
            (StatusCode::ACCEPTED, Json(json!({"restarting": id}))).into_response()
        }
    }
}

pub(super) async fn metrics(State(s): State<Arc<ServerState>>, _: Operator) -> Response {
    let count = |k: WorkerKind| (k.as_str(), s.sessions.sup.registry.count(k));
    let mut body = s
        .sessions
        .metrics
        .render(&[count(WorkerKind::Inference), count(WorkerKind::Training)]);
    if let Some(c) = &s.cluster {
        body.push_str(&c.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
