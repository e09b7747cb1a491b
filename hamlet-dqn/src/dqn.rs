//! DQN as world.md describes it — ε-greedy, target network, Adam, gradient clipping, per-episode
//! ε decay, step cap — with the improvements a run's configuration chooses: Double DQN targets,
//! n-step returns, Huber loss, fewer updates per step. Deterministic under a seed.

use crate::nn::{Adam, Cache, Grads, QNet, ACTIONS, OBS};
use crate::replay::{Batch, EpisodeEnd, NStep, ReplayBuffer};
use hamlet_env::wire::HeatMap;
use hamlet_env::{argmax, Action, World};
use ipc_proto::browser::{EndReason, Evaluation};
use ipc_proto::training::{Loss, TdTarget, TrainingConfig};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};

const GRAD_CLIP: f32 = 10.0;

/// One finished episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpisodeStats {
    pub episode: u32,
    pub reward: f64,
    pub length: u32,
    /// Mean loss over the episode's updates (0 if none).
    pub loss: f64,
    /// ε after this episode's decay.
    pub epsilon: f64,
    /// How it ended: a meter ran out (which one) or the step cap.
    #[serde(default = "meter_depleted")]
    pub end: EndReason,
    #[serde(default)]
    pub meter: Option<hamlet_env::Meter>,
}

fn meter_depleted() -> EndReason {
    EndReason::MeterDepleted
}

/// What a per-step observer sees.
pub struct StepView<'a> {
    pub world: &'a World,
    /// Visits over the whole run (for the training `heat_map`).
    pub heat: &'a HeatMap,
    pub episode: u32,
    pub action: u8,
    /// The action was a random, exploring one (not the network's choice).
    pub explored: bool,
    pub reward: f64,
    pub cumulative: f64,
    pub done: bool,
    /// The online network's Q-values of the state the action was chosen in, when the trainer was
    /// asked to show them ([`Trainer::show_q_values`]).
    pub q: Option<[f32; ACTIONS]>,
}

/// An observer's answer after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Abandon the episode now (the run is being stopped); it is not counted.
    Abort,
}

/// The run's state, written atomically as a checkpoint: weights, optimiser, RNG, ε and counters.
/// The replay buffer is not in it (it would make every checkpoint tens of megabytes): a resumed run
/// refills it from new experience, so it continues from the same network and ε, not bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub config: TrainingConfig,
    pub online: QNet,
    pub target: QNet,
    pub adam: Adam,
    pub rng: Pcg64,
    pub epsilon: f64,
    pub episodes_done: u32,
    pub total_steps: u64,
    pub history: Vec<EpisodeStats>,
    pub heat: HeatMap,
    /// The network with the best greedy evaluation so far: what the run saves.
    #[serde(default)]
    pub best: Option<BestNetwork>,
}

/// A network and its greedy evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestNetwork {
    pub evaluation: Evaluation,
    pub net: QNet,
}

pub struct Trainer {
    pub state: TrainerState,
    grads: Grads,
    cache: Cache,
    tcache: Cache,
    batch: Batch,
    replay: ReplayBuffer,
    dq: Vec<f32>,
    targets: Vec<f32>,
    /// Compute the Q-values of every state acted in, for [`StepView::q`].
    show_q: bool,
}

impl Trainer {
    pub fn new(config: TrainingConfig) -> Self {
        let mut rng = Pcg64::seed_from_u64(config.seed);
        let online = QNet::new(config.network, &mut rng);
        let target = online.clone();
        let adam = Adam::new(&online, config.learning_rate as f32);
        let epsilon = config.epsilon_start;
        Self::from_state(TrainerState {
            config,
            online,
            target,
            adam,
            rng,
            epsilon,
            episodes_done: 0,
            total_steps: 0,
            history: Vec::new(),
            heat: HeatMap::new(),
            best: None,
        })
    }

