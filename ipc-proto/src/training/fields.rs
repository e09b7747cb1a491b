//! The one table of `start_training` fields. Each row names a field, says how to read it from a
//! browser's message and where it lives in [`TrainingConfig`], gives its limits and a
//! plain-language help text. Parsing ([`parse_start`]), validation of a configuration read back
//! from a file ([`TrainingConfig::validate`]) and the form served at `GET /api/training/config`
//! ([`fields`]) are all read from it, so a field is added in one place.

use super::config::{Choice, Loss, Network, Pacing, TdTarget, TrainingConfig};
use crate::browser::ErrorCode;
use serde_json::{json, Map, Value};

/// Inclusive bounds of the numeric fields (protocol.md's, plus sane limits for the new ones).
pub mod limits {
    pub const NUM_EPISODES: (u32, u32) = (1, 100_000);
    pub const BATCH_SIZE: (u32, u32) = (1, 1024);
    pub const BUFFER_CAPACITY: (u32, u32) = (100, 1_000_000);
    pub const SHOW_EVERY: (u32, u32) = (1, 100_000);
    pub const STEP_DELAY: (f64, f64) = (0.0, 5.0);
    pub const LEARNING_RATE: (f64, f64) = (1e-6, 1.0);
    pub const GAMMA: (f64, f64) = (0.0, 1.0);
    pub const EPSILON: (f64, f64) = (0.0, 1.0);
    pub const EPSILON_DECAY: (f64, f64) = (0.5, 1.0);
    pub const TARGET_UPDATE: (u32, u32) = (1, 100_000);
    pub const MAX_STEPS: (u32, u32) = (1, 100_000);
    pub const CHECKPOINT_EVERY: (u32, u32) = (1, 100_000);
    pub const N_STEP: (u32, u32) = (1, 20);
    pub const TRAIN_EVERY: (u32, u32) = (1, 64);
    pub const EVAL_EVERY: (u32, u32) = (1, 100_000);
    pub const SNAPSHOT_EVERY: (u32, u32) = (0, 100_000);
    /// Longest model name a client may choose (without `.onnx`).
    pub const MODEL_NAME_LEN: usize = 64;
}

/// How a field is read and where it is kept.
#[derive(Clone, Copy)]
enum Kind {
    Int {
        limits: (u32, u32),
        get: fn(&TrainingConfig) -> u32,
        set: fn(&mut TrainingConfig, u32),
    },
    Float {
        limits: (f64, f64),
        get: fn(&TrainingConfig) -> f64,
        set: fn(&mut TrainingConfig, f64),
    },
    Flag {
        get: fn(&TrainingConfig) -> bool,
        set: fn(&mut TrainingConfig, bool),
    },
    Choice {
        names: fn() -> Vec<&'static str>,
        get: fn(&TrainingConfig) -> &'static str,
        /// False when the name is not one of `names`.
        set: fn(&mut TrainingConfig, &str) -> bool,
    },
    /// Blank: a random seed, chosen by the caller.
    Seed,
    /// A plain file stem for the saved model; blank: a generated name.
    ModelName,
}

/// One row of the table.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    label: &'static str,
    /// For people who are not machine-learning engineers: what the knob does to the lesson.
    help: &'static str,
    /// Shown under "Advanced" in the form; the presets set these.
    advanced: bool,
    kind: Kind,
}

macro_rules! int {
    ($name:literal, $field:ident, $limits:expr, $label:literal, $advanced:expr, $help:literal) => {
        Field {
            name: $name,
            label: $label,
            help: $help,
            advanced: $advanced,
            kind: Kind::Int {
                limits: $limits,
                get: |c| c.$field,
                set: |c, v| c.$field = v,
            },
        }
    };
}

macro_rules! float {
    ($name:literal, $field:ident, $limits:expr, $label:literal, $advanced:expr, $help:literal) => {
        Field {
            name: $name,
            label: $label,
            help: $help,
            advanced: $advanced,
            kind: Kind::Float {
                limits: $limits,
                get: |c| c.$field,
                set: |c, v| c.$field = v,
            },
        }
    };
}

