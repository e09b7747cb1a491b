//! Every route, behind the Host rule ([`guard::check_host`]); the two WebSocket upgrades (with
//! the Origin rule and the browser limits) and the root.

use super::state::ServerState;
use super::{api, operator, ui};
use crate::guard::{self, HostRule};
use crate::session::connection::{self, WsQuery};
use crate::training::viewer;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

pub fn router(state: Arc<ServerState>, hosts: HostRule) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/api/status", get(api::status))
        .route("/api/models", get(api::models))
        .route("/api/training/config", get(api::training_config))
        .route("/api/training/history", get(api::training_history))
        .route("/api/rooms", get(api::rooms))
        .route("/api/runs", get(api::runs))
        .route("/api/rooms/{room}/snapshots", get(api::snapshots))
        .route("/api/ready", get(api::ready))
        .route("/api/workers", get(operator::workers))
        .route("/api/workers/{id}/restart", post(operator::restart_worker))
        .route("/api/drain", post(operator::drain))
        .route("/api/undrain", post(operator::undrain))
        .route("/metrics", get(operator::metrics))
        .route("/ws", get(ws_inference))
        .route("/ws/training", get(ws_training))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(ui::index))
        .route("/ui/{*file}", get(ui::asset))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            guard::check_host,
        ))
}

fn wants_html(h: &HeaderMap) -> bool {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A browser navigation lists text/html before any JSON type.
    match (accept.find("text/html"), accept.find("application/json")) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// A browser is sent to the UI (with its query: a share link is `/?watch=…`); anything else
/// gets the original server's description.
async fn root(
    State(s): State<Arc<ServerState>>,
    h: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if wants_html(&h) {
        let to = match query {
            Some(q) if !q.is_empty() => format!("/ui/?{q}"),
            _ => "/ui/".to_owned(),
        };
        return Redirect::temporary(&to).into_response();
    }
    let t = s.training.info();
    Json(json!({
        "status": "running",
        "service": "Hamlet Metaserver",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": {"inference": "/ws", "training": "/ws/training"},
        "active_sessions": {"inference": s.sessions.live.len(), "training": t.viewers},
        "training_active": t.is_training,
    }))
    .into_response()
}

/// The 403 answer for a refused origin, or `None` when the origin may connect.
fn refuse_origin(s: &ServerState, h: &HeaderMap) -> Option<Response> {
    let (origin, host) = guard::origin_and_host(h);
    if guard::origin_allowed(&s.cfg.allowed_origins, origin, host) {
        return None;
    }
    let origin = origin.unwrap_or_default();
    let body = format!(
        "origin not allowed: {origin} is not on this server's host. To allow it, start the \
         metaserver with --allowed-origins {origin} (comma-separated; '*' allows every origin)."
    );
    Some((StatusCode::FORBIDDEN, body).into_response())
}

async fn ws_inference(
    State(s): State<Arc<ServerState>>,
    h: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refuse_origin(&s, &h) {
        return refused;
    }
    if s.sessions.drain.is_draining() {
        let body = "this server is draining; connect again (a load balancer sends you elsewhere)";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let sessions = s.sessions.clone();
    limit(ws, &s).on_upgrade(move |socket| {
        let tasks = sessions.tasks.clone();
        tasks.track_future(connection::run(socket, sessions, query))
    })
}

async fn ws_training(
    State(s): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Query(q): Query<api::RoomQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refuse_origin(&s, &h) {
        return refused;
    }
    let hub = match q.hub(&s.rooms, true) {
        Ok(hub) => hub,
        Err(refused) => return refused.into_response(),
    };
    let operator = s.operators.allow(peer, &h);
    let tasks = s.sessions.tasks.clone();
    limit(ws, &s)
        .on_upgrade(move |socket| tasks.track_future(viewer::viewer(socket, hub, operator)))
}

/// A browser's messages are commands of a few hundred bytes. tungstenite's default read buffer
/// is 128 KiB per connection, and it zeroes the buffer's free space before every read (twice per
/// command: the read, then the one that finds nothing more): 4 KiB holds any command, and a
/// larger message (up to `--max-frame-bytes`) still arrives, into a buffer grown for it.
const READ_BUFFER_BYTES: usize = 4096;

/// The limits every browser WebSocket gets.
fn limit(ws: WebSocketUpgrade, s: &ServerState) -> WebSocketUpgrade {
    let max = s.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
}