    /// Resumes from a checkpointed state (the replay buffer starts empty and refills).
    pub fn from_state(state: TrainerState) -> Self {
        Trainer {
            grads: state.online.zero_grads(),
            replay: ReplayBuffer::new(state.config.buffer_capacity as usize),
            state,
            cache: Cache::default(),
            tcache: Cache::default(),
            batch: Batch::default(),
            dq: Vec::new(),
            targets: Vec::new(),
            show_q: false,
        }
    }

    /// Whether the next episodes' [`StepView`]s carry the Q-values of each state (for shown
    /// episodes: one forward pass a step, which changes nothing the run computes).
    pub fn show_q_values(&mut self, on: bool) {
        self.show_q = on;
    }

    /// Plays one greedy episode with the online network (world.md's start: one tells, the world
    /// is deterministic) and keeps the network if it beats the best so far (survival first, then
    /// return). Returns the evaluation and whether it is the new best.
    pub fn evaluate_greedy(&mut self) -> (Evaluation, bool) {
        let (steps, reward) = greedy_episode(&self.state.online, self.state.config.max_steps);
        let e = Evaluation {
            episode: self.state.episodes_done,
            steps,
            reward,
        };
        let better = self
            .state
            .best
            .as_ref()
            .is_none_or(|b| e.better_than(&b.evaluation));
        if better {
            self.state.best = Some(BestNetwork {
                evaluation: e,
                net: self.state.online.clone(),
            });
        }
        (e, better)
    }

    /// The network to save: the best evaluated one, after evaluating the current network too
    /// (it may be better still).
    pub fn best_network(&mut self) -> BestNetwork {
        self.evaluate_greedy();
        self.state
            .best
            .clone()
            .expect("evaluate_greedy keeps a best")
    }

    pub fn buffer_len(&self) -> usize {
        self.replay.len()
    }

    /// Greedy Q-values for one observation.
    pub fn q_values(&mut self, obs: &[f32; OBS]) -> [f32; ACTIONS] {
        let q = self.state.online.forward(obs, 1, &mut self.cache);
        std::array::from_fn(|i| q[i])
    }

    /// ε-greedy: (action, whether it was a random — exploring — one).
    fn act(&mut self, obs: &[f32; OBS]) -> (u8, bool) {
        if self.state.rng.random::<f64>() < self.state.epsilon {
            (self.state.rng.random_range(0..ACTIONS) as u8, true)
        } else {
            (argmax(&self.q_values(obs)) as u8, false)
        }
    }

    /// One gradient step on a sampled batch; returns the loss.
    pub fn update(&mut self) -> f32 {
        let n = self.state.config.batch_size as usize;
        self.replay.sample(n, &mut self.state.rng, &mut self.batch);
        // The online network's values of the states, and with Double DQN of the next states too,
        // in one forward pass over both (one pass over the weights instead of two).
        let double = self.state.config.td_target == TdTarget::Double;
        let rows = if double { 2 * n } else { n };
        let q = self
            .state
            .online
            .forward(&self.batch.states[..rows * OBS], rows, &mut self.cache);
        let q_next = &q[n * ACTIONS..];
        Self::compute_targets(
            &self.state.target,
            &self.batch,
            double.then_some(q_next),
            &mut self.tcache,
            &mut self.targets,
        );
        let loss = self.loss_gradient(n);
        // The backward pass is for the states only: the first n rows of the forward pass.
        self.cache.keep_rows(n);
        let norm = self.state.online.backward(
            &self.batch.states[..n * OBS],
            &mut self.cache,
            &self.dq,
            &mut self.grads,
        );
        let clip = Grads::clip_coef(norm, GRAD_CLIP);
        self.state
            .adam
            .step(&mut self.state.online, &self.grads, clip);
        loss
    }