macro_rules! choice {
    ($name:literal, $field:ident, $t:ty, $label:literal, $advanced:expr, $help:literal) => {
        Field {
            name: $name,
            label: $label,
            help: $help,
            advanced: $advanced,
            kind: Kind::Choice {
                names: <$t>::names,
                get: |c| c.$field.name(),
                set: |c, s| <$t>::from_name(s).map(|v| c.$field = v).is_some(),
            },
        }
    };
}

/// Every field, in the order the form shows them.
const TABLE: &[Field] = &[
    int!("num_episodes", num_episodes, limits::NUM_EPISODES, "Episodes", false,
         "How many lives the agent gets to learn from. More episodes: more time, usually a better agent."),
    Field {
        name: "stop_when_competent",
        label: "Stop when it has learned",
        help: "End the run as soon as the agent, playing its best, survives every step of an \
               episode and earns at least 1000 — no need to wait for the last episode.",
        advanced: false,
        kind: Kind::Flag {
            get: |c| c.stop_when_competent,
            set: |c, v| c.stop_when_competent = v,
        },
    },
    int!("show_every", show_every, limits::SHOW_EVERY, "Show every Nth episode", false,
         "Which episodes the class watches step by step: 1 shows every one, 10 every tenth."),
    float!("step_delay", step_delay, limits::STEP_DELAY, "Seconds per shown step", false,
           "How fast a shown episode plays: 0.2 is easy to follow, 0.02 is brisk, 0 sends steps \
            as fast as screens can draw them."),
    choice!("pacing", pacing, Pacing, "While an episode is shown", false,
            "run: training waits while the class watches (as the original Hamlet did). replay: \
             training never waits; the class watches a recording of a recent episode."),
    choice!("network", network, Network, "Network", true,
            "qnetwork: one stack of layers that scores each action. dueling: separate estimates \
             of how good the situation is and how much better each action is; larger and slower."),
    float!("learning_rate", learning_rate, limits::LEARNING_RATE, "Learning rate", true,
           "How big a step the network takes after each batch. Too large and it forgets; too \
            small and it learns slowly."),
    float!("gamma", gamma, limits::GAMMA, "Discount γ", true,
           "How much the agent cares about the future: 0.99 plans ahead, 0.5 lives for the moment."),
    float!("epsilon_start", epsilon_start, limits::EPSILON, "Exploration at the start (ε)", true,
           "The chance of a random move at first: 1 means the agent starts by trying anything."),
    float!("epsilon_min", epsilon_min, limits::EPSILON, "Least exploration (ε floor)", true,
           "The chance of a random move never falls below this, so the agent keeps trying things."),
    float!("epsilon_decay", epsilon_decay, limits::EPSILON_DECAY, "Exploration kept per episode", true,
           "After each episode the chance of a random move is multiplied by this: 0.995 fades \
            slowly, 0.9 quickly."),
    int!("batch_size", batch_size, limits::BATCH_SIZE, "Batch size", true,
         "How many remembered moves the network learns from at once."),
    int!("buffer_capacity", buffer_capacity, limits::BUFFER_CAPACITY, "Memory size", true,
         "How many past moves the agent remembers to learn from (its replay memory)."),
    int!("target_update", target_update, limits::TARGET_UPDATE, "Target copy every N episodes", true,
         "The network learns towards a frozen copy of itself, refreshed every N episodes; this \
          keeps learning steady."),
    int!("max_steps", max_steps, limits::MAX_STEPS, "Step cap per episode", true,
         "An episode ends after this many steps even if the agent is still alive."),
    int!("eval_every", eval_every, limits::EVAL_EVERY, "Test every N episodes", true,
         "Every N episodes the agent plays one episode with no random moves; the best of these \
          tests is the model that is saved."),
    int!("snapshot_every", snapshot_every, limits::SNAPSHOT_EVERY, "Snapshot every N episodes", true,
         "The time machine keeps the network every N episodes (0: eight times over the run), plus \
          the first and the best, so the class can play them side by side."),
    int!("checkpoint_every", checkpoint_every, limits::CHECKPOINT_EVERY, "Checkpoint every N episodes", true,
         "How often the run is saved, so a crash loses at most this many episodes."),
    choice!("td_target", td_target, TdTarget, "Learning target", true,
            "double: the network picks the next move and its frozen copy scores it (Double DQN). \
             max: the original DQN, which tends to overrate its moves."),
    int!("n_step", n_step, limits::N_STEP, "Steps of real reward", true,
         "How many real rewards are added up before the network's own guess fills in the rest \
          (1: classic one-step DQN)."),
    choice!("loss", loss, Loss, "Loss", true,
            "mse: big mistakes (a death's −100) count a lot, as in the original. huber: big \
             mistakes count less."),
    int!("train_every", train_every, limits::TRAIN_EVERY, "Moves per learning step", true,
         "The network learns after every Nth move (1: after every move)."),
    Field {
        name: "seed",
        label: "Seed",
        help: "Blank: a new random run each time. The same seed repeats a run exactly.",
        advanced: true,
        kind: Kind::Seed,
    },
    Field {
        name: "model_name",
        label: "Model name",
        help: "File name for the saved model (blank: a name with the date and the seed).",
        advanced: true,
        kind: Kind::ModelName,
    },
];

