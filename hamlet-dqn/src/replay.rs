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
        let transitions = Vec::with_capacity(capacity);
        advise_huge_pages(&transitions);
        ReplayBuffer {
            capacity,
            next: 0,
            transitions,
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

/// Asks Linux to back `storage`'s allocation with 2 MB pages (transparent huge pages; honoured
/// where the system's setting is `madvise`, as on this project's machine, or `always`). Sampling
/// reads transitions at random from a memory of up to 17 MB (the dueling network's 200 000), far
/// more than 4 kB pages' translations in the TLB cover. On this project's machine (a virtual one,
/// where a TLB miss costs a two-level page walk) unpacking a dueling batch-64 sample took 6.9 % of
/// an update's profile with 4 kB pages and 1.0 % with 2 MB pages (BENCHMARKS.md, "Update cost
/// near the floor", sixth round). Called before the first push, so the pages are faulted in large.
#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(storage: &Vec<T>) {
    // madvise takes whole pages: the part of the allocation that starts and ends on a 4 kB
    // boundary. Where the page size is larger the start may be misaligned; the call then fails
    // with EINVAL and changes nothing.
    const PAGE: usize = 4096;
    let start = storage.as_ptr() as usize;
    let end = start + storage.capacity() * std::mem::size_of::<T>();
    let (from, to) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
    if to > from {
        // SAFETY: MADV_HUGEPAGE only changes the size of the pages the kernel backs [from, to)
        // with; it never changes the memory's contents, mapping or permissions. The range lies
        // inside `storage`'s allocation, which is alive for the duration of the call. A failure
        // leaves everything as it was, which is why the result is ignored.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_storage: &Vec<T>) {}

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

    /// The flags Linux keeps for the mapping that holds `addr` (`/proc/self/smaps`' `VmFlags`).
    #[cfg(target_os = "linux")]
    fn mapping_flags(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            if let Some((from, to)) = range.and_then(|(f, t)| {
                Some((
                    usize::from_str_radix(f, 16).ok()?,
                    usize::from_str_radix(t, 16).ok()?,
                ))
            }) {
                inside = (from..to).contains(&addr);
            } else if let (true, Some(flags)) = (inside, line.strip_prefix("VmFlags:")) {
                return flags.split_whitespace().map(String::from).collect();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_replay_memory_is_advised_onto_huge_pages() {
        // The dueling network's memory: 200 000 transitions, 17 MB.
        let buffer = ReplayBuffer::new(200_000);
        let middle = buffer.transitions.as_ptr() as usize + 100_000 * 84;
        let flags = mapping_flags(middle);
        // `hg`: the mapping was given MADV_HUGEPAGE.
        assert!(flags.iter().any(|f| f == "hg"), "VmFlags {flags:?}");
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
