//! The Hamlet world of `world.md`: an 8 × 8 grid, one agent, six meters, seven affordances.
//!
//! Everything here is deterministic and allocation-free on the hot path ([`World::step`],
//! [`World::write_observation`]). The wire view for `state_update` lives in [`wire`] so no other
//! crate re-derives it.

pub mod conformance;
mod layout;
mod meter;
mod observation;
pub mod rng;
pub mod wire;
mod world;

pub use layout::{Affordance, AffordanceKind, AFFORDANCES, GRID_SIZE};
pub use meter::{Meter, N_METERS};
pub use observation::PackedObservation;
pub use world::{Action, InvalidAction, StepOutcome, World, WorldSnapshot};

/// Length of the observation vector the Q-networks read.
pub const OBS_DIM: usize = 72;
/// Number of actions (`up, down, left, right, interact`).
pub const N_ACTIONS: usize = 5;
/// Wire names of the actions, by id.
pub const ACTION_NAMES: [&str; N_ACTIONS] = ["up", "down", "left", "right", "interact"];

/// Index of the largest value, ties to the first (as `torch.argmax`): the greedy action for a row
/// of Q-values. An empty slice gives 0.
pub fn argmax(q: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in q.iter().enumerate() {
        if *v > q[best] {
            best = i;
        }
    }
    best
}