    /// The batch's mean loss; writes its gradient w.r.t. the Q-values of the states into `dq`.
    fn loss_gradient(&mut self, n: usize) -> f32 {
        let q = &self.cache.q[..n * ACTIONS];
        self.dq.clear();
        self.dq.resize(n * ACTIONS, 0.0);
        let mut loss = 0.0;
        for b in 0..n {
            let a = self.batch.action[b] as usize;
            let diff = q[b * ACTIONS + a] - self.targets[b];
            let (l, grad) = match self.state.config.loss {
                Loss::Mse => (diff * diff, 2.0 * diff),
                Loss::Huber if diff.abs() <= 1.0 => (0.5 * diff * diff, diff),
                Loss::Huber => (diff.abs() - 0.5, diff.signum()),
            };
            loss += l;
            // d/dq of the batch's mean loss
            self.dq[b * ACTIONS + a] = grad / n as f32;
        }
        loss / n as f32
    }

    /// `targets[b] = reward + discount · value(next state)`: the target network's value of the
    /// next state, at its own best action (`online_next` is `None`) or at the online network's
    /// (Double DQN: `online_next` holds the online network's values of the next states).
    fn compute_targets(
        target: &QNet,
        batch: &Batch,
        online_next: Option<&[f32]>,
        tcache: &mut Cache,
        targets: &mut Vec<f32>,
    ) {
        let n = batch.len();
        let qn = target.forward(batch.next_obs(), n, tcache);
        targets.clear();
        for b in 0..n {
            let row = &qn[b * ACTIONS..(b + 1) * ACTIONS];
            let next_value = match online_next {
                None => row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)),
                Some(online) => row[argmax(&online[b * ACTIONS..(b + 1) * ACTIONS])],
            };
            targets.push(batch.reward[b] + batch.discount[b] * next_value);
        }
    }

    /// Runs one training episode, calling `on_step` after every step.
    /// Returns `None` if the observer aborted it (the episode is then not counted).
    pub fn run_episode(
        &mut self,
        mut on_step: impl FnMut(&StepView) -> Flow,
    ) -> Option<EpisodeStats> {
        let episode = self.state.episodes_done + 1;
        let max_steps = self.state.config.max_steps;
        let mut world = World::new();
        // The replay memory keeps observations packed; the network reads them whole (`obs`).
        let mut packed = world.packed_observation();
        let mut obs = [0.0f32; OBS];
        let (mut cumulative, mut loss_sum, mut updates) = (0.0f64, 0.0f64, 0u32);
        let c = &self.state.config;
        let mut nstep = NStep::new(c.n_step, c.gamma as f32);
        let (batch, train_every) = (c.batch_size as usize, u64::from(c.train_every.max(1)));
        let (x, y) = world.position();
        self.state.heat.visit(x, y);
        loop {
            packed.unpack(&mut obs);
            let q = self.show_q.then(|| self.q_values(&obs));
            let (a, explored) = self.act(&obs);
            let out = world.step(Action::from_id(a as i64).expect("act returns 0..5"));
            let next_packed = world.packed_observation();
            cumulative += out.reward;
            let (x, y) = world.position();
            self.state.heat.visit(x, y);
            let end = if out.done {
                Some(EpisodeEnd::Terminal)
            } else if world.steps() >= max_steps {
                Some(EpisodeEnd::Truncated)
            } else {
                None
            };
            let replay = &mut self.replay;
            let step = (packed, a, out.reward as f32);
            nstep.push(step, &next_packed, end, |t| replay.push(t));
            self.state.total_steps += 1;
            if self.replay.len() >= batch && self.state.total_steps.is_multiple_of(train_every) {
                loss_sum += f64::from(self.update());
                updates += 1;
            }
            let flow = on_step(&StepView {
                world: &world,
                heat: &self.state.heat,
                episode,
                action: a,
                explored,
                reward: out.reward,
                cumulative,
                done: out.done,
                q,
            });
            if flow == Flow::Abort {
                return None;
            }
            packed = next_packed;
            if end.is_some() {
                break;
            }
        }
        let c = &self.state.config;
        self.state.epsilon = (self.state.epsilon * c.epsilon_decay).max(c.epsilon_min);
        self.state.episodes_done = episode;
        if episode.is_multiple_of(c.target_update.max(1)) {
            self.state.target = self.state.online.clone();
        }
        let stats = EpisodeStats {
            episode,
            reward: cumulative,
            length: world.steps(),
            loss: if updates > 0 {
                loss_sum / f64::from(updates)
            } else {
                0.0
            },
            epsilon: self.state.epsilon,
            end: if world.is_depleted() {
                EndReason::MeterDepleted
            } else {
                EndReason::MaxSteps
            },
            meter: world.depleted_meter(),
        };
        self.state.history.push(stats);
        Some(stats)
    }

    /// Plays episodes without learning until the replay memory holds `transitions` (at most its
    /// capacity), for measuring updates as a run with a full memory makes them: sampling from a
    /// memory far larger than the caches costs more. The episodes count as the run's.
    pub fn fill_replay(&mut self, transitions: usize) {
        let target = transitions.min(self.state.config.buffer_capacity as usize);
        let train_every = self.state.config.train_every;
        self.state.config.train_every = u32::MAX;
        while self.replay.len() < target {
            self.run_episode(|_| Flow::Continue);
        }
        self.state.config.train_every = train_every;
    }

    /// Means of reward, length and loss over the last `n` episodes.
    pub fn averages(&self, n: usize) -> (f64, f64, f64) {
        let h = &self.state.history;
        let tail = &h[h.len().saturating_sub(n)..];
        if tail.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let k = tail.len() as f64;
        (
            tail.iter().map(|s| s.reward).sum::<f64>() / k,
            tail.iter().map(|s| f64::from(s.length)).sum::<f64>() / k,
            tail.iter().map(|s| s.loss).sum::<f64>() / k,
        )
    }
}

