//! Uniform replay buffer of packed transitions (preallocated: no per-transition allocation), and
//! the n-step accumulator that turns single steps into n-step transitions.

use crate::nn::OBS;
use hamlet_env::PackedObservation;
use rand::Rng;

pub struct ReplayBuffer {
    capacity: usize,
    next: usize,
    /// Oldest overwritten first once full. A transition is 84 bytes: sampling one reads about
    /// two cache lines, where two unpacked observations were ten.
    transitions: Vec<Transition>,
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
            next: 0,
            transitions: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.transitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
    }

    pub fn push(&mut self, t: &Transition) {
        if self.transitions.len() < self.capacity {
            self.transitions.push(*t);
        } else {
            self.transitions[self.next] = *t;
        }
        self.next = (self.next + 1) % self.capacity;
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
            let t = &self.transitions[rng.random_range(0..self.len())];
            t.obs.unpack(state.try_into().expect("rows of OBS floats"));
            t.next_obs
                .unpack(next_state.try_into().expect("rows of OBS floats"));
            out.action.push(t.action);
            out.reward.push(t.reward);
            out.discount.push(t.discount);
        }
    }
}

/// One stored experience: from `obs`, `action` earned `reward` (summed over its steps) and led to
/// `next_obs`, whose value counts with weight `discount`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub obs: PackedObservation,
    pub action: u8,
    pub reward: f32,
    pub next_obs: PackedObservation,
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
    pending: std::collections::VecDeque<(PackedObservation, u8, f32)>,
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
        step: (PackedObservation, u8, f32),
        next: &PackedObservation,
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

    fn pop_oldest(&mut self, next: &PackedObservation, bootstrap: bool) -> Transition {
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

    /// A distinct observation per `i`: the agent in cell `i` (row 0).
    fn obs(i: usize) -> PackedObservation {
        hamlet_env::World::new_at(i as i32, 0).packed_observation()
    }

    fn run(n: u32, rewards: &[f32], end: EpisodeEnd) -> Vec<Transition> {
        let mut acc = NStep::new(n, 0.5);
        let mut out = Vec::new();
        for (i, r) in rewards.iter().enumerate() {
            let last = i + 1 == rewards.len();
            acc.push(
                (obs(i), i as u8, *r),
                &obs(i + 1),
                last.then_some(end),
                |t| out.push(*t),
            );
        }
        out
    }

    #[test]
    fn a_full_buffer_replaces_its_oldest_and_samples_whole_observations() {
        let mut buffer = ReplayBuffer::new(3);
        for i in 0..5 {
            buffer.push(&Transition {
                obs: obs(i),
                action: i as u8,
                reward: i as f32,
                next_obs: obs(i + 1),
                discount: 0.5,
            });
        }
        assert_eq!(buffer.len(), 3);
        let mut rng = <rand_pcg::Pcg64 as rand::SeedableRng>::seed_from_u64(7);
        let mut batch = Batch::default();
        buffer.sample(64, &mut rng, &mut batch);
        let mut seen = std::collections::BTreeSet::new();
        for b in 0..64 {
            let i = batch.action[b] as usize;
            assert!((2..5).contains(&i), "transition {i} was overwritten");
            seen.insert(i);
            let row = b * OBS..(b + 1) * OBS;
            let world = |x: usize| hamlet_env::World::new_at(x as i32, 0).observation();
            assert_eq!(batch.obs()[row.clone()], world(i), "state of row {b}");
            assert_eq!(batch.next_obs()[row], world(i + 1), "next state of row {b}");
            assert_eq!((batch.reward[b], batch.discount[b]), (i as f32, 0.5));
        }
        assert_eq!(seen.len(), 3, "every stored transition is drawn");
        // What ARCHITECTURE.md says a stored transition costs.
        assert_eq!(std::mem::size_of::<Transition>(), 84);
    }

    #[test]
    fn one_step_is_plain_dqn() {
        let t = run(1, &[1.0, 2.0], EpisodeEnd::Terminal);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs.cell()),
            (1.0, 0.5, 1)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs.cell()),
            (2.0, 0.0, 2)
        );
    }

    #[test]
    fn three_steps_sum_discounted_rewards_and_shorten_at_the_end() {
        let t = run(3, &[1.0, 2.0, 4.0, 8.0], EpisodeEnd::Terminal);
        assert_eq!(t.len(), 4);
        // 1 + 0.5·2 + 0.25·4, bootstrapping from the state after step 3 with 0.5³.
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs.cell()),
            (3.0, 0.125, 3)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs.cell()),
            (6.0, 0.0, 4)
        );
        assert_eq!((t[2].reward, t[2].discount), (8.0, 0.0));
        assert_eq!((t[3].reward, t[3].discount, t[3].action), (8.0, 0.0, 3));
    }

    #[test]
    fn a_truncated_episode_still_bootstraps() {
        let t = run(3, &[1.0, 2.0], EpisodeEnd::Truncated);
        assert_eq!(
            (t[0].reward, t[0].discount, t[0].next_obs.cell()),
            (2.0, 0.25, 2)
        );
        assert_eq!(
            (t[1].reward, t[1].discount, t[1].next_obs.cell()),
            (2.0, 0.5, 2)
        );
    }
}
