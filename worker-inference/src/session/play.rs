//! A session's steps: the network's choice (ε-greedy), the world's step, and the messages a step
//! sends.

use super::{err, Out, Session};
use ipc_proto::browser::{EndReason, ErrorCode};
use ipc_proto::inference::{EpisodePhase, FromInference, SteppedFrame};
use ipc_proto::wire::Activations;

impl Session {
    /// One greedy step of the agent.
    pub fn step_once(&mut self) -> Out {
        if self.phase != EpisodePhase::Running {
            return Vec::new();
        }
        let (q, activations) = match self.evaluate_current() {
            Ok(x) => x,
            Err(failure) => return failure,
        };
        let (action, explored) = self.choose(&q);
        let activations = activations.map(|mut a| {
            if let Some(p) = self.policy.as_ref() {
                a.top = p.strongest(&a.h2, action as usize, 8);
            }
            a
        });
        let r = self
            .world
            .step_id(i64::from(action))
            .expect("argmax of 5 Q-values is 0..5");
        self.cumulative += r.reward;
        self.last_action = Some(action);
        self.last_reward = r.reward;
        self.report_step(SteppedFrame {
            progress: self.progress(),
            done: r.done,
            q_values: Some(q.to_vec()),
            // Said only once ε-greedy play is on, so greedy frames stay as small as before.
            explored: (self.epsilon > 0.0).then_some(explored),
            activations,
        })
    }

    /// The policy's Q-values (and activations, when asked for) in the current state; when it has
    /// none, the messages that say so (and play stops).
    fn evaluate_current(
        &mut self,
    ) -> Result<([f32; hamlet_env::N_ACTIONS], Option<Activations>), Out> {
        let obs = self.world.observation();
        let detail = self.detail;
        let failure = match self.policy.as_mut().map(|p| p.evaluate(&obs, detail)) {
            Some(Ok(x)) => return Ok(x),
            Some(Err(e)) => err(e.code(), e.to_string()),
            None => err(
                ErrorCode::ModelNotFound,
                "no model loaded: choose one with load_model",
            ),
        };
        self.playing = false;
        Err(vec![failure, self.snapshot_event()])
    }

    /// The messages of a step just taken: usually one (`Stepped`: the frame's facts and the
    /// snapshot); for an episode's last step the frame, its end, then the snapshot (see
    /// `SteppedFrame` for why).
    fn report_step(&mut self, step: SteppedFrame) -> Out {
        let end = if step.done {
            Some(EndReason::MeterDepleted)
        } else if self.world.steps() >= self.max_steps {
            Some(EndReason::MaxSteps)
        } else {
            None
        };
        let Some(reason) = end else {
            return vec![FromInference::Stepped(Box::new(step))];
        };
        let (frame, _) = step.into_parts();
        let mut out = vec![FromInference::State(Box::new(frame))];
        self.end_episode(reason, &mut out);
        out.push(self.snapshot_event());
        out
    }

    /// ε-greedy: with probability ε a random action (the session's RNG, drawn only when ε > 0, so
    /// greedy play consumes no numbers), else the largest Q-value. (action, explored).
    fn choose(&mut self, q: &[f32; hamlet_env::N_ACTIONS]) -> (u8, bool) {
        if self.epsilon > 0.0 && self.rng.next_f64() < self.epsilon {
            (self.rng.below(hamlet_env::N_ACTIONS) as u8, true)
        } else {
            (hamlet_env::argmax(q) as u8, false)
        }
    }
}
