//! The `state_update` payload of `protocol.md`, identical in inference and training.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The six meters as browsers expect them: energy, hygiene, satiation, social normalised to 0–1,
/// money in dollars, stress raw 0–100 (compat with the original servers).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct WireMeters {
    pub energy: f64,
    pub hygiene: f64,
    pub satiation: f64,
    pub money: f64,
    pub stress: f64,
    pub social: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPos {
    pub id: String,
    pub x: i32,
    pub y: i32,
    pub color: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffordanceView {
    #[serde(rename = "type")]
    pub kind: String,
    pub x: i32,
    pub y: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridView {
    pub width: u32,
    pub height: u32,
    pub agents: Vec<AgentPos>,
    pub affordances: Vec<AffordanceView>,
}

/// Element of the top-level `agents` array older browsers read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub x: i32,
    pub y: i32,
    pub color: String,
    pub last_action: Option<String>,
    pub reward: f64,
}

/// Value of the `agent_meters` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMeters {
    pub meters: WireMeters,
    pub last_action: Option<String>,
    pub reward: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: u32,
}

/// One `state_update` frame (the `"type"` tag is added by [`crate::browser::ServerMessage`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateUpdate {
    pub episode: u32,
    /// 1-based within the episode; 0 for the initial frame.
    pub step: u32,
    /// Action id taken in this step; `None` on the initial frame.
    pub action: Option<u8>,
    pub reward: f64,
    pub cumulative_reward: f64,
    pub done: bool,
    pub info: StepInfo,
    pub grid: GridView,
    pub agents: Vec<AgentView>,
    pub agent_meters: BTreeMap<String, AgentMeters>,
    pub affordances: Vec<AffordanceView>,
    /// Inference only: the Q-values of the state the action was chosen in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_values: Option<Vec<f32>>,
    /// Training only: `"x,y"` → visit count / max count over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat_map: Option<BTreeMap<String, f64>>,
}
