//! The observation the Q-networks read, packed for the replay memory.

use crate::layout::BASE_GRID_CODES;
use crate::meter::N_METERS;
use crate::OBS_DIM;

/// Floats of the observation that vary: the position (x/8, y/8) and the six normalised meters.
pub(crate) const OBS_HEAD: usize = 2 + N_METERS;

/// An observation in the 33 bytes that vary between observations: its first eight floats and the
/// agent's cell. The other 64 floats are the grid's codes, the same in every observation but for
/// the agent's cell (8.0) — so a replay memory keeps 36 bytes per observation instead of 288, and
/// sampling a batch reads one cache line per observation instead of five.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PackedObservation {
    pub(crate) head: [f32; OBS_HEAD],
    /// `y · GRID_SIZE + x`
    pub(crate) cell: u8,
}

impl PackedObservation {
    /// Writes the whole observation: the same 72 floats as [`World::write_observation`].
    pub fn unpack(&self, out: &mut [f32; OBS_DIM]) {
        out[..OBS_HEAD].copy_from_slice(&self.head);
        out[OBS_HEAD..].copy_from_slice(&BASE_GRID_CODES);
        out[OBS_HEAD + self.cell as usize] = 8.0;
    }

    /// The agent's cell, `y · GRID_SIZE + x`.
    pub fn cell(&self) -> usize {
        self.cell as usize
    }
}
