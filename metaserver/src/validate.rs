//! **Architecture Invariant: untrusted input stops here.** Every browser message is parsed and
//! validated in this module and becomes a typed command; workers never see browser JSON.

use crate::model_catalog::ModelLookup;
use hamlet_env::wire::wire_range;
use hamlet_env::{Meter, GRID_SIZE};
use hamlet_onnx::catalog;
use ipc_proto::browser::{ErrorCode, Position, ServerMessage};
use ipc_proto::inference::{Probe, SessionCommand, StartMode, MAX_SPEED, MIN_SPEED};
use ipc_proto::training::{fields, RunControl, TrainingConfig};
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

/// A validated `/ws` message.
#[derive(Debug, Clone, PartialEq)]
pub enum InferenceRequest {
    /// A command for the session (the owner's; a watcher may send only `status`).
    Command(SessionCommand),
    /// "What if": answered to this connection only, owner or watcher alike.
    Probe(Probe),
}

/// Parses a `/ws` message. `lookup` says what the models catalog knows of a plain name.
pub fn parse_inference(text: &str, lookup: impl Fn(&str) -> ModelLookup) -> Res<InferenceRequest> {
    let m = object(text)?;
    if command(&m)? == "probe" {
        return parse_probe(&m).map(InferenceRequest::Probe);
    }
    parse_command(&m, lookup).map(InferenceRequest::Command)
}

/// `probe`: optional `meters` (a partial map on `state_update`'s scale) and `position`.
fn parse_probe(m: &Map<String, Value>) -> Res<Probe> {
    let bad = |msg: String| Rejection::new(ErrorCode::InvalidField, msg);
    let mut probe = Probe::default();
    match m.get("meters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meters)) => {
            for (name, v) in meters {
                let meter = Meter::from_name(name)
                    .ok_or_else(|| bad(format!("`{}` is not a meter", echo(name))))?;
                let (lo, hi) = wire_range(meter);
                match v.as_f64() {
                    Some(x) if x.is_finite() && (lo..=hi).contains(&x) => {
                        probe.meters.push((meter, x))
                    }
                    _ => return Err(bad(format!("`{name}` must be a number from {lo} to {hi}"))),
                }
            }
        }
        Some(_) => return Err(bad("`meters` must be an object of meter values".into())),
    }
    match m.get("position") {
        None | Some(Value::Null) => {}
        Some(p) => {
            let coord = |k: &str| {
                p.get(k)
                    .and_then(Value::as_i64)
                    .filter(|v| (0..i64::from(GRID_SIZE)).contains(v))
            };
            match (coord("x"), coord("y")) {
                (Some(x), Some(y)) => {
                    probe.position = Some(Position {
                        x: x as i32,
                        y: y as i32,
                    })
                }
                _ => {
                    let last = GRID_SIZE - 1;
                    return Err(bad(format!(
                        "`position` must be a cell {{\"x\":0..{last},\"y\":0..{last}}} of the grid"
                    )));
                }
            }
        }
    }
    Ok(probe)
}

