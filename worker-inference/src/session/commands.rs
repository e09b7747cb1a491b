//! What the browser asks of a session: its commands (protocol.md) and "what if" probes.

use super::{clamp_speed, err, msg, no_activations, Out, Session};
use crate::policy::Policy;
use hamlet_env::World;
use hamlet_onnx::catalog;
use ipc_proto::browser::{
    EndReason, ErrorCode, ErrorMsg, ModelLoaded, Position, ProbeResult, ServerMessage,
    SessionStatus, Settings,
};
use ipc_proto::inference::{EpisodePhase, FromInference, Probe, SessionCommand};

impl Session {
    /// Handles command number `seq`; the snapshots it produces say it was applied.
    pub fn handle_numbered(&mut self, seq: u64, cmd: SessionCommand) -> Out {
        self.commands_applied = self.commands_applied.max(seq);
        self.handle(cmd)
    }

    pub fn handle(&mut self, cmd: SessionCommand) -> Out {
        let mut out = Vec::new();
        match cmd {
            SessionCommand::Play => self.playing = true,
            SessionCommand::Pause => self.playing = false,
            SessionCommand::Step => {
                if !self.playing {
                    return match self.phase {
                        EpisodePhase::Running => self.step_once(),
                        // Stepping between episodes begins the next one at once.
                        EpisodePhase::Ended => self.start_next_episode(),
                    };
                }
            }
            SessionCommand::Reset => {
                if self.phase == EpisodePhase::Running {
                    self.end_episode(EndReason::Reset, &mut out);
                }
                out.extend(self.start_next_episode());
                return out;
            }
            SessionCommand::SetSpeed { speed } => {
                self.speed = clamp_speed(speed);
                out.push(self.settings());
            }
            SessionCommand::SetEpsilon { epsilon } => {
                self.epsilon = epsilon.clamp(0.0, 1.0);
                out.push(self.settings());
            }
            SessionCommand::SetStart { mode } => {
                self.start = mode;
                out.push(self.settings());
            }
            SessionCommand::SetDetail { activations } => {
                if activations && !self.policy.as_ref().is_some_and(|p| p.has_activations()) {
                    self.detail = false;
                    out.push(no_activations(self.model_name().as_deref()));
                } else {
                    self.detail = activations;
                }
                out.push(self.settings());
            }
            SessionCommand::LoadModel { model } => return self.load_model(&model),
            SessionCommand::Status => {
                out.push(msg(ServerMessage::SessionStatus(SessionStatus {
                    session_id: self.id.clone(),
                    model: self.model_name(),
                    playing: self.playing,
                    speed: self.speed,
                    max_steps: self.max_steps,
                    episode: self.episode,
                    step: self.world.steps(),
                    cumulative_reward: self.cumulative,
                })));
                return out;
            }
        }
        out.push(self.snapshot_event());
        out
    }

    /// The teaching settings, for the owner and every watcher (protocol.md `settings`).
    fn settings(&self) -> FromInference {
        msg(ServerMessage::Settings(Settings {
            speed: self.speed,
            epsilon: self.epsilon,
            start_mode: self.start,
            detail: self.detail,
        }))
    }

    /// "What if": the model's choice in the current state edited as `p` says. Nothing of the
    /// session changes (its world, episode, RNG and play state), so a probe never alters what
    /// the session does next.
    pub fn probe(&mut self, p: &Probe) -> Result<Box<ProbeResult>, ErrorMsg> {
        let mut world = self.world;
        for &(meter, v) in &p.meters {
            world = hamlet_env::wire::with_wire_meter(&world, meter, v);
        }
        if let Some(at) = p.position {
            let mut s = world.snapshot();
            (s.x, s.y) = (at.x, at.y);
            world = World::restore(&s);
        }
        let failed = |code: ErrorCode, message: String| ErrorMsg { message, code };
        let Some(policy) = self.policy.as_mut() else {
            return Err(failed(ErrorCode::ModelNotFound, "no model loaded".into()));
        };
        let detail = policy.has_activations();
        let (q, activations) = policy
            .evaluate(&world.observation(), detail)
            .map_err(|e| failed(e.code(), e.to_string()))?;
        let action = hamlet_env::argmax(&q) as u8;
        let activations = activations.map(|mut a| {
            a.top = policy.strongest(&a.h2, action as usize, 8);
            a
        });
        let (x, y) = world.position();
        Ok(Box::new(ProbeResult {
            q_values: q.to_vec(),
            action,
            activations,
            meters: hamlet_env::wire::wire_meters(&world),
            position: Position { x, y },
        }))
    }

    fn load_model(&mut self, name: &str) -> Out {
        match Policy::load(self.rt, &self.models_dir, name) {
            Ok(p) => {
                let lost_detail = self.detail && !p.has_activations();
                self.policy = Some(p);
                if lost_detail {
                    self.detail = false;
                }
                let details = catalog::details(&self.models_dir, name).ok();
                let mut out = vec![msg(ServerMessage::ModelLoaded(ModelLoaded {
                    model: name.to_owned(),
                    details,
                }))];
                if lost_detail {
                    out.push(no_activations(Some(name)));
                }
                out.push(self.snapshot_event());
                out
            }
            Err(e) => vec![err(e.code(), e.to_string())],
        }
    }
}
