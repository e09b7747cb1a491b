//! Uniform replay buffer in preallocated arrays (no per-transition allocation), and the n-step
//! accumulator that turns single steps into n-step transitions.

use crate::nn::OBS;
use rand::Rng;

pub struct ReplayBuffer {
    capacity: usize,
    len: usize,
    next: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    action: Vec<u8>,
    reward: Vec<f32>,
    discount: Vec<f32>,
}

/// A sampled batch, laid out for the network (row-major).
#[derive(Default)]
pub struct Batch {
    /// The `n` states, then their `n` next states: one array, so that the online network can
    /// evaluate both in one forward pass (Double DQN needs its values of the next states too).
    pub states: Vec<f32>,
    pub action: Vec<u8>,
    /// The return summed over the transition's steps.
    pub reward: Vec<f32>,
    /// What the next state's value is multiplied by: γᵏ after k steps, 0 after a death.
    pub discount: Vec<f32>,
}

impl Batch {
    /// Transitions in the batch.
    pub fn len(&self) -> usize {
        self.action.len()
    }

    pub fn is_empty(&self) -> bool {
        self.action.is_empty()
    }

    /// The states, `[n, OBS]`.
    pub fn obs(&self) -> &[f32] {
        &self.states[..self.len() * OBS]
    }

    /// The next states, `[n, OBS]`.
    pub fn next_obs(&self) -> &[f32] {
        &self.states[self.len() * OBS..]
    }
}

impl ReplayBuffer {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ReplayBuffer {
            capacity,
            len: 0,
            next: 0,
            obs: vec![0.0; capacity * OBS],
            next_obs: vec![0.0; capacity * OBS],
            action: vec![0; capacity],
            reward: vec![0.0; capacity],
            discount: vec![0.0; capacity],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, t: &Transition) {
        let i = self.next;
        self.obs[i * OBS..(i + 1) * OBS].copy_from_slice(&t.obs);
        self.next_obs[i * OBS..(i + 1) * OBS].copy_from_slice(&t.next_obs);
        self.action[i] = t.action;
        self.reward[i] = t.reward;
        self.discount[i] = t.discount;
        self.next = (i + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Samples `n` transitions uniformly with replacement into `out`.
    pub fn sample(&self, n: usize, rng: &mut impl Rng, out: &mut Batch) {
        out.states.clear();
        out.states.resize(2 * n * OBS, 0.0);
        out.action.clear();
        out.reward.clear();
        out.discount.clear();
        let (states, next_states) = out.states.split_at_mut(n * OBS);
        let rows = states
            .chunks_exact_mut(OBS)
            .zip(next_states.chunks_exact_mut(OBS));
        for (state, next_state) in rows {
            let i = rng.random_range(0..self.len);
            state.copy_from_slice(&self.obs[i * OBS..(i + 1) * OBS]);
            next_state.copy_from_slice(&self.next_obs[i * OBS..(i + 1) * OBS]);
            out.action.push(self.action[i]);
            out.reward.push(self.reward[i]);
            out.discount.push(self.discount[i]);
        }
    }
}

/// One stored experience: from `obs`, `action` earned `reward` (summed over its steps) and led to
/// `next_obs`, whose value counts with weight `discount`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub obs: [f32; OBS],
    pub action: u8,
    pub reward: f32,
    pub next_obs: [f32; OBS],
    pub discount: f32,
}

/// Turns an episode's steps into n-step transitions: each step's transition carries the
/// discounted rewards of the next n steps and bootstraps from the state n steps later. At the
/// end of an episode the last steps get shorter horizons; after a death nothing is bootstrapped,
/// after the step cap (not a real end) the last state still is.
pub struct NStep {
    n: usize,
    gamma: f32,
    /// (observation, action, reward) of the steps not yet emitted, oldest first.
    pending: std::collections::VecDeque<([f32; OBS], u8, f32)>,
}

impl NStep {
    pub fn new(n: u32, gamma: f32) -> Self {
        NStep {
            n: n.max(1) as usize,
            gamma,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// Records one step (`next` is the observation after it) and emits the transitions it
    /// completes: one once n steps are pending, all of them when the episode ends here.
    pub fn push(
        &mut self,
        step: ([f32; OBS], u8, f32),
        next: &[f32; OBS],
        end: Option<EpisodeEnd>,
        mut emit: impl FnMut(&Transition),
    ) {
        self.pending.push_back(step);
        match end {
            None => {
                if self.pending.len() == self.n {
                    emit(&self.pop_oldest(next, true));
                }
            }
            Some(end) => {
                while !self.pending.is_empty() {
                    emit(&self.pop_oldest(next, end == EpisodeEnd::Truncated));
                }
            }
        }
    }

    fn pop_oldest(&mut self, next: &[f32; OBS], bootstrap: bool) -> Transition {
        let mut reward = 0.0;
        let mut weight = 1.0;
        for (_, _, r) in &self.pending {
            reward += weight * r;
            weight *= self.gamma;
        }
        let (obs, action, _) = self.pending.pop_front().expect("a pending step");
        Transition {
            obs,
            action,
            reward,
            next_obs: *next,
            discount: if bootstrap { weight } else { 0.0 },
        }
    }
}

/// How an episode ended, for [`NStep::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeEnd {
    /// The agent died: no value after it.
    Terminal,
    /// The step cap stopped it: the world would have gone on.
    Truncated,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(v: f32) -> [f32; OBS] {
        [v; OBS]
    }

    fn run(n: u32, rewards: &[f32], end: EpisodeEnd) -> Vec<Transition> {
        let mut acc = NStep::new(n, 0.5);
        let mut out = Vec::new();
        for (i, r) in rewards.iter().enumerate() {
            let last = i + 1 == rewards.len();
            acc.push(
                (obs(i as f32), i as u8, *r),
                &obs(i as f32 + 1.0),
                last.then_some(end),
                |t| out.push(t.clone()),
            );
        }
        out
    }

    #[test]
    fn one_step_is_plain_dqn() {
        let t = run(1, &[1.0, 2.0], EpisodeEnd::Terminal);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs[0]),
            (1.0, 0.5, 1.0)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs[0]),
            (2.0, 0.0, 2.0)
        );
    }

    #[test]
    fn three_steps_sum_discounted_rewards_and_shorten_at_the_end() {
        let t = run(3, &[1.0, 2.0, 4.0, 8.0], EpisodeEnd::Terminal);
        assert_eq!(t.len(), 4);
        // 1 + 0.5·2 + 0.25·4, bootstrapping from the state after step 3 with 0.5³.
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs[0]),
            (3.0, 0.125, 3.0)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs[0]),
            (6.0, 0.0, 4.0)
        );
        assert_eq!((t[2].reward, t[2].discount), (8.0, 0.0));
        assert_eq!((t[3].reward, t[3].discount, t[3].action), (8.0, 0.0, 3));
    }

    #[test]
    fn a_truncated_episode_still_bootstraps() {
        let t = run(3, &[1.0, 2.0], EpisodeEnd::Truncated);
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs[0]),
            (2.0, 0.25, 2.0)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs[0]),
            (2.0, 0.5, 2.0)
        );
    }
}
