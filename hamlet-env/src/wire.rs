//! The world as `state_update` shows it (protocol.md), built from the shared ipc-proto types.

use crate::layout::{AFFORDANCES, GRID_SIZE};
use crate::world::{Meter, World};
use crate::ACTION_NAMES;
use ipc_proto::wire::{
    AffordanceView, AgentMeters, AgentPos, AgentView, GridView, StateUpdate, StepInfo, WireMeters,
};
use std::collections::BTreeMap;

pub const AGENT_ID: &str = "agent_0";
pub const AGENT_COLOR: &str = "#3b82f6";

/// Meters in the mixed scale browsers expect: norm for energy, hygiene, satiation, social; dollars
/// for money; raw 0–100 for stress.
pub fn wire_meters(w: &World) -> WireMeters {
    let n = w.normalized();
    WireMeters {
        energy: n[Meter::Energy as usize],
        hygiene: n[Meter::Hygiene as usize],
        satiation: n[Meter::Satiation as usize],
        money: w.meter(Meter::Money),
        stress: w.meter(Meter::Stress),
        social: n[Meter::Social as usize],
    }
}

pub fn affordance_views() -> Vec<AffordanceView> {
    AFFORDANCES
        .iter()
        .map(|a| AffordanceView {
            kind: a.kind.name().to_owned(),
            x: a.x,
            y: a.y,
        })
        .collect()
}

/// What happened in the step a frame reports.
#[derive(Debug, Clone, Default)]
pub struct FrameFacts {
    pub episode: u32,
    /// `None` for the initial (step 0) frame.
    pub action: Option<u8>,
    pub reward: f64,
    pub cumulative_reward: f64,
    pub done: bool,
    pub q_values: Option<Vec<f32>>,
    pub heat_map: Option<BTreeMap<String, f64>>,
}

/// Builds a complete `state_update` for the world as it is now.
pub fn state_update(w: &World, f: FrameFacts) -> StateUpdate {
    let (x, y) = w.position();
    let last_action = f
        .action
        .and_then(|a| ACTION_NAMES.get(a as usize))
        .map(|s| (*s).to_owned());
    let affordances = affordance_views();
    let mut agent_meters = BTreeMap::new();
    agent_meters.insert(
        AGENT_ID.to_owned(),
        AgentMeters {
            meters: wire_meters(w),
            last_action: last_action.clone(),
            reward: f.reward,
        },
    );
    StateUpdate {
        episode: f.episode,
        step: w.steps(),
        action: f.action,
        reward: f.reward,
        cumulative_reward: f.cumulative_reward,
        done: f.done,
        info: StepInfo { step: w.steps() },
        grid: GridView {
            width: GRID_SIZE as u32,
            height: GRID_SIZE as u32,
            agents: vec![AgentPos {
                id: AGENT_ID.to_owned(),
                x,
                y,
                color: AGENT_COLOR.to_owned(),
            }],
            affordances: affordances.clone(),
        },
        agents: vec![AgentView {
            id: AGENT_ID.to_owned(),
            x,
            y,
            color: AGENT_COLOR.to_owned(),
            last_action,
            reward: f.reward,
        }],
        agent_meters,
        affordances,
        q_values: f.q_values,
        heat_map: f.heat_map,
    }
}

/// Visit counts over a run, rendered as the `heat_map` of protocol.md (count / max count).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeatMap {
    counts: Vec<u64>,
}

impl HeatMap {
    pub fn new() -> Self {
        HeatMap {
            counts: vec![0; (GRID_SIZE * GRID_SIZE) as usize],
        }
    }

    pub fn visit(&mut self, x: i32, y: i32) {
        if self.counts.len() != (GRID_SIZE * GRID_SIZE) as usize {
            *self = HeatMap::new();
        }
        if (0..GRID_SIZE).contains(&x) && (0..GRID_SIZE).contains(&y) {
            self.counts[(y * GRID_SIZE + x) as usize] += 1;
        }
    }

    pub fn to_wire(&self) -> BTreeMap<String, f64> {
        let max = self.counts.iter().copied().max().unwrap_or(0);
        if max == 0 {
            return BTreeMap::new();
        }
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| {
                let (x, y) = (i as i32 % GRID_SIZE, i as i32 / GRID_SIZE);
                (format!("{x},{y}"), *c as f64 / max as f64)
            })
            .collect()
    }
}
