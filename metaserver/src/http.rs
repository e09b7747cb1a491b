//! Routes: health, status, models, operator endpoints, metrics, the two WebSockets and the UI.

use crate::app::App;
use crate::guard::{self, HostRule};
use crate::registry::{RestartRoute, WorkerControl};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ipc_proto::WorkerKind;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Every route, behind the Host rule ([`guard::check_host`]).
pub fn router(app: Arc<App>, hosts: HostRule) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/api/status", get(status))
        .route("/api/models", get(models))
        .route("/api/training/config", get(training_config))
        .route("/api/training/history", get(training_history))
        .route("/api/workers", get(workers))
        .route("/api/workers/{id}/restart", post(restart_worker))
        .route("/api/ready", get(ready))
        .route("/api/drain", post(drain))
        .route("/api/undrain", post(undrain))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_inference))
        .route("/ws/training", get(ws_training))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(crate::ui::index))
        .route("/ui/{*file}", get(crate::ui::asset))
        .with_state(app)
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

async fn root(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if wants_html(&h) {
        // The query goes along: a share link is `/?watch=…`.
        let to = match query {
            Some(q) if !q.is_empty() => format!("/ui/?{q}"),
            _ => "/ui/".to_owned(),
        };
        return Redirect::temporary(&to).into_response();
    }
    let t = app.training.info();
    Json(json!({
        "status": "running",
        "service": "Hamlet Metaserver",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": {"inference": "/ws", "training": "/ws/training"},
        "active_sessions": {"inference": app.sessions.lock().len(), "training": t.viewers},
        "training_active": t.is_training,
    }))
    .into_response()
}

async fn status(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    guard::cors(&app.cfg.allowed_origins, &h, status_body(&app))
}

/// Rows of each list in `/api/status` (the rest are counted): a public page stays small
/// however many sessions a server or cluster holds.
const STATUS_ROWS: usize = 100;

fn status_body(app: &App) -> Response {
    let all: Vec<_> = app.sessions.lock().values().cloned().collect();
    // Sessions put away in the store (ids only: tokens are never shown).
    let detached: Vec<_> = app
        .store
        .list()
        .into_iter()
        .filter(|r| !r.running_elsewhere && !all.iter().any(|s| s.id == r.id))
        .take(STATUS_ROWS)
        .collect();
    let sessions_total = all.len();
    let sessions = &all[..all.len().min(STATUS_ROWS)];
    let c = &app.cfg;
    Json(json!({
        "service": "Hamlet Metaserver",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": app.started.elapsed().as_secs(),
        "modes": {"inference": true, "training": true},
        "default_model": app.models.default_model(),
        "limits": {
            "max_sessions": c.max_sessions,
            "max_training_viewers": c.max_training_viewers,
            "max_frame_bytes": c.max_frame_bytes,
            "client_queue": c.client_queue,
            "client_rate": c.client_rate,
            "max_steps": c.max_steps,
            "warm_workers": c.warm_workers,
            "max_restarts": c.max_restarts,
            "restart_window_secs": c.restart_window_secs,
            "resume_window_secs": c.resume_window_secs,
            "max_detached": c.max_detached,
            "max_watchers": c.max_watchers,
            "snapshot_flush_ms": c.snapshot_flush_ms,
        },
        "ready": !app.drain.is_draining(),
        "sessions_attached": all.iter().filter(|s| s.attached).count(),
        "sessions_watched": all.iter().filter(|s| s.watchers > 0).count(),
        "sessions_total": sessions_total,
        "detached": detached,
        "detached_total": app.store.stored_count().saturating_sub(app.live.len()),
        "warm_workers": app.pool.warm_count(),
        "sessions": sessions,
        "training": app.training.info(),
        "training_status": app.training.status(),
        "cluster": app.cluster.as_ref().map(|c| c.view()),
    }))
    .into_response()
}

async fn models(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    // A fresh scan (on the blocking pool): what a page lists is what the directory holds now.
    let l = app.models.rescan().await;
    let body = Json(json!({"models": l.names, "count": l.names.len(), "details": l.details, "default": l.default}))
        .into_response();
    guard::cors(&app.cfg.allowed_origins, &h, body)
}

/// Every `start_training` field with its default, limits and help (the UI's form is built from it).
async fn training_config(State(app): State<Arc<App>>) -> Response {
    let fields = ipc_proto::training::fields();
    Json(json!({
        "fields": fields,
        "defaults": ipc_proto::training::TrainingConfig::default(),
        "presets": ipc_proto::training::presets(),
        // Measured on this server by earlier runs (null until one has run): the form computes
        // each preset's expected duration from these.
        "pace": app.training.pace(),
        "random_policy_steps": app.random_reference.steps,
    }))
    .into_response()
}

