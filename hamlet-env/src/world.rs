//! The rules: one step of the world, the reward and the observation, in the order `world.md` gives.

use crate::layout::{AffordanceKind, AFFORDANCES, CELL_AFFORDANCE, GRID_SIZE};
use crate::meter::{Meter, MAX, MIN, N_METERS, PASSIVE, START};
use crate::observation::{PackedObservation, OBS_HEAD};
use crate::OBS_DIM;
use serde::{Deserialize, Serialize};

/// The world's raw state: enough to continue stepping bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorldSnapshot {
    /// energy, hygiene, satiation, money, stress, social — raw values.
    pub meters: [f64; 6],
    pub x: i32,
    pub y: i32,
    /// Steps taken in the current episode.
    pub step: u32,
}

const START_POS: (i32, i32) = (4, 4);
const DEATH_PENALTY: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up = 0,
    Down = 1,
    Left = 2,
    Right = 3,
    Interact = 4,
}

/// An action id outside `0..=4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidAction(pub i64);

impl std::fmt::Display for InvalidAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "action {} is not one of 0..=4", self.0)
    }
}
impl std::error::Error for InvalidAction {}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Up,
        Action::Down,
        Action::Left,
        Action::Right,
        Action::Interact,
    ];

    pub fn from_id(id: i64) -> Result<Action, InvalidAction> {
        usize::try_from(id)
            .ok()
            .and_then(|i| Action::ALL.get(i).copied())
            .ok_or(InvalidAction(id))
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        crate::ACTION_NAMES[self as usize]
    }
}

/// What one step produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    pub reward: f64,
    /// A meter ran out (energy, hygiene or satiation ≤ 0). The world has no step limit of its own.
    pub done: bool,
}

/// The world state. Copy it freely: it is 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct World {
    meters: [f64; N_METERS],
    x: i32,
    y: i32,
    step: u32,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn norm(i: usize, v: f64) -> f64 {
    (v - MIN[i]) / (MAX[i] - MIN[i])
}

/// Level reward for one normalised meter (reward term (a)).
#[inline]
fn level_reward(i: usize, n: f64) -> f64 {
    if i == Meter::Stress as usize {
        if n < 0.2 {
            0.5
        } else if n < 0.5 {
            0.2
        } else if n < 0.8 {
            -0.5
        } else {
            -2.0
        }
    } else {
        let (hi, mid, lo) = if i == Meter::Money as usize {
            (0.6, 0.4, 0.2)
        } else {
            (0.8, 0.5, 0.2)
        };
        if n > hi {
            0.5
        } else if n > mid {
            0.2
        } else if n > lo {
            -0.5
        } else {
            -2.0
        }
    }
}

impl World {
    /// A world as after `reset`.
    pub fn new() -> Self {
        World {
            meters: START,
            x: START_POS.0,
            y: START_POS.1,
            step: 0,
        }
    }

    pub fn reset(&mut self) {
        *self = World::new();
    }

    /// A fresh world (meters at their start values) with the agent on cell (x, y), clamped to the
    /// grid — for episodes that start somewhere other than world.md's (4, 4).
    pub fn new_at(x: i32, y: i32) -> Self {
        World {
            x: x.clamp(0, GRID_SIZE - 1),
            y: y.clamp(0, GRID_SIZE - 1),
            ..World::new()
        }
    }

    /// The cells without an affordance, row by row: where a random start may put the agent.
    pub fn empty_cells() -> impl Iterator<Item = (i32, i32)> {
        (0..GRID_SIZE * GRID_SIZE)
            .filter(|i| CELL_AFFORDANCE[*i as usize] == u8::MAX)
            .map(|i| (i % GRID_SIZE, i / GRID_SIZE))
    }

    /// The meter that ran out (energy, hygiene, satiation — the first of them at 0, in that order),
    /// if one has (world.md rule 5).
    pub fn depleted_meter(&self) -> Option<Meter> {
        [Meter::Energy, Meter::Hygiene, Meter::Satiation]
            .into_iter()
            .find(|m| self.meters[*m as usize] <= 0.0)
    }

