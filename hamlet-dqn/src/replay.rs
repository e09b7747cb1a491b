//! Uniform replay buffer in preallocated arrays (no per-transition allocation).

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
    done: Vec<f32>,
}

/// A sampled batch, laid out for the network (row-major).
#[derive(Default)]
pub struct Batch {
    pub obs: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub action: Vec<u8>,
    pub reward: Vec<f32>,
    pub done: Vec<f32>,
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
            done: vec![0.0; capacity],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(
        &mut self,
        obs: &[f32; OBS],
        action: u8,
        reward: f32,
        next: &[f32; OBS],
        done: bool,
    ) {
        let i = self.next;
        self.obs[i * OBS..(i + 1) * OBS].copy_from_slice(obs);
        self.next_obs[i * OBS..(i + 1) * OBS].copy_from_slice(next);
        self.action[i] = action;
        self.reward[i] = reward;
        self.done[i] = if done { 1.0 } else { 0.0 };
        self.next = (i + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Samples `n` transitions uniformly with replacement into `out`.
    pub fn sample(&self, n: usize, rng: &mut impl Rng, out: &mut Batch) {
        out.obs.clear();
        out.next_obs.clear();
        out.action.clear();
        out.reward.clear();
        out.done.clear();
        for _ in 0..n {
            let i = rng.random_range(0..self.len);
            out.obs.extend_from_slice(&self.obs[i * OBS..(i + 1) * OBS]);
            out.next_obs
                .extend_from_slice(&self.next_obs[i * OBS..(i + 1) * OBS]);
            out.action.push(self.action[i]);
            out.reward.push(self.reward[i]);
            out.done.push(self.done[i]);
        }
    }
}
