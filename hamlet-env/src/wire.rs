//! The world as `state_update` shows it (protocol.md): the payload's types (shared by every process
//! through `ipc_proto::wire`) and how a [`World`] fills them.

use crate::layout::{AFFORDANCES, GRID_SIZE};
use crate::meter::Meter;
use crate::world::World;
use crate::ACTION_NAMES;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Text of a frame: the names every frame repeats are borrowed from constants, not allocated.
pub type Text = Cow<'static, str>;

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
    pub id: Text,
    pub x: i32,
    pub y: i32,
    pub color: Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffordanceView {
    #[serde(rename = "type")]
    pub kind: Text,
    pub x: i32,
    pub y: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridView {
    pub width: u32,
    pub height: u32,
    pub agents: Vec<AgentPos>,
    #[serde(serialize_with = "serialize_affordances")]
    pub affordances: AffordanceList,
}

/// Element of the top-level `agents` array older browsers read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: Text,
    pub x: i32,
    pub y: i32,
    pub color: Text,
    pub last_action: Option<Text>,
    pub reward: f64,
}

/// Value of the `agent_meters` map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMeters {
    pub meters: WireMeters,
    pub last_action: Option<Text>,
    pub reward: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: u32,
}

/// One `state_update` frame (the `"type"` tag is added by `ipc_proto::browser::ServerMessage`).
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
    pub agent_meters: BTreeMap<Text, AgentMeters>,
    #[serde(serialize_with = "serialize_affordances")]
    pub affordances: AffordanceList,
    /// Inference only: the Q-values of the state the action was chosen in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_values: Option<Vec<f32>>,
    /// Training only: `"x,y"` → visit count / max count over the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat_map: Option<BTreeMap<String, f64>>,
    /// Whether the action was a random (exploring) one: training always, inference once ε > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explored: Option<bool>,
    /// Inside the network, after `set_detail` (inference only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Activations>,
    /// Training with `pacing: replay`: a recorded step, played beside the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<bool>,
    /// With `replay`: the episode training has reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_episode: Option<u32>,
}

/// The hidden layers of the network that chose the action (protocol.md `activations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Activations {
    pub h1: Vec<f32>,
    pub h2: Vec<f32>,
    /// Dueling networks: the state value V(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
    /// Dueling networks: the advantages A(s, a).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advantage: Option<Vec<f32>>,
    /// The strongest connections from `h2` to the chosen action: `[unit, h2[unit] · weight]`,
    /// largest magnitude first (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(u32, f32)>,
}

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

/// A meter's range on the browser's scale ([`wire_meters`]): 0–1 for the normalised ones, dollars
/// for money, 0–100 for stress.
pub fn wire_range(m: Meter) -> (f64, f64) {
    match m {
        Meter::Money | Meter::Stress => World::meter_range(m),
        _ => (0.0, 1.0),
    }
}

/// `world` with meter `m` set to `v` on the browser's scale (clamped to its range): the inverse
/// of [`wire_meters`], for "what if" probes.
pub fn with_wire_meter(world: &World, m: Meter, v: f64) -> World {
    let (lo, hi) = World::meter_range(m);
    let raw = match m {
        Meter::Money | Meter::Stress => v,
        _ => lo + v * (hi - lo),
    };
    let mut s = world.snapshot();
    s.meters[m as usize] = raw;
    World::restore(&s)
}

/// A frame's affordances: in this world always [`AFFORDANCE_VIEWS`], borrowed; owned when read
/// back from the wire.
pub type AffordanceList = Cow<'static, [AffordanceView]>;

/// The world's affordances as frames list them (the same in every frame, twice: in `grid` and at
/// the top level).
pub static AFFORDANCE_VIEWS: [AffordanceView; AFFORDANCES.len()] = [
    affordance_view(0),
    affordance_view(1),
    affordance_view(2),
    affordance_view(3),
    affordance_view(4),
    affordance_view(5),
    affordance_view(6),
];

const fn affordance_view(i: usize) -> AffordanceView {
    let a = &AFFORDANCES[i];
    AffordanceView {
        kind: Cow::Borrowed(a.kind.name()),
        x: a.x,
        y: a.y,
    }
}

