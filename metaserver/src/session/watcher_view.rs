//! A stored session as a watcher first sees it: its `connected`, its last frame and its status —
//! for a watcher of a session no task runs here (cluster.md "Watching across nodes").

use super::store::StoredSession;
use crate::model_catalog::ModelCatalog;
use hamlet_env::wire::{state_update, FrameFacts};
use hamlet_env::World;
use ipc_proto::browser::{Connected, ServerMessage, SessionStatus};

pub struct WatcherView {
    pub connected: Connected,
    /// The session as it was stored (`None` before its first step).
    pub frame: Option<ServerMessage>,
    pub status: SessionStatus,
}

impl WatcherView {
    pub fn of(s: &StoredSession, models: &ModelCatalog, max_steps: u32) -> WatcherView {
        let snap = s.snapshot.as_ref();
        let connected = Connected {
            available_models: models.listing().names.clone(),
            session_id: s.id.clone(),
            model: snap.and_then(|p| p.model.clone()),
            playing: snap.is_some_and(|p| p.playing),
            speed: snap.map_or(1.0, |p| p.speed),
            max_steps: snap.map_or(max_steps, |p| p.max_steps),
            resume_token: None,
            watch_token: None,
            resumed: None,
            resume_error: None,
            watching: Some(s.id.clone()),
            read_only: Some(true),
            epsilon: snap.map_or(0.0, |p| p.epsilon),
            start_mode: snap.map(|p| p.start).unwrap_or_default(),
            detail: snap.is_some_and(|p| p.detail),
            recent_episodes: s.recent.clone(),
        };
        let frame = snap.map(|p| {
            ServerMessage::StateUpdate(Box::new(state_update(
                &World::restore(&p.world),
                FrameFacts {
                    episode: p.episode,
                    action: p.last_action,
                    reward: p.last_reward,
                    cumulative_reward: p.cumulative_reward,
                    ..FrameFacts::default()
                },
            )))
        });
        let status = SessionStatus {
            session_id: s.id.clone(),
            model: connected.model.clone(),
            playing: connected.playing,
            speed: connected.speed,
            max_steps: connected.max_steps,
            episode: snap.map_or(1, |p| p.episode),
            step: snap.map_or(0, |p| p.world.step),
            cumulative_reward: snap.map_or(0.0, |p| p.cumulative_reward),
        };
        WatcherView {
            connected,
            frame,
            status,
        }
    }
}
