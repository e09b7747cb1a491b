//! A session's browsers: its owner and its watchers joining and leaving, what each is told when
//! it joins, frames encoded once for all of them (and for watchers on other nodes), and the
//! probes they ask.

use super::identity::OwnerConn;
use super::registry::{too_many_probes, Attach};
use super::task::{NextStep, SessionTask, RECENT_EPISODES};
use crate::client::{close, Client};
use crate::outqueue::Delivery;
use crate::tokens::watch_token_for;
use crate::workers::pool::InferenceWorker;
use axum::extract::ws::Utf8Bytes;
use ipc_proto::browser::{Connected, ErrorCode, ErrorMsg, ProbeResult, ServerMessage, Settings};
use ipc_proto::inference::{Probe, ToInference};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tracing::info;

/// Probes a session's worker may have in flight; more are refused (`rate_limited`).
const MAX_PENDING_PROBES: usize = 32;

/// The owner's `connected`: the worker's, with the secrets and whether it came back.
fn owner_connected(base: &Connected, o: &OwnerConn) -> Connected {
    Connected {
        resume_token: Some(o.token.clone()),
        watch_token: Some(watch_token_for(&o.token)),
        resumed: Some(o.resumed),
        resume_error: o.resume_error.then(|| "unknown_or_expired".to_owned()),
        ..base.clone()
    }
}

/// A watcher's `connected`: no secrets, the id it watches, read-only.
fn watcher_connected(base: &Connected) -> Connected {
    Connected {
        watching: Some(base.session_id.clone()),
        read_only: Some(true),
        resume_token: None,
        watch_token: None,
        resumed: None,
        resume_error: None,
        ..base.clone()
    }
}

fn taken_over(client: &Client) {
    client.send(&ServerMessage::error(
        ErrorCode::SessionTakenOver,
        "this session was opened in another tab or window",
    ));
    client.close(close::TAKEN_OVER, "session taken over");
}

impl SessionTask {
    /// A browser joins: the owner (taking over from a present one) or a watcher. One that joins a
    /// running session gets `connected` and the current frame at once.
    pub(super) fn attach(&mut self, a: Attach) {
        match a {
            Attach::Owner(o) => self.attach_owner(o),
            Attach::Watcher(c) => self.attach_watcher(c),
        }
        self.update_row();
    }

    fn attach_owner(&mut self, o: OwnerConn) {
        if let Some(e) = o.claimed.filter(|e| *e > self.ident.epoch) {
            // The newest claim wins: this task writes with it from now on.
            self.ident.epoch = e;
            self.dirty = true;
        }
        if let Some(old) = self.owner.take() {
            self.sessions
                .metrics
                .sessions_taken_over
                .fetch_add(1, Relaxed);
            info!(session = %self.id(), "session taken over by a new connection");
            taken_over(&old.client);
        }
        if let Some(base) = &self.connected {
            let c = owner_connected(&self.refreshed(base), &o);
            o.client.send(&ServerMessage::Connected(c));
            if let Some(f) = &self.last_frame {
                o.client
                    .send_encoded(f.clone(), Delivery::Droppable, Instant::now());
            }
        }
        self.owner_left = None;
        self.owner = Some(o);
    }

    fn attach_watcher(&mut self, c: Client) {
        self.prune_watchers();
        let most = self.sessions.cfg.max_watchers;
        if self.watchers.len() >= most {
            let why = format!("this session already has {most} watchers, the most allowed");
            c.try_again_later(ErrorCode::TooManyWatchers, why, "too many watchers");
            return;
        }
        if let Some(base) = &self.connected {
            let w = watcher_connected(&self.refreshed(base));
            c.send(&ServerMessage::Connected(w));
            if let Some(f) = &self.last_frame {
                c.send_encoded(f.clone(), Delivery::Droppable, Instant::now());
            }
        }
        self.sessions.metrics.watchers.fetch_add(1, Relaxed);
        self.watchers.push(c);
    }

    /// The worker's `connected` brought up to date from the latest snapshot, with the recent
    /// episodes.
    fn refreshed(&self, base: &Connected) -> Connected {
        let mut c = base.clone();
        if let Some(s) = &self.snapshot {
            c.model = s.model.clone();
            c.playing = s.playing;
            c.speed = s.speed;
            c.epsilon = s.epsilon;
            c.start_mode = s.start;
            c.detail = s.detail;
        }
        c.available_models = self.sessions.models.listing().names.clone();
        c.recent_episodes = self.recent.iter().cloned().collect();
        c
    }

    pub(super) fn prune_watchers(&mut self) {
        let before = self.watchers.len();
        self.watchers.retain(|w| !w.is_closed());
        let gone = before - self.watchers.len();
        if gone > 0 {
            self.sessions
                .metrics
                .watchers
                .fetch_sub(gone as i64, Relaxed);
            self.update_row();
        }
    }

    pub(super) fn update_row(&self) {
        let (attached, watchers) = (self.owner.is_some(), self.watchers.len());
        self.sessions.live.update_row(&self.ident.token_hash, |r| {
            r.attached = attached;
            r.watchers = watchers;
        });
    }

