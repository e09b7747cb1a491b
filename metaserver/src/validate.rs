//! **Architecture Invariant: untrusted input stops here.** Every browser message is parsed and
//! validated in this module and becomes a typed command; workers never see browser JSON.

use hamlet_onnx::catalog;
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::inference::{SessionCommand, StartMode, MAX_SPEED, MIN_SPEED};
use ipc_proto::training::{limits, Choice, RunControl, TrainingConfig};
use serde_json::{Map, Value};

/// A rejected message: becomes an `error` frame, the connection stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code, self.message.clone())
    }
}

type Res<T> = Result<T, Rejection>;

fn object(text: &str) -> Res<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Rejection::new(ErrorCode::BadJson, "expected a JSON object")),
        Err(e) => Err(Rejection::new(
            ErrorCode::BadJson,
            format!("malformed JSON: {e}"),
        )),
    }
}

/// Shortens client-supplied text before echoing it in an error.
fn echo(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
    if s.chars().count() > 60 {
        format!("{clean}…")
    } else {
        clean
    }
}

fn command(m: &Map<String, Value>) -> Res<&str> {
    match m.get("command") {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(Rejection::new(
            ErrorCode::InvalidField,
            "`command` must be a string",
        )),
        None => Err(Rejection::new(
            ErrorCode::UnknownCommand,
            "missing `command`",
        )),
    }
}

