//! The read-only JSON of the server: status, models, the training form and history, readiness.

use super::state::ServerState;
use crate::config::Config;
use crate::guard;
use crate::training::hub::TrainingHub;
use crate::training::rooms::{RoomRefusal, Rooms};
use crate::validate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub(super) async fn status(State(s): State<Arc<ServerState>>, h: HeaderMap) -> Response {
    guard::cors(&s.cfg.allowed_origins, &h, status_body(&s))
}

/// Rows of each list in `/api/status` (the rest are counted): a public page stays small
/// however many sessions a server or cluster holds.
const STATUS_ROWS: usize = 100;

fn status_body(s: &ServerState) -> Response {
    let sessions = &s.sessions;
    let mut all = sessions.live.rows();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    // Sessions put away in the store (ids only: tokens are never shown).
    let detached: Vec<_> = sessions
        .store
        .list()
        .into_iter()
        .filter(|r| !r.running_elsewhere && !all.iter().any(|l| l.id == r.id))
        .take(STATUS_ROWS)
        .collect();
    Json(json!({
        "service": "Hamlet Metaserver",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": s.started.elapsed().as_secs(),
        "modes": {"inference": true, "training": true},
        "default_model": sessions.models.default_model(),
        "limits": limits(&s.cfg),
        "ready": !sessions.drain.is_draining(),
        "sessions_attached": all.iter().filter(|r| r.attached).count(),
        "sessions_watched": all.iter().filter(|r| r.watchers > 0).count(),
        "sessions_total": all.len(),
        "detached": detached,
        "detached_total": sessions.detached_count(),
        "warm_workers": sessions.pool.warm_count(),
        "sessions": &all[..all.len().min(STATUS_ROWS)],
        "training": s.training.info(),
        "training_status": s.training.status(),
        "cluster": s.cluster.as_ref().map(|c| c.view()),
    }))
    .into_response()
}

fn limits(c: &Config) -> serde_json::Value {
    json!({
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
    })
}

pub(super) async fn models(State(s): State<Arc<ServerState>>, h: HeaderMap) -> Response {
    // A fresh scan (on the blocking pool): what a page lists is what the directory holds now.
    let l = s.sessions.models.rescan().await;
    let body = Json(json!({"models": l.names, "count": l.names.len(), "details": l.details, "default": l.default, "refused": l.refused}))
        .into_response();
    guard::cors(&s.cfg.allowed_origins, &h, body)
}

/// Every `start_training` field with its default, limits and help (the UI's form is built from it).
pub(super) async fn training_config(State(s): State<Arc<ServerState>>) -> Response {
    let fields = ipc_proto::training::fields();
    Json(json!({
        "fields": fields,
        "defaults": ipc_proto::training::TrainingConfig::default(),
        "presets": ipc_proto::training::presets(),
        // Measured on this server by earlier runs (null until one has run): the form computes
        // each preset's expected duration from these.
        "pace": s.training.pace(),
        "random_policy_steps": s.random_reference.steps,
    }))
    .into_response()
}

/// The current (or last) run's figures for drawing the whole curve at once (protocol.md), with the
/// reference lines: the random policy (measured at start) and the step cap.
/// `?room=NAME` of `/ws/training` and `/api/training/history`; none is the room `class`.
#[derive(serde::Deserialize)]
pub(super) struct RoomQuery {
    room: Option<String>,
}

impl RoomQuery {
    /// The room's hub — created when `create` (a viewer arriving) — or the HTTP answer saying
    /// why not: 400 for a name outside the rule, 404 for no such room, 503 when every room is
    /// taken.
    pub(super) fn hub(&self, rooms: &Rooms, create: bool) -> Result<Arc<TrainingHub>, Refusal> {
        let Some(given) = self.room.as_deref() else {
            return Ok(rooms.class().clone());
        };
        let Some(name) = validate::room_name(given) else {
            let why =
                "a room's name is 1 to 32 of a-z, 0-9 and '-', starting with a letter or digit";
            return Err((StatusCode::BAD_REQUEST, why.into()));
        };
        if !create {
            let missing = || (StatusCode::NOT_FOUND, "no such room".into());
            return rooms.find(name).ok_or_else(missing);
        }
        rooms.join(name).map_err(|r| match r {
            RoomRefusal::Full(n) => {
                let why = format!("all {n} training rooms are in use; try again later");
                (StatusCode::SERVICE_UNAVAILABLE, why)
            }
        })
    }
}

/// An HTTP status and the sentence that says why.
pub(super) type Refusal = (StatusCode, String);

/// Every training room with its run's state (`class` first).
pub(super) async fn rooms(State(s): State<Arc<ServerState>>, h: HeaderMap) -> Response {
    let rows = s.rooms.list();
    let runs = s.cfg.max_training_runs();
    let body = json!({"count": rows.len(), "rooms": rows, "max_rooms": s.cfg.max_rooms, "max_training_runs": runs});
    let body = Json(body);
    guard::cors(&s.cfg.allowed_origins, &h, body.into_response())
}

/// Finished runs of every room, oldest first (the newest `--max-runs-kept`).
/// `?after=ID` of `GET /api/runs`: only the runs that finished since (a board that polls fetches
/// each run once).
#[derive(serde::Deserialize)]
pub(super) struct RunsQuery {
    after: Option<u64>,
}

pub(super) async fn runs(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<RunsQuery>,
    h: HeaderMap,
) -> Response {
    let after = q.after.unwrap_or(0);
    let runs: Vec<_> = s
        .rooms
        .finished_runs()
        .into_iter()
        .filter(|r| r.id > after)
        .collect();
    let body = json!({"count": runs.len(), "runs": runs, "max_runs_kept": s.cfg.max_runs_kept});
    guard::cors(&s.cfg.allowed_origins, &h, Json(body).into_response())
}

/// The time machine's networks of a room's current (or last) run: `GET /api/rooms/{room}/snapshots`.
pub(super) async fn snapshots(
    State(s): State<Arc<ServerState>>,
    Path(room): Path<String>,
    h: HeaderMap,
) -> Response {
    let q = RoomQuery { room: Some(room) };
    let hub = match q.hub(&s.rooms, false) {
        Ok(hub) => hub,
        Err(refused) => return refused.into_response(),
    };
    let listing = s.sessions.models.rescan().await;
    let (run, snapshots) = match hub.snapshot_run() {
        Some((stem, best)) => {
            let list = crate::training::snapshots::of_run(&listing, &stem, best);
            (Some(stem), list)
        }
        None => (None, Vec::new()),
    };
    let body = json!({"room": hub.room, "run": run, "snapshots": snapshots});
    guard::cors(&s.cfg.allowed_origins, &h, Json(body).into_response())
}

pub(super) async fn training_history(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<RoomQuery>,
) -> Response {
    let hub = match q.hub(&s.rooms, false) {
        Ok(hub) => hub,
        Err(refused) => return refused.into_response(),
    };
    let (run, previous) = hub.history();
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
        "reference": {"random": s.random_reference, "max_steps": max_steps},
        "previous": previous,
    }))
    .into_response()
}

/// For load balancers: 200 while this server takes new sessions, 503 once it drains.
pub(super) async fn ready(State(s): State<Arc<ServerState>>) -> Response {
    if s.sessions.drain.is_draining() || s.sessions.stop.is_cancelled() {
        let body = json!({"ready": false, "draining": true});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"ready": true})).into_response()
}