    /// The owner's client (if attached) and every watcher's.
    pub(super) fn clients(&self) -> Vec<Client> {
        self.owner
            .iter()
            .map(|o| o.client.clone())
            .chain(self.watchers.iter().cloned())
            .collect()
    }

    /// The worker introduced the session: each browser gets its own `connected`.
    pub(super) fn greet(&mut self, mut c: Connected) {
        c.recent_episodes = self.recent.iter().cloned().collect();
        // The server's listing: the models it offers (usable ones only).
        c.available_models = self.sessions.models.listing().names.clone();
        if let Some(o) = &self.owner {
            o.client
                .send(&ServerMessage::Connected(owner_connected(&c, o)));
        }
        let w = ServerMessage::Connected(watcher_connected(&c));
        for client in &self.watchers {
            client.send(&w);
        }
        self.connected = Some(c);
    }

    /// A node elsewhere has just started watching: its watchers get the session as it is now (its
    /// settings and its current frame), not only the frames from the next step on.
    pub(super) fn greet_remote_watchers(&self) {
        let Some(r) = &self.sessions.watch_relay else {
            return;
        };
        if let Some(s) = &self.snapshot {
            let settings = ServerMessage::Settings(Settings {
                speed: s.speed,
                epsilon: s.epsilon,
                start_mode: s.start,
                detail: s.detail,
            });
            r.publish(self.id(), &Utf8Bytes::from(settings.to_json()));
        }
        if let Some(f) = &self.last_frame {
            r.publish(self.id(), f);
        }
    }

    /// Sends a frame to the owner and every watcher, encoded once.
    pub(super) fn fan_out(&mut self, m: &ServerMessage, arrived: Instant) {
        let text = Utf8Bytes::from(m.to_json());
        let delivery = Delivery::of(m);
        match m {
            ServerMessage::StateUpdate(_) => self.last_frame = Some(text.clone()),
            ServerMessage::EpisodeEnd(e) => {
                if self.recent.len() == RECENT_EPISODES {
                    self.recent.pop_front();
                }
                self.recent.push_back(e.into());
            }
            _ => {}
        }
        if let Some(o) = &self.owner {
            o.client.send_encoded(text.clone(), delivery, arrived);
        }
        for w in &self.watchers {
            w.send_encoded(text.clone(), delivery, arrived);
        }
        if let (true, Some(r)) = (self.publish_frames, &self.sessions.watch_relay) {
            r.publish(self.id(), &text);
        }
    }

    /// Sends `probe` to the worker for `client` (owner or watcher), unless too many are in flight.
    pub(super) fn ask_probe(&mut self, w: &InferenceWorker, client: Client, probe: Probe) {
        if self.probes.len() >= MAX_PENDING_PROBES {
            client.send(&too_many_probes());
            return;
        }
        self.last_probe += 1;
        let id = self.last_probe;
        let sent = self
            .take_back(w)
            .and_then(|()| w.send(ToInference::Probe { id, probe }));
        if sent.is_ok() {
            self.probes.insert(id, client);
        } else {
            client.send(&too_many_probes());
        }
    }

    pub(super) fn answer_probe(&mut self, id: u64, answer: Result<Box<ProbeResult>, ErrorMsg>) {
        let Some(client) = self.probes.remove(&id) else {
            return;
        };
        client.send(&match answer {
            Ok(r) => ServerMessage::ProbeResult(r),
            Err(e) => ServerMessage::Error(e),
        });
    }

    /// Probes the lost worker would have answered: their askers are told to ask again.
    pub(super) fn forget_probes(&mut self) {
        for (_, client) in self.probes.drain() {
            client.send(&ServerMessage::error(
                ErrorCode::WorkerFailed,
                "the agent's process was restarted before it answered; probe again",
            ));
        }
    }

    /// The session task is ending: its browsers are told why, as `end` says.
    pub(super) fn let_browsers_go(&mut self, end: &NextStep) {
        match end {
            NextStep::ServerGoing => {
                for c in self.clients() {
                    c.close(
                        close::SERVICE_RESTART,
                        "server restarting: reconnect to resume",
                    );
                }
            }
            NextStep::Over => {
                for c in self.clients() {
                    c.close(close::GOING_AWAY, "the session has ended");
                }
            }
            NextStep::Superseded => {
                info!(session = %self.id(), "session taken by another node; letting go");
                let metrics = &self.sessions.metrics;
                metrics.sessions_taken_over.fetch_add(1, Relaxed);
                if let Some(o) = &self.owner {
                    taken_over(&o.client);
                }
                // Watchers come back through their link and find the new owner's copy.
                for c in &self.watchers {
                    c.close(close::SERVICE_RESTART, "session moved: reconnect");
                }
            }
            _ => {}
        }
        let metrics = &self.sessions.metrics;
        metrics
            .watchers
            .fetch_sub(self.watchers.len() as i64, Relaxed);
        self.watchers.clear();
    }
}