/// Parses a `/ws` message. `model_exists` answers whether a plain name is in the models listing.
pub fn parse_inference(text: &str, model_exists: impl Fn(&str) -> bool) -> Res<SessionCommand> {
    let m = object(text)?;
    // Compat: `{"type":"control", ...}` or the same object without `type`.
    if let Some(t) = m.get("type") {
        if t != "control" {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                "messages on /ws have type `control` (or no type)",
            ));
        }
    }
    Ok(match command(&m)? {
        "play" => SessionCommand::Play,
        "pause" => SessionCommand::Pause,
        "step" => SessionCommand::Step,
        "reset" => SessionCommand::Reset,
        "status" => SessionCommand::Status,
        "set_speed" => {
            let speed = match m.get("speed") {
                Some(Value::Number(n)) => {
                    n.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                        Rejection::new(ErrorCode::OutOfRange, "`speed` must be a finite number")
                    })?
                }
                Some(_) => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "`speed` must be a number",
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "set_speed needs `speed`",
                    ))
                }
            };
            SessionCommand::SetSpeed {
                speed: speed.clamp(MIN_SPEED, MAX_SPEED),
            }
        }
        "set_epsilon" => {
            let epsilon = match m.get("epsilon") {
                Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()),
                Some(_) => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "`epsilon` must be a number",
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "set_epsilon needs `epsilon`",
                    ))
                }
            };
            match epsilon {
                Some(e) if (0.0..=1.0).contains(&e) => SessionCommand::SetEpsilon { epsilon: e },
                _ => {
                    return Err(Rejection::new(
                        ErrorCode::OutOfRange,
                        "`epsilon` must be between 0 and 1",
                    ))
                }
            }
        }
        "set_start" => match m.get("mode").and_then(Value::as_str) {
            Some("fixed") => SessionCommand::SetStart {
                mode: StartMode::Fixed,
            },
            Some("random") => SessionCommand::SetStart {
                mode: StartMode::Random,
            },
            _ => {
                return Err(Rejection::new(
                    ErrorCode::InvalidField,
                    "set_start needs `mode`: `fixed` or `random`",
                ))
            }
        },
        "set_detail" => match m.get("activations") {
            Some(Value::Bool(b)) => SessionCommand::SetDetail { activations: *b },
            _ => {
                return Err(Rejection::new(
                    ErrorCode::InvalidField,
                    "set_detail needs `activations`: true or false",
                ))
            }
        },
        "load_model" => {
            let name = match m.get("model") {
                Some(Value::String(s)) => s,
                Some(_) => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "`model` must be a string",
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "load_model needs `model`",
                    ))
                }
            };
            if !catalog::is_plain_name(name) {
                return Err(Rejection::new(
                    ErrorCode::InvalidModelName,
                    format!("`{}` is not a model name from /api/models", echo(name)),
                ));
            }
            if !model_exists(name) {
                return Err(Rejection::new(
                    ErrorCode::ModelNotFound,
                    format!("no model named `{}`", echo(name)),
                ));
            }
            SessionCommand::LoadModel {
                model: name.clone(),
            }
        }
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{}`", echo(other)),
            ))
        }
    })
}

/// A validated `/ws/training` message.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingRequest {
    Start(Box<TrainingConfig>),
    /// With the run's `control_token`, if the message carried one (a string of sane length).
    Control(RunControl, Option<String>),
    Status,
}

/// Compat (protocol.md): old forms send a blank numeric input as `""`, meaning "the default".
fn is_blank(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || v.and_then(Value::as_str) == Some("")
}

fn int_field(m: &Map<String, Value>, key: &str, (lo, hi): (u32, u32), default: u32) -> Res<u32> {
    if is_blank(m.get(key)) {
        return Ok(default);
    }
    match m.get(key) {
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(Rejection::new(
                    ErrorCode::InvalidField,
                    format!("`{key}` must be a whole number"),
                ));
            }
            if v < f64::from(lo) || v > f64::from(hi) {
                return Err(Rejection::new(
                    ErrorCode::OutOfRange,
                    format!("`{key}` must be between {lo} and {hi}"),
                ));
            }
            Ok(v as u32)
        }
        _ => Err(Rejection::new(
            ErrorCode::InvalidField,
            format!("`{key}` must be a number"),
        )),
    }
}

fn float_field(m: &Map<String, Value>, key: &str, (lo, hi): (f64, f64), default: f64) -> Res<f64> {
    if is_blank(m.get(key)) {
        return Ok(default);
    }
    match m.get(key) {
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if !v.is_finite() || v < lo || v > hi {
                return Err(Rejection::new(
                    ErrorCode::OutOfRange,
                    format!("`{key}` must be between {lo} and {hi}"),
                ));
            }
            Ok(v)
        }
        _ => Err(Rejection::new(
            ErrorCode::InvalidField,
            format!("`{key}` must be a number"),
        )),
    }
}

/// One of a few named values; blank means the default.
fn choice_field<T: Choice>(m: &Map<String, Value>, key: &str, default: T) -> Res<T> {
    if is_blank(m.get(key)) {
        return Ok(default);
    }
    m.get(key)
        .and_then(Value::as_str)
        .and_then(T::from_name)
        .ok_or_else(|| {
            let names: Vec<String> = T::names().iter().map(|n| format!("`{n}`")).collect();
            Rejection::new(
                ErrorCode::InvalidField,
                format!("`{key}` must be one of {}", names.join(", ")),
            )
        })
}

/// A client-chosen model name: a plain stem (the `.onnx` suffix is optional).
fn model_stem(m: &Map<String, Value>) -> Res<Option<String>> {
    match m.get("model_name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let stem = s.strip_suffix(".onnx").unwrap_or(s);
            if catalog::is_plain_name(&format!("{stem}.onnx")) && stem.len() <= 64 {
                Ok(Some(stem.to_owned()))
            } else {
                Err(Rejection::new(
                    ErrorCode::InvalidModelName,
                    format!(
                        "`{}` is not a plain model name (letters, digits, `._-`)",
                        echo(s)
                    ),
                ))
            }
        }
        Some(_) => Err(Rejection::new(
            ErrorCode::InvalidField,
            "`model_name` must be a string",
        )),
    }
}

/// A run's control token, if the message carries one (anything else there is ignored: a wrong
/// token is simply not the right one).
fn control_token(m: &Map<String, Value>) -> Option<String> {
    m.get("control_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .map(str::to_owned)
}

pub fn parse_training(text: &str) -> Res<TrainingRequest> {
    let m = object(text)?;
    Ok(match command(&m)? {
        "start_training" => {
            let d = TrainingConfig::default();
            let network = choice_field(&m, "network", d.network)?;
            let seed = match m.get("seed") {
                v if is_blank(v) => rand::random::<u32>() as u64,
                Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                    Rejection::new(
                        ErrorCode::InvalidField,
                        "`seed` must be a non-negative whole number",
                    )
                })?,
                _ => {
                    return Err(Rejection::new(
                        ErrorCode::InvalidField,
                        "`seed` must be a number",
                    ))
                }
            };
            let epsilon_start = float_field(&m, "epsilon_start", limits::EPSILON, d.epsilon_start)?;
            let epsilon_min = float_field(&m, "epsilon_min", limits::EPSILON, d.epsilon_min)?;
            if epsilon_min > epsilon_start {
                return Err(Rejection::new(
                    ErrorCode::OutOfRange,
                    "`epsilon_min` exceeds `epsilon_start`",
                ));
            }
            TrainingRequest::Start(Box::new(TrainingConfig {
                num_episodes: int_field(&m, "num_episodes", limits::NUM_EPISODES, d.num_episodes)?,
                batch_size: int_field(&m, "batch_size", limits::BATCH_SIZE, d.batch_size)?,
                buffer_capacity: int_field(
                    &m,
                    "buffer_capacity",
                    limits::BUFFER_CAPACITY,
                    d.buffer_capacity,
                )?,
                show_every: int_field(&m, "show_every", limits::SHOW_EVERY, d.show_every)?,
                step_delay: float_field(&m, "step_delay", limits::STEP_DELAY, d.step_delay)?,
                network,
                learning_rate: float_field(
                    &m,
                    "learning_rate",
                    limits::LEARNING_RATE,
                    d.learning_rate,
                )?,
                gamma: float_field(&m, "gamma", limits::GAMMA, d.gamma)?,
                epsilon_start,
                epsilon_min,
                epsilon_decay: float_field(
                    &m,
                    "epsilon_decay",
                    limits::EPSILON_DECAY,
                    d.epsilon_decay,
                )?,
                target_update: int_field(
                    &m,
                    "target_update",
                    limits::TARGET_UPDATE,
                    d.target_update,
                )?,
                max_steps: int_field(&m, "max_steps", limits::MAX_STEPS, d.max_steps)?,
                seed,
                model_name: model_stem(&m)?,
                checkpoint_every: int_field(
                    &m,
                    "checkpoint_every",
                    limits::CHECKPOINT_EVERY,
                    d.checkpoint_every,
                )?,
                td_target: choice_field(&m, "td_target", d.td_target)?,
                n_step: int_field(&m, "n_step", limits::N_STEP, d.n_step)?,
                loss: choice_field(&m, "loss", d.loss)?,
                train_every: int_field(&m, "train_every", limits::TRAIN_EVERY, d.train_every)?,
            }))
        }
        "pause" => TrainingRequest::Control(RunControl::Pause, control_token(&m)),
        "resume" => TrainingRequest::Control(RunControl::Resume, control_token(&m)),
        "stop" => TrainingRequest::Control(RunControl::Stop, control_token(&m)),
        "status" => TrainingRequest::Status,
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{}`", echo(other)),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_proto::training::Network;

    fn inf(t: &str) -> Res<SessionCommand> {
        parse_inference(t, |n| n == "default.onnx")
    }

    #[test]
    fn inference_commands() {
        assert_eq!(
            inf(r#"{"type":"control","command":"play"}"#),
            Ok(SessionCommand::Play)
        );
        assert_eq!(
            inf(r#"{"command":"pause","extra":[1,2]}"#),
            Ok(SessionCommand::Pause)
        );
        assert_eq!(
            inf(r#"{"command":"set_speed","speed":1e300}"#),
            Ok(SessionCommand::SetSpeed { speed: 10.0 })
        );
        assert_eq!(
            inf(r#"{"command":"set_speed","speed":-5}"#),
            Ok(SessionCommand::SetSpeed { speed: 0.1 })
        );
        assert_eq!(
            inf(r#"{"command":"set_speed","speed":"fast"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            inf(r#"{"command":"set_speed","speed":NaN}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadJson
        );
        assert_eq!(
            inf(r#"{"command":"set_speed","speed":1e999}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadJson
        );
        assert_eq!(
            inf(r#"{"command":"fly"}"#).unwrap_err().code,
            ErrorCode::UnknownCommand
        );
        assert_eq!(inf(r#"[1]"#).unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            inf(r#"{"command":7}"#).unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert_eq!(
            inf(r#"{"command":"load_model","model":"default.onnx"}"#),
            Ok(SessionCommand::LoadModel {
                model: "default.onnx".into()
            })
        );
        for bad in [
            r#""../../etc/passwd""#,
            r#""/etc/passwd""#,
            r#""a\u0000.onnx""#,
            r#""models/x.onnx""#,
        ] {
            let t = format!(r#"{{"command":"load_model","model":{bad}}}"#);
            assert_eq!(
                inf(&t).unwrap_err().code,
                ErrorCode::InvalidModelName,
                "{bad}"
            );
        }
        assert_eq!(
            inf(r#"{"command":"load_model","model":"other.onnx"}"#)
                .unwrap_err()
                .code,
            ErrorCode::ModelNotFound
        );
        let deep = "[".repeat(10_000);
        assert_eq!(inf(&deep).unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn training_start_defaults_and_ranges() {
        let TrainingRequest::Start(c) =
            parse_training(r#"{"command":"start_training","seed":3}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.num_episodes, 100);
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.buffer_capacity, 10_000);
        assert_eq!(c.show_every, 5);
        assert_eq!(c.step_delay, 0.2);
        assert_eq!(c.seed, 3);
        for (field, code) in [
            (r#""num_episodes":0"#, ErrorCode::OutOfRange),
            (r#""num_episodes":100001"#, ErrorCode::OutOfRange),
            (r#""num_episodes":2.5"#, ErrorCode::InvalidField),
            (r#""batch_size":"32""#, ErrorCode::InvalidField),
            (r#""buffer_capacity":99"#, ErrorCode::OutOfRange),
            (r#""step_delay":6"#, ErrorCode::OutOfRange),
            (r#""network":"transformer""#, ErrorCode::InvalidField),
            (r#""model_name":"../x""#, ErrorCode::InvalidModelName),
            (r#""gamma":1.5"#, ErrorCode::OutOfRange),
            (r#""seed":-1"#, ErrorCode::InvalidField),
        ] {
            let t = format!(r#"{{"command":"start_training",{field}}}"#);
            assert_eq!(parse_training(&t).unwrap_err().code, code, "{field}");
        }
        let TrainingRequest::Start(c) =
            parse_training(r#"{"type":"x","command":"start_training","model_name":"mine.onnx","network":"dueling"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.model_name.as_deref(), Some("mine"));
        assert_eq!(c.network, Network::Dueling);
        assert_eq!(
            parse_training(r#"{"command":"stop"}"#),
            Ok(TrainingRequest::Control(RunControl::Stop, None))
        );
    }
}