/// A `start_training` message that cannot be accepted: the field and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
}

impl FieldError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FieldError {
            code,
            message: message.into(),
        }
    }
}

/// Compat (protocol.md): old forms send a blank numeric input as `""`, meaning "the default".
fn is_blank(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || v.and_then(Value::as_str) == Some("")
}

fn number(key: &str, v: &Value) -> Result<f64, FieldError> {
    match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        _ => Err(FieldError::new(
            ErrorCode::InvalidField,
            format!("`{key}` must be a number"),
        )),
    }
}

/// Reads one present, non-blank field into `c`.
fn read(f: &Field, v: &Value, c: &mut TrainingConfig) -> Result<(), FieldError> {
    let key = f.name;
    let range = |lo: f64, hi: f64| {
        FieldError::new(
            ErrorCode::OutOfRange,
            format!("`{key}` must be between {lo} and {hi}"),
        )
    };
    match f.kind {
        Kind::Int { limits, set, .. } => {
            let x = number(key, v)?;
            if !x.is_finite() || x.fract() != 0.0 {
                return Err(FieldError::new(
                    ErrorCode::InvalidField,
                    format!("`{key}` must be a whole number"),
                ));
            }
            let (lo, hi) = (f64::from(limits.0), f64::from(limits.1));
            if !(lo..=hi).contains(&x) {
                return Err(range(lo, hi));
            }
            set(c, x as u32);
        }
        Kind::Float { limits, set, .. } => {
            let x = number(key, v)?;
            if !x.is_finite() || !(limits.0..=limits.1).contains(&x) {
                return Err(range(limits.0, limits.1));
            }
            set(c, x);
        }
        Kind::Flag { set, .. } => match v {
            Value::Bool(b) => set(c, *b),
            _ => {
                return Err(FieldError::new(
                    ErrorCode::InvalidField,
                    format!("`{key}` must be true or false"),
                ))
            }
        },
        Kind::Choice { names, set, .. } => {
            if !v.as_str().is_some_and(|s| set(c, s)) {
                let names: Vec<String> = names().iter().map(|n| format!("`{n}`")).collect();
                return Err(FieldError::new(
                    ErrorCode::InvalidField,
                    format!("`{key}` must be one of {}", names.join(", ")),
                ));
            }
        }
        Kind::Seed => {
            c.seed = v.as_u64().ok_or_else(|| {
                FieldError::new(
                    ErrorCode::InvalidField,
                    "`seed` must be a non-negative whole number",
                )
            })?;
        }
        Kind::ModelName => c.model_name = Some(model_stem(v)?),
    }
    Ok(())
}