/// The current (or last) run's figures for drawing the whole curve at once (protocol.md), with the
/// reference lines: the random policy (measured at start) and the step cap.
async fn training_history(State(app): State<Arc<App>>) -> Response {
    let (run, previous) = app.training.history();
    let max_steps = run.config.as_ref().map_or(
        ipc_proto::training::TrainingConfig::default().max_steps,
        |c| c.max_steps,
    );
    Json(json!({
        "config": run.config,
        "episodes": run.episodes,
        "evaluations": run.evaluations,
        "endings": run.endings,
        "downsampled": run.downsampled,
        "reference": {"random": app.random_reference, "max_steps": max_steps},
        "previous": previous,
    }))
    .into_response()
}

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
struct Operator;

impl FromRequestParts<Arc<App>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(forbidden)?;
        if !app.is_operator(peer, &parts.headers) {
            return Err(forbidden());
        }
        let (origin, host) = guard::origin_and_host(&parts.headers);
        let changes_state = parts.method != axum::http::Method::GET;
        if changes_state && !guard::origin_allowed(&app.cfg.allowed_origins, origin, host) {
            let body = json!({"error": "a page of another site may not change this server's state (Origin not allowed; see --allowed-origins)"});
            return Err((StatusCode::FORBIDDEN, Json(body)).into_response());
        }
        Ok(Operator)
    }
}

async fn workers(State(app): State<Arc<App>>, _: Operator) -> Response {
    let list = app.sup.registry.list();
    // In a cluster each node lists its own workers: say whose list this is (behind a load
    // balancer, consecutive requests may reach different nodes).
    let node = app.cluster.as_ref().map(|c| c.node_id.clone());
    Json(json!({"workers": list, "count": list.len(), "node_id": node})).into_response()
}

/// For load balancers: 200 while this server takes new sessions, 503 once it drains.
async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.drain.is_draining() || app.shutdown.is_cancelled() {
        let body = json!({"ready": false, "draining": true});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"ready": true})).into_response()
}

/// Stops taking sessions: each is written to the store and its browsers are told to reconnect
/// (1012), which a load balancer sends elsewhere. HTTP keeps being served.
async fn drain(State(app): State<Arc<App>>, _: Operator) -> Response {
    if app.drain.start() {
        tracing::info!("draining: sessions are put away and their browsers told to reconnect");
    }
    (StatusCode::ACCEPTED, Json(json!({"draining": true}))).into_response()
}

/// Takes new sessions again after a drain (an operator's mistake, or a rolling upgrade called
/// off).
async fn undrain(State(app): State<Arc<App>>, _: Operator) -> Response {
    if app.drain.stop() {
        tracing::info!("drain ended: taking new sessions again");
    }
    Json(json!({"draining": false})).into_response()
}

async fn restart_worker(
    State(app): State<Arc<App>>,
    _: Operator,
    Path(id): Path<String>,
) -> Response {
    match app.sup.registry.restart_route(&id) {
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

async fn metrics(State(app): State<Arc<App>>, _: Operator) -> Response {
    let count = |k: WorkerKind| (k.as_str(), app.sup.registry.count(k));
    let mut body = app
        .metrics
        .render(&[count(WorkerKind::Inference), count(WorkerKind::Training)]);
    if let Some(c) = &app.cluster {
        body.push_str(&c.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The 403 answer for a refused origin, or `None` when the origin may connect.
fn refuse_origin(app: &App, h: &HeaderMap) -> Option<Response> {
    let (origin, host) = guard::origin_and_host(h);
    if guard::origin_allowed(&app.cfg.allowed_origins, origin, host) {
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
    State(app): State<Arc<App>>,
    h: HeaderMap,
    Query(query): Query<crate::session::WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refuse_origin(&app, &h) {
        return refused;
    }
    if app.drain.is_draining() {
        let body = "this server is draining; connect again (a load balancer sends you elsewhere)";
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    limit(ws, &app).on_upgrade(move |socket| {
        let tasks = app.tasks.clone();
        tasks.track_future(crate::session::run(socket, app, query))
    })
}

async fn ws_training(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refuse_origin(&app, &h) {
        return refused;
    }
    limit(ws, &app).on_upgrade(move |socket| {
        let tasks = app.tasks.clone();
        let operator = app.is_operator(peer, &h);
        tasks.track_future(crate::training::viewer(socket, app, operator))
    })
}

/// A browser's messages are commands of a few hundred bytes. tungstenite's default read buffer
/// is 128 KiB per connection, and it zeroes the buffer's free space before every read (twice per
/// command: the read, then the one that finds nothing more): 4 KiB holds any command, and a
/// larger message (up to `--max-frame-bytes`) still arrives, into a buffer grown for it.
const READ_BUFFER_BYTES: usize = 4096;

/// The limits every browser WebSocket gets.
fn limit(ws: WebSocketUpgrade, app: &App) -> WebSocketUpgrade {
    let max = app.cfg.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
}
