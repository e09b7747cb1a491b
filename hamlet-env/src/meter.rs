//! The six meters (world.md): their names, bounds, starting values and passive change per step.

use serde::{Deserialize, Serialize};

pub const N_METERS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    Energy = 0,
    Hygiene = 1,
    Satiation = 2,
    Money = 3,
    Stress = 4,
    Social = 5,
}

impl Meter {
    pub const ALL: [Meter; N_METERS] = [
        Meter::Energy,
        Meter::Hygiene,
        Meter::Satiation,
        Meter::Money,
        Meter::Stress,
        Meter::Social,
    ];

    /// The meter with this wire name.
    pub fn from_name(name: &str) -> Option<Meter> {
        Meter::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The wire name (`energy`, …), as in `state_update`'s `meters`.
    pub fn name(self) -> &'static str {
        [
            "energy",
            "hygiene",
            "satiation",
            "money",
            "stress",
            "social",
        ][self as usize]
    }
}

pub(crate) const MIN: [f64; N_METERS] = [0.0, 0.0, 0.0, -100.0, 0.0, 0.0];
pub(crate) const MAX: [f64; N_METERS] = [100.0; N_METERS];
pub(crate) const START: [f64; N_METERS] = [100.0, 100.0, 100.0, 50.0, 0.0, 50.0];
pub(crate) const PASSIVE: [f64; N_METERS] = [-0.5, -0.3, -0.4, 0.0, 0.1, -0.6];