    pub fn position(&self) -> (i32, i32) {
        (self.x, self.y)
    }

    /// Steps taken since the last reset.
    pub fn steps(&self) -> u32 {
        self.step
    }

    /// Raw meter values (energy, hygiene, satiation, money, stress, social).
    pub fn meters(&self) -> [f64; N_METERS] {
        self.meters
    }

    pub fn meter(&self, m: Meter) -> f64 {
        self.meters[m as usize]
    }

    pub fn normalized(&self) -> [f64; N_METERS] {
        std::array::from_fn(|i| norm(i, self.meters[i]))
    }

    /// True when a meter has run out — the state a `done` step leaves behind.
    pub fn is_depleted(&self) -> bool {
        self.meters[0] <= 0.0 || self.meters[1] <= 0.0 || self.meters[2] <= 0.0
    }

    #[inline]
    fn add(&mut self, m: usize, delta: f64) {
        self.meters[m] = (self.meters[m] + delta).clamp(MIN[m], MAX[m]);
    }

    /// Steps with an action id from the wire or a network; an id outside 0..=4 changes nothing.
    pub fn step_id(&mut self, id: i64) -> Result<StepOutcome, InvalidAction> {
        Action::from_id(id).map(|a| self.step(a))
    }

    /// One step, in the order of `world.md`.
    pub fn step(&mut self, action: Action) -> StepOutcome {
        let prev = self.normalized();
        let mut interacted: Option<usize> = None;
        match action {
            Action::Interact => interacted = self.interact(),
            mv => {
                let (dx, dy) = match mv {
                    Action::Up => (0, -1),
                    Action::Down => (0, 1),
                    Action::Left => (-1, 0),
                    _ => (1, 0),
                };
                self.x = (self.x + dx).clamp(0, GRID_SIZE - 1);
                self.y = (self.y + dy).clamp(0, GRID_SIZE - 1);
                // The cost is paid even when a wall leaves the agent in place.
                self.add(Meter::Energy as usize, -0.5);
                self.add(Meter::Hygiene as usize, -0.3);
                self.add(Meter::Satiation as usize, -0.4);
            }
        }
        for (i, d) in PASSIVE.iter().enumerate() {
            self.add(i, *d);
        }
        let mut reward = self.level_reward() + self.proximity_reward();
        if let Some(a) = interacted {
            reward += need_reward(&prev, a);
        }
        let done = self.is_depleted();
        if done {
            reward -= DEATH_PENALTY;
        }
        self.step += 1;
        StepOutcome { reward, done }
    }

    /// Uses the affordance on the agent's cell; returns its index when the interaction succeeded.
    fn interact(&mut self) -> Option<usize> {
        let idx = CELL_AFFORDANCE[(self.y * GRID_SIZE + self.x) as usize];
        let Some(a) = AFFORDANCES.get(idx as usize) else {
            self.add(Meter::Energy as usize, -1.0);
            return None;
        };
        if a.kind == AffordanceKind::Job {
            let n = self.normalized();
            let tired = n[Meter::Energy as usize] < 0.4 || n[Meter::Hygiene as usize] < 0.4;
            let pay = if tired { 15.0 } else { 30.0 };
            self.add(Meter::Money as usize, pay);
            self.add(Meter::Energy as usize, -15.0);
            self.add(Meter::Hygiene as usize, -10.0);
            self.add(Meter::Stress as usize, 25.0);
            self.add(Meter::Social as usize, 0.05);
            return Some(idx as usize);
        }
        let money = self.meters[Meter::Money as usize];
        let unaffordable = a
            .effects
            .iter()
            .any(|&(m, d)| m == Meter::Money && d < 0.0 && money < -d);
        if unaffordable {
            self.add(Meter::Energy as usize, -1.0);
            return None;
        }
        for &(m, d) in a.effects {
            self.add(m as usize, d);
        }
        Some(idx as usize)
    }