/// Plays one greedy episode (the world is deterministic, so one tells): (steps, total reward).
pub fn greedy_episode(net: &QNet, max_steps: u32) -> (u32, f64) {
    let mut rng = Pcg64::seed_from_u64(0);
    play_episode(Some(net), 0.0, &mut rng, max_steps)
}

/// Plays one episode with an ε-greedy policy of `net` (`None`: the uniformly random policy):
/// (steps survived, total reward).
pub fn play_episode(
    net: Option<&QNet>,
    epsilon: f64,
    rng: &mut Pcg64,
    max_steps: u32,
) -> (u32, f64) {
    let mut cache = Cache::default();
    let mut w = World::new();
    let mut total = 0.0;
    loop {
        let explore = net.is_none() || rng.random::<f64>() < epsilon;
        let a = if explore {
            rng.random_range(0..ACTIONS)
        } else {
            let net = net.expect("a network when not exploring");
            argmax(net.forward(&w.observation(), 1, &mut cache))
        };
        let out = w.step(Action::from_id(a as i64).expect("an action id below 5"));
        total += out.reward;
        if out.done || w.steps() >= max_steps {
            return (w.steps(), total);
        }
    }
}

/// Survival (steps) of `episodes` ε-greedy episodes of `net` (`None`: random), seeded.
pub fn evaluate(
    net: Option<&QNet>,
    epsilon: f64,
    episodes: usize,
    seed: u64,
    max_steps: u32,
) -> Vec<u32> {
    let mut rng = Pcg64::seed_from_u64(seed);
    (0..episodes)
        .map(|_| play_episode(net, epsilon, &mut rng, max_steps).0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_the_replay_memory_learns_nothing_and_leaves_the_settings_as_they_were() {
        let config = TrainingConfig {
            buffer_capacity: 600,
            batch_size: 32,
            seed: 4,
            ..Default::default()
        };
        let mut t = Trainer::new(config.clone());
        let before = t.state.online.clone();
        t.fill_replay(10_000);
        assert_eq!(t.buffer_len(), 600, "filled to its capacity, not beyond");
        assert!(
            t.state.history.iter().all(|e| e.loss == 0.0),
            "an update ran"
        );
        assert_eq!(t.state.online, before, "the network changed while filling");
        assert_eq!(t.state.config, config);
        t.update();
        assert_ne!(t.state.online, before, "updates run after the filling");
    }
}
