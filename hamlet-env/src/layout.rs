//! The fixed layout: where each affordance stands and what using it does.

use crate::meter::Meter;

pub const GRID_SIZE: i32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffordanceKind {
    Bed,
    Shower,
    HomeMeal,
    FastFood,
    Job,
    Bar,
    Recreation,
}

impl AffordanceKind {
    pub const fn name(self) -> &'static str {
        match self {
            AffordanceKind::Bed => "Bed",
            AffordanceKind::Shower => "Shower",
            AffordanceKind::HomeMeal => "HomeMeal",
            AffordanceKind::FastFood => "FastFood",
            AffordanceKind::Job => "Job",
            AffordanceKind::Bar => "Bar",
            AffordanceKind::Recreation => "Recreation",
        }
    }
}

/// One affordance: its cell, its grid code and its static effects (meter deltas).
#[derive(Debug, Clone, Copy)]
pub struct Affordance {
    pub kind: AffordanceKind,
    pub x: i32,
    pub y: i32,
    pub code: u8,
    /// Static effects, in table order. For Job these are the effects the *reward* counts; the
    /// applied effects are dynamic (see `World::interact`).
    pub effects: &'static [(Meter, f64)],
}

use Meter::*;

/// The seven affordances in world order (the order of every `affordances` array on the wire).
pub const AFFORDANCES: [Affordance; 7] = [
    Affordance {
        kind: AffordanceKind::Bed,
        x: 1,
        y: 1,
        code: 1,
        effects: &[(Money, -5.0), (Energy, 50.0), (Hygiene, 5.0)],
    },
    Affordance {
        kind: AffordanceKind::Shower,
        x: 2,
        y: 2,
        code: 2,
        effects: &[(Money, -3.0), (Energy, -3.0), (Hygiene, 40.0)],
    },
    Affordance {
        kind: AffordanceKind::HomeMeal,
        x: 1,
        y: 3,
        code: 3,
        effects: &[(Money, -3.0), (Energy, 35.0), (Satiation, 45.0)],
    },
    Affordance {
        kind: AffordanceKind::FastFood,
        x: 5,
        y: 6,
        code: 4,
        effects: &[(Money, -10.0), (Energy, 15.0), (Satiation, 45.0)],
    },
    Affordance {
        kind: AffordanceKind::Job,
        x: 6,
        y: 6,
        code: 5,
        effects: &[
            (Money, 30.0),
            (Energy, -15.0),
            (Hygiene, -10.0),
            (Stress, 25.0),
        ],
    },
    Affordance {
        kind: AffordanceKind::Bar,
        x: 7,
        y: 0,
        code: 7,
        effects: &[
            (Money, -15.0),
            (Energy, -20.0),
            (Hygiene, -15.0),
            (Satiation, 30.0),
            (Stress, -25.0),
            (Social, 50.0),
        ],
    },
    Affordance {
        kind: AffordanceKind::Recreation,
        x: 0,
        y: 7,
        code: 6,
        effects: &[(Money, -8.0), (Energy, 10.0), (Stress, -40.0)],
    },
];

/// Affordance index per cell (row-major), `u8::MAX` for an empty cell. Built at compile time so the
/// step loop does a single load.
pub(crate) const CELL_AFFORDANCE: [u8; 64] = {
    let mut t = [u8::MAX; 64];
    let mut i = 0;
    while i < AFFORDANCES.len() {
        let a = &AFFORDANCES[i];
        t[(a.y * GRID_SIZE + a.x) as usize] = i as u8;
        i += 1;
    }
    t
};

/// The grid part of the observation without the agent (row-major affordance codes).
pub(crate) const BASE_GRID_CODES: [f32; 64] = {
    let mut t = [0.0f32; 64];
    let mut i = 0;
    while i < AFFORDANCES.len() {
        let a = &AFFORDANCES[i];
        t[(a.y * GRID_SIZE + a.x) as usize] = a.code as f32;
        i += 1;
    }
    t
};