    /// Reward term (a): meter levels.
    fn level_reward(&self) -> f64 {
        (0..N_METERS)
            .map(|i| level_reward(i, norm(i, self.meters[i])))
            .sum()
    }

    /// Reward term (c): shaping toward the affordance of the most urgent need.
    fn proximity_reward(&self) -> f64 {
        const CANDIDATES: [(Meter, usize); 5] = [
            (Meter::Energy, 0),    // Bed
            (Meter::Hygiene, 1),   // Shower
            (Meter::Satiation, 2), // HomeMeal
            (Meter::Money, 4),     // Job
            (Meter::Social, 5),    // Bar
        ];
        const RECREATION: usize = 6;
        let mut best: Option<(f64, usize)> = None;
        for (m, target) in CANDIDATES {
            let n = norm(m as usize, self.meters[m as usize]);
            if n < 0.5 {
                let urgency = 1.0 - n;
                if best.is_none_or(|(u, _)| urgency > u) {
                    best = Some((urgency, target));
                }
            }
        }
        let stress = norm(Meter::Stress as usize, self.meters[Meter::Stress as usize]);
        if stress > 0.5 && stress > best.map_or(0.0, |(u, _)| u) {
            best = Some((stress, RECREATION));
        }
        match best {
            None => 0.0,
            Some((urgency, t)) => {
                let a = &AFFORDANCES[t];
                let dist = ((self.x - a.x).abs() + (self.y - a.y).abs()) as f64;
                urgency * (1.0 - dist / 16.0) * 0.5
            }
        }
    }

    /// Writes the 72-float observation into `out` without allocating.
    pub fn write_observation(&self, out: &mut [f32; OBS_DIM]) {
        self.packed_observation().unpack(out);
    }

    /// The observation's varying part; [`PackedObservation::unpack`] gives the whole of it.
    pub fn packed_observation(&self) -> PackedObservation {
        let mut head = [0.0; OBS_HEAD];
        head[0] = self.x as f32 / 8.0;
        head[1] = self.y as f32 / 8.0;
        for i in 0..N_METERS {
            head[2 + i] = norm(i, self.meters[i]) as f32;
        }
        PackedObservation {
            head,
            cell: (self.y * GRID_SIZE + self.x) as u8,
        }
    }

    pub fn observation(&self) -> [f32; OBS_DIM] {
        let mut o = [0.0; OBS_DIM];
        self.write_observation(&mut o);
        o
    }

    pub fn snapshot(&self) -> WorldSnapshot {
        WorldSnapshot {
            meters: self.meters,
            x: self.x,
            y: self.y,
            step: self.step,
        }
    }

    /// Restores a snapshot; values out of range (a corrupt snapshot) are clamped so the world's
    /// invariants hold whatever arrives.
    pub fn restore(s: &WorldSnapshot) -> World {
        World {
            meters: std::array::from_fn(|i| {
                let v = s.meters[i];
                if v.is_finite() {
                    v.clamp(MIN[i], MAX[i])
                } else {
                    START[i]
                }
            }),
            x: s.x.clamp(0, GRID_SIZE - 1),
            y: s.y.clamp(0, GRID_SIZE - 1),
            step: s.step,
        }
    }

    /// Inclusive range of a meter's raw value.
    pub fn meter_range(m: Meter) -> (f64, f64) {
        (MIN[m as usize], MAX[m as usize])
    }
}

/// Reward term (b): what a successful interaction gave, weighted by how much it was needed.
fn need_reward(prev: &[f64; N_METERS], affordance: usize) -> f64 {
    AFFORDANCES[affordance]
        .effects
        .iter()
        .filter(|&&(_, d)| d > 0.0)
        .map(|&(m, d)| {
            let mut need = 1.0 - prev[m as usize];
            if m == Meter::Money {
                need = (1.5 * need).min(1.0);
            }
            need * (d / 50.0) * 2.0
        })
        .sum()
}