/// A client-chosen model name: a plain stem (the `.onnx` suffix is optional).
fn model_stem(v: &Value) -> Result<String, FieldError> {
    let Some(s) = v.as_str() else {
        return Err(FieldError::new(
            ErrorCode::InvalidField,
            "`model_name` must be a string",
        ));
    };
    let stem = s.strip_suffix(".onnx").unwrap_or(s);
    let plain = stem.len() <= limits::MODEL_NAME_LEN
        && crate::names::is_plain_model_name(&format!("{stem}.onnx"))
        && !stem.contains(super::config::SNAPSHOT_INFIX);
    if plain {
        Ok(stem.to_owned())
    } else {
        let shown: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
        Err(FieldError::new(
            ErrorCode::InvalidModelName,
            format!("`{shown}` is not a plain model name (letters, digits, `._-`, and not `.snap-e`, which names snapshots)"),
        ))
    }
}

/// A `start_training` message's fields as a configuration: blanks take the defaults, a blank seed
/// takes `random_seed()`. Unknown fields are ignored (protocol.md).
pub fn parse_start(
    m: &Map<String, Value>,
    random_seed: impl FnOnce() -> u64,
) -> Result<TrainingConfig, FieldError> {
    let mut c = TrainingConfig::default();
    let mut seeded = false;
    for f in TABLE {
        let v = m.get(f.name);
        if is_blank(v) {
            continue;
        }
        seeded |= matches!(f.kind, Kind::Seed);
        read(f, v.expect("not blank"), &mut c)?;
    }
    if !seeded {
        c.seed = random_seed();
    }
    if c.epsilon_min > c.epsilon_start {
        return Err(FieldError::new(
            ErrorCode::OutOfRange,
            "`epsilon_min` exceeds `epsilon_start`",
        ));
    }
    Ok(c)
}

/// A configuration outside [`limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` is outside its limits")]
pub struct OutOfLimits {
    pub field: &'static str,
}

impl TrainingConfig {
    /// Checks every field against the table's limits (configurations read back from a file or
    /// another node, and a worker's `Start`).
    pub fn validate(&self) -> Result<(), OutOfLimits> {
        for f in TABLE {
            let ok = match f.kind {
                Kind::Int { limits, get, .. } => (limits.0..=limits.1).contains(&get(self)),
                Kind::Float { limits, get, .. } => {
                    let v = get(self);
                    v.is_finite() && (limits.0..=limits.1).contains(&v)
                }
                Kind::ModelName => self.model_name.as_ref().is_none_or(|n| {
                    model_stem(&Value::String(n.clone())).is_ok_and(|stem| &stem == n)
                }),
                Kind::Flag { .. } | Kind::Choice { .. } | Kind::Seed => true,
            };
            if !ok {
                return Err(OutOfLimits { field: f.name });
            }
        }
        if self.epsilon_min > self.epsilon_start {
            return Err(OutOfLimits {
                field: "epsilon_min",
            });
        }
        Ok(())
    }
}

/// One field as `GET /api/training/config` describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldSpec {
    pub name: &'static str,
    /// A short label for a form.
    pub label: &'static str,
    /// `integer`, `number`, `boolean`, `choice` or `text`.
    pub kind: &'static str,
    pub default: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<&'static str>>,
    pub help: &'static str,
    /// Shown under "Advanced" (the presets set it).
    pub advanced: bool,
}