fn parse_command(
    m: &Map<String, Value>,
    lookup: impl Fn(&str) -> ModelLookup,
) -> Res<SessionCommand> {
    // Compat: `{"type":"control", ...}` or the same object without `type`.
    if m.get("type").is_some_and(|t| t != "control") {
        return Err(Rejection::new(
            ErrorCode::UnknownCommand,
            "messages on /ws have type `control` (or no type)",
        ));
    }
    Ok(match command(m)? {
        "play" => SessionCommand::Play,
        "pause" => SessionCommand::Pause,
        "step" => SessionCommand::Step,
        "reset" => SessionCommand::Reset,
        "status" => SessionCommand::Status,
        "set_speed" => SessionCommand::SetSpeed {
            speed: number(m, "set_speed", "speed")?.clamp(MIN_SPEED, MAX_SPEED),
        },
        "set_epsilon" => match number(m, "set_epsilon", "epsilon")? {
            e if (0.0..=1.0).contains(&e) => SessionCommand::SetEpsilon { epsilon: e },
            _ => {
                let why = "`epsilon` must be between 0 and 1";
                return Err(Rejection::new(ErrorCode::OutOfRange, why));
            }
        },
        "set_start" => SessionCommand::SetStart {
            mode: match m.get("mode").and_then(Value::as_str) {
                Some("fixed") => StartMode::Fixed,
                Some("random") => StartMode::Random,
                _ => {
                    let why = "set_start needs `mode`: `fixed` or `random`";
                    return Err(Rejection::new(ErrorCode::InvalidField, why));
                }
            },
        },
        "set_detail" => match m.get("activations") {
            Some(Value::Bool(b)) => SessionCommand::SetDetail { activations: *b },
            _ => {
                let why = "set_detail needs `activations`: true or false";
                return Err(Rejection::new(ErrorCode::InvalidField, why));
            }
        },
        "load_model" => SessionCommand::LoadModel {
            model: model_name(m, lookup)?,
        },
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{}`", echo(other)),
            ))
        }
    })
}

/// The finite number `field` of command `cmd`.
fn number(m: &Map<String, Value>, cmd: &str, field: &str) -> Res<f64> {
    match m.get(field) {
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
            Rejection::new(
                ErrorCode::OutOfRange,
                format!("`{field}` must be a finite number"),
            )
        }),
        Some(_) => Err(Rejection::new(
            ErrorCode::InvalidField,
            format!("`{field}` must be a number"),
        )),
        None => Err(Rejection::new(
            ErrorCode::InvalidField,
            format!("{cmd} needs `{field}`"),
        )),
    }
}

/// `load_model`'s `model`: a plain name, and not of a file the catalog found unusable. (A name
/// the catalog has not seen goes on: the worker reads the directory and answers precisely.)
fn model_name(m: &Map<String, Value>, lookup: impl Fn(&str) -> ModelLookup) -> Res<String> {
    let name = match m.get("model") {
        Some(Value::String(s)) => s,
        Some(_) => {
            let why = "`model` must be a string";
            return Err(Rejection::new(ErrorCode::InvalidField, why));
        }
        None => {
            let why = "load_model needs `model`";
            return Err(Rejection::new(ErrorCode::InvalidField, why));
        }
    };
    if !catalog::is_plain_name(name) {
        return Err(Rejection::new(
            ErrorCode::InvalidModelName,
            format!("`{}` is not a model name from /api/models", echo(name)),
        ));
    }
    if let ModelLookup::Refused(why) = lookup(name) {
        return Err(Rejection::new(ErrorCode::InvalidModel, why));
    }
    Ok(name.clone())
}

/// A validated `/ws/training` message.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingRequest {
    Start(Box<TrainingConfig>),
    Control(RunControl),
    /// An operator takes control of the run: a new control token for this connection.
    TakeControl,
    Status,
}

/// The secrets a `/ws/training` message may carry (anything else there is ignored: a wrong
/// secret is simply not the right one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    /// The run's `control_token`.
    pub control_token: Option<String>,
    /// The operator's admin token (a browser cannot send headers on a WebSocket).
    pub admin_token: Option<String>,
}

/// A training room's name from a URL (`/ws/training?room=NAME`): 1 to 32 of `a-z`, `0-9` and
/// `-`, starting with a letter or digit — safe in a URL, a log line and a file name.
pub fn room_name(name: &str) -> Option<&str> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(name)
}

fn secret(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .map(str::to_owned)
}

pub fn parse_training(text: &str) -> Res<(TrainingRequest, Credentials)> {
    let m = object(text)?;
    let creds = Credentials {
        control_token: secret(&m, "control_token"),
        admin_token: secret(&m, "admin_token"),
    };
    let request = match command(&m)? {
        "start_training" => {
            let c = fields::parse_start(&m, || rand::random::<u32>() as u64)
                .map_err(|e| Rejection::new(e.code, e.message))?;
            TrainingRequest::Start(Box::new(c))
        }
        "pause" => TrainingRequest::Control(RunControl::Pause),
        "resume" => TrainingRequest::Control(RunControl::Resume),
        "stop" => TrainingRequest::Control(RunControl::Stop),
        "take_control" => TrainingRequest::TakeControl,
        "status" => TrainingRequest::Status,
        other => {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{}`", echo(other)),
            ))
        }
    };
    Ok((request, creds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_proto::training::Network;

    fn offered_default(name: &str) -> ModelLookup {
        match name {
            "default.onnx" => ModelLookup::Offered,
            "garbage.onnx" => ModelLookup::Refused("model `garbage.onnx` cannot be used: x".into()),
            _ => ModelLookup::Unknown,
        }
    }

    fn inf(t: &str) -> Res<SessionCommand> {
        match parse_inference(t, offered_default)? {
            InferenceRequest::Command(c) => Ok(c),
            InferenceRequest::Probe(p) => panic!("a probe: {p:?}"),
        }
    }

    fn probe(t: &str) -> Res<Probe> {
        match parse_inference(t, offered_default)? {
            InferenceRequest::Probe(p) => Ok(p),
            InferenceRequest::Command(c) => panic!("a command: {c:?}"),
        }
    }

    #[test]
    fn probes_take_meters_on_the_browsers_scale_and_cells_of_the_grid() {
        let p = probe(
            r#"{"command":"probe","meters":{"energy":0.1,"money":-20},"position":{"x":0,"y":7}}"#,
        )
        .unwrap();
        assert_eq!(p.meters, vec![(Meter::Energy, 0.1), (Meter::Money, -20.0)]);
        assert_eq!(p.position, Some(Position { x: 0, y: 7 }));
        assert_eq!(probe(r#"{"command":"probe"}"#).unwrap(), Probe::default());
        for bad in [
            r#"{"command":"probe","meters":{"fun":0.5}}"#,
            r#"{"command":"probe","meters":{"energy":1.5}}"#,
            r#"{"command":"probe","meters":{"stress":101}}"#,
            r#"{"command":"probe","meters":{"energy":"full"}}"#,
            r#"{"command":"probe","meters":[1]}"#,
            r#"{"command":"probe","position":{"x":8,"y":0}}"#,
            r#"{"command":"probe","position":{"x":-1,"y":0}}"#,
            r#"{"command":"probe","position":{"x":1.5,"y":0}}"#,
            r#"{"command":"probe","position":"here"}"#,
        ] {
            assert_eq!(
                probe(bad).unwrap_err().code,
                ErrorCode::InvalidField,
                "{bad}"
            );
        }
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
        // A name the catalog has not seen goes to the worker, which answers for the file.
        assert!(inf(r#"{"command":"load_model","model":"other.onnx"}"#).is_ok());
        let refused = inf(r#"{"command":"load_model","model":"garbage.onnx"}"#).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidModel);
        assert!(
            refused.message.contains("garbage.onnx"),
            "{}",
            refused.message
        );
        let deep = "[".repeat(10_000);
        assert_eq!(inf(&deep).unwrap_err().code, ErrorCode::BadJson);
    }

    #[test]
    fn training_start_defaults_and_ranges() {
        let (TrainingRequest::Start(c), _) =
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
        let (TrainingRequest::Start(c), _) =
            parse_training(r#"{"type":"x","command":"start_training","model_name":"mine.onnx","network":"dueling"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.model_name.as_deref(), Some("mine"));
        assert_eq!(c.network, Network::Dueling);
        assert_eq!(
            parse_training(r#"{"command":"stop"}"#),
            Ok((
                TrainingRequest::Control(RunControl::Stop),
                Credentials::default()
            ))
        );
        let (_, creds) =
            parse_training(r#"{"command":"pause","control_token":"c","admin_token":"a"}"#).unwrap();
        assert_eq!(creds.control_token.as_deref(), Some("c"));
        assert_eq!(creds.admin_token.as_deref(), Some("a"));
    }
}