/// Writes a frame's affordance list. As JSON, the world's own list is written from its text,
/// encoded once: the two copies every frame carries were 40 % of a frame's JSON encoding time
/// (BENCHMARKS.md, issue 19). `RawValue` writes its text verbatim only through serde_json, the one
/// human-readable format frames are written in; MessagePack (not human-readable) gets the list.
fn serialize_affordances<S: Serializer>(list: &AffordanceList, s: S) -> Result<S::Ok, S::Error> {
    static AS_JSON: OnceLock<Box<RawValue>> = OnceLock::new();
    let is_the_worlds = std::ptr::eq(list.as_ref(), AFFORDANCE_VIEWS.as_slice());
    if is_the_worlds && s.is_human_readable() {
        let json = AS_JSON.get_or_init(|| {
            serde_json::value::to_raw_value(AFFORDANCE_VIEWS.as_slice())
                .expect("the affordances serialise")
        });
        return json.serialize(s);
    }
    list.serialize(s)
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
    pub explored: Option<bool>,
    pub activations: Option<Activations>,
}

/// Builds a complete `state_update` for the world as it is now.
pub fn state_update(w: &World, f: FrameFacts) -> StateUpdate {
    let (x, y) = w.position();
    let last_action = f
        .action
        .and_then(|a| ACTION_NAMES.get(a as usize))
        .map(|s| Cow::Borrowed(*s));
    let affordances = Cow::Borrowed(AFFORDANCE_VIEWS.as_slice());
    let mut agent_meters = BTreeMap::new();
    agent_meters.insert(
        Cow::Borrowed(AGENT_ID),
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
                id: Cow::Borrowed(AGENT_ID),
                x,
                y,
                color: Cow::Borrowed(AGENT_COLOR),
            }],
            affordances: affordances.clone(),
        },
        agents: vec![AgentView {
            id: Cow::Borrowed(AGENT_ID),
            x,
            y,
            color: Cow::Borrowed(AGENT_COLOR),
            last_action,
            reward: f.reward,
        }],
        agent_meters,
        affordances,
        q_values: f.q_values,
        heat_map: f.heat_map,
        explored: f.explored,
        activations: f.activations,
        replay: None,
        live_episode: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a frame borrows from constants are written as plain strings, and a frame read
    /// back (its names now owned) equals the one written: borrowing changed the cost, not the
    /// wire.
    #[test]
    fn a_frame_borrows_its_names_and_reads_back_equal() {
        let w = World::new();
        let facts = FrameFacts {
            action: Some(2),
            ..Default::default()
        };
        let frame = state_update(&w, facts);
        assert!(matches!(frame.affordances[0].kind, Cow::Borrowed("Bed")));
        let json = serde_json::to_value(&frame).unwrap();
        assert_eq!(json["affordances"][0]["type"], "Bed");
        assert_eq!(json["grid"]["affordances"], json["affordances"]);
        assert_eq!(
            json["agents"][0],
            serde_json::json!({"id": "agent_0", "x": 4, "y": 4, "color": "#3b82f6",
                               "last_action": ACTION_NAMES[2], "reward": 0.0})
        );
        assert_eq!(
            json["agent_meters"]["agent_0"]["last_action"],
            ACTION_NAMES[2]
        );
        let back: StateUpdate = serde_json::from_value(json).unwrap();
        assert!(matches!(back.affordances[0].kind, Cow::Owned(_)));
        assert_eq!(back, frame);
    }

    /// The world's affordance list, written from its text encoded once, is the same JSON as the
    /// list written item by item; MessagePack gets the list itself and reads back equal.
    #[test]
    fn the_worlds_affordances_are_written_as_the_list_itself_would_be() {
        let frame = state_update(&World::new(), FrameFacts::default());
        assert!(matches!(frame.affordances, Cow::Borrowed(_)));
        let mut listed = frame.clone();
        listed.affordances = Cow::Owned(frame.affordances.to_vec());
        listed.grid.affordances = listed.affordances.clone();
        let json = serde_json::to_string(&frame).unwrap();
        assert_eq!(json, serde_json::to_string(&listed).unwrap());
        assert!(json.contains(r#""affordances":[{"type":"Bed","x":1,"y":1},"#));
        let packed = rmp_serde::to_vec_named(&frame).unwrap();
        assert_eq!(packed, rmp_serde::to_vec_named(&listed).unwrap());
        let back: StateUpdate = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(back, frame);
    }
}