/// Every `start_training` field with its default, limits and help: the table the UI's form is
/// built from.
pub fn fields() -> Vec<FieldSpec> {
    let d = TrainingConfig::default();
    TABLE
        .iter()
        .map(|f| {
            let (kind, default, min, max, choices) = match f.kind {
                Kind::Int { limits, get, .. } => (
                    "integer",
                    json!(get(&d)),
                    Some(f64::from(limits.0)),
                    Some(f64::from(limits.1)),
                    None,
                ),
                Kind::Float { limits, get, .. } => (
                    "number",
                    json!(get(&d)),
                    Some(limits.0),
                    Some(limits.1),
                    None,
                ),
                Kind::Flag { get, .. } => ("boolean", json!(get(&d)), None, None, None),
                Kind::Choice { names, get, .. } => {
                    ("choice", json!(get(&d)), None, None, Some(names()))
                }
                Kind::Seed => ("integer", Value::Null, Some(0.0), None, None),
                Kind::ModelName => ("text", Value::Null, None, None, None),
            };
            FieldSpec {
                name: f.name,
                label: f.label,
                kind,
                default,
                min,
                max,
                choices,
                help: f.help,
                advanced: f.advanced,
            }
        })
        .collect()
}

/// A configuration as `start_training` fields (the inverse of [`parse_start`]).
pub fn to_fields(c: &TrainingConfig) -> Map<String, Value> {
    let mut m = Map::new();
    for f in TABLE {
        let v = match f.kind {
            Kind::Int { get, .. } => json!(get(c)),
            Kind::Float { get, .. } => json!(get(c)),
            Kind::Flag { get, .. } => json!(get(c)),
            Kind::Choice { get, .. } => json!(get(c)),
            Kind::Seed => json!(c.seed),
            Kind::ModelName => json!(c.model_name),
        };
        m.insert(f.name.to_owned(), v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrainingConfig, FieldError> {
        let Value::Object(m) = serde_json::from_str(text).unwrap() else {
            panic!("an object")
        };
        parse_start(&m, || 77)
    }

    #[test]
    fn every_field_of_a_configuration_reads_back_as_itself() {
        let mut c = TrainingConfig::full_run();
        c.seed = 12;
        c.model_name = Some("mine".into());
        c.pacing = Pacing::Replay;
        c.stop_when_competent = true;
        let text = Value::Object(to_fields(&c)).to_string();
        assert_eq!(parse(&text).unwrap(), c);
        c.validate().unwrap();
    }

    #[test]
    fn blanks_take_defaults_and_bad_values_name_their_field() {
        let c = parse(r#"{"num_episodes":"","seed":null}"#).unwrap();
        assert_eq!(c.num_episodes, 100);
        assert_eq!(c.seed, 77);
        assert_eq!(c.pacing, Pacing::Run);
        for (text, code) in [
            (r#"{"eval_every":0}"#, ErrorCode::OutOfRange),
            (r#"{"pacing":"later"}"#, ErrorCode::InvalidField),
            (r#"{"stop_when_competent":1}"#, ErrorCode::InvalidField),
            (r#"{"model_name":"../x"}"#, ErrorCode::InvalidModelName),
            (r#"{"learning_rate":5}"#, ErrorCode::OutOfRange),
            (
                r#"{"epsilon_start":0.1,"epsilon_min":0.2}"#,
                ErrorCode::OutOfRange,
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, code, "{text}: {e}");
        }
        assert!(parse(r#"{"eval_every":0}"#)
            .unwrap_err()
            .message
            .contains("eval_every"));
    }

    #[test]
    fn validate_refuses_what_parsing_refuses() {
        let d = TrainingConfig::default;
        for (c, field) in [
            (
                TrainingConfig {
                    eval_every: 0,
                    ..d()
                },
                "eval_every",
            ),
            (
                TrainingConfig {
                    model_name: Some("../../etc/x".into()),
                    ..d()
                },
                "model_name",
            ),
            (
                TrainingConfig {
                    step_delay: f64::NAN,
                    ..d()
                },
                "step_delay",
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn the_served_table_names_every_field_once_with_help() {
        let specs = fields();
        let mut names: Vec<_> = specs.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len());
        assert_eq!(to_fields(&TrainingConfig::default()).len(), specs.len());
        assert!(
            specs.iter().all(|f| f.help.len() > 20),
            "every field explained"
        );
        assert!(specs.iter().filter(|f| !f.advanced).count() <= 6);
    }
}
