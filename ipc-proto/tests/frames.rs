//! Framing through the production reader: round trips, arbitrary read boundaries, oversize and
//! garbage input.

mod common;

use common::{encode, read_all};
use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::frame::{FrameError, DEFAULT_MAX_FRAME};
use ipc_proto::inference::{
    EpisodePhase, FromInference, SessionCommand, SessionSnapshot, SessionStart, StartMode,
    ToInference, WorldSnapshot,
};
use ipc_proto::training::{FromTraining, Network, RunControl, ToTraining, TrainingConfig};
use proptest::prelude::*;

fn arb_snapshot() -> impl Strategy<Value = SessionSnapshot> {
    (
        prop::array::uniform6(-100.0f64..100.0),
        0i32..8,
        0i32..8,
        any::<u32>(),
        any::<u32>(),
        -1e6f64..1e6,
        prop::option::of(0u8..5),
        ".{0,40}",
        prop::option::of("[a-z0-9_]{1,20}\\.onnx"),
        0.1f64..10.0,
        any::<bool>(),
    )
        .prop_map(
            |(meters, x, y, step, episode, cum, last_action, sid, model, speed, playing)| {
                SessionSnapshot {
                    session_id: sid,
                    world: WorldSnapshot { meters, x, y, step },
                    episode,
                    cumulative_reward: cum,
                    last_action,
                    last_reward: cum / 3.0,
                    phase: if playing {
                        EpisodePhase::Running
                    } else {
                        EpisodePhase::Ended
                    },
                    model,
                    speed,
                    playing,
                    max_steps: 500,
                    commands_applied: step as u64,
                    epsilon: cum.abs().fract(),
                    start: if playing {
                        StartMode::Random
                    } else {
                        StartMode::Fixed
                    },
                    rng: hamlet_env::rng::SessionRng::new(episode as u64),
                    detail: playing,
                }
            },
        )
}

fn arb_to_inference() -> impl Strategy<Value = ToInference> {
    prop_oneof![
        Just(ToInference::Command {
            seq: 1,
            command: SessionCommand::Play
        }),
        Just(ToInference::Command {
            seq: 1,
            command: SessionCommand::Reset
        }),
        (0.1f64..10.0).prop_map(|speed| ToInference::Command {
            seq: 1,
            command: SessionCommand::SetSpeed { speed }
        }),
        ".{0,64}".prop_map(|model| ToInference::Command {
            seq: 1,
            command: SessionCommand::LoadModel { model }
        }),
        any::<u64>().prop_map(|seq| ToInference::Ping { seq }),
        Just(ToInference::Shutdown),
        (arb_snapshot(), any::<bool>()).prop_map(|(s, resume)| ToInference::Start(Box::new(
            SessionStart {
                session_id: s.session_id.clone(),
                model: s.model.clone(),
                max_steps: 500,
                snapshot: resume.then_some(s),
                announce: !resume,
                seed: 1,
            }
        ))),
    ]
}

fn arb_to_training() -> impl Strategy<Value = ToTraining> {
    prop_oneof![
        (1u32..100_000, 1u32..1024, any::<u64>(), any::<bool>()).prop_map(|(n, b, seed, d)| {
            ToTraining::Start {
                config: Box::new(TrainingConfig {
                    num_episodes: n,
                    batch_size: b,
                    seed,
                    network: if d {
                        Network::Dueling
                    } else {
                        Network::Qnetwork
                    },
                    model_name: d.then(|| "x".into()),
                    ..TrainingConfig::default()
                }),
                paused: d,
            }
        }),
        Just(ToTraining::Control(RunControl::Pause)),
        Just(ToTraining::Control(RunControl::Stop)),
        (".{0,80}", any::<bool>()).prop_map(|(checkpoint, paused)| ToTraining::ResumeFrom {
            checkpoint,
            config: None,
            paused,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inference_commands_round_trip(msg in arb_to_inference()) {
        let bytes = encode(msg.clone(), DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        let (back, err) = read_all::<ToInference>(&bytes, &[usize::MAX], DEFAULT_MAX_FRAME);
        prop_assert!(err.is_none());
        prop_assert_eq!(back, vec![msg]);
    }

    #[test]
    fn training_commands_round_trip(msg in arb_to_training()) {
        let bytes = encode(msg.clone(), DEFAULT_MAX_FRAME).unwrap();
        let (back, _) = read_all::<ToTraining>(&bytes, &[usize::MAX], DEFAULT_MAX_FRAME);
        prop_assert_eq!(back, vec![msg]);
    }

    #[test]
    fn snapshots_round_trip_bit_exact(s in arb_snapshot()) {
        let ev = FromInference::Snapshot(Box::new(s.clone()));
        let bytes = encode(ev, DEFAULT_MAX_FRAME).unwrap();
        let (mut back, _) = read_all::<FromInference>(&bytes, &[7], DEFAULT_MAX_FRAME);
        let Some(FromInference::Snapshot(b)) = back.pop() else { panic!("wrong variant") };
        for (x, y) in b.world.meters.iter().zip(s.world.meters.iter()) {
            prop_assert_eq!(x.to_bits(), y.to_bits());
        }
        prop_assert_eq!(*b, s);
    }

    /// A stream of frames cut at arbitrary points decodes to the same messages.
    #[test]
    fn frames_split_across_arbitrary_boundaries(
        msgs in prop::collection::vec(arb_to_inference(), 1..20),
        cuts in prop::collection::vec(1usize..64, 1..200),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode(m.clone(), DEFAULT_MAX_FRAME).unwrap());
        }
        let (out, err) = read_all::<ToInference>(&stream, &cuts, DEFAULT_MAX_FRAME);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(out, msgs);
    }
}

#[test]
fn oversize_header_is_refused_before_allocating() {
    // Claims a 4 GiB body; the reader must refuse on the header alone.
    let (out, err) =
        read_all::<ToInference>(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3], &[3], DEFAULT_MAX_FRAME);
    assert!(out.is_empty());
    assert!(
        matches!(
            err,
            Some(FrameError::Oversize {
                max: DEFAULT_MAX_FRAME
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_stream_that_ends_inside_a_frame_is_an_error_not_a_message() {
    let full = encode(ToInference::Ping { seq: 7 }, 1024).unwrap();
    let (out, err) = read_all::<ToInference>(&full[..full.len() - 1], &[1], 1024);
    assert!(out.is_empty());
    assert!(matches!(err, Some(FrameError::Io(_))), "{err:?}");
    let (out, err) = read_all::<ToInference>(&full[..2], &[1], 1024);
    assert!(
        out.is_empty() && matches!(err, Some(FrameError::Io(_))),
        "{err:?}"
    );
    // A clean end between frames is just the end.
    let (out, err) = read_all::<ToInference>(&full, &[1], 1024);
    assert_eq!(out, vec![ToInference::Ping { seq: 7 }]);
    assert!(err.is_none());
}

#[test]
fn wrong_message_type_is_a_decode_error_not_a_panic() {
    let bytes = encode(ToTraining::Control(RunControl::Resume), 1024).unwrap();
    let (out, err) = read_all::<ToInference>(&bytes, &[2], 1024);
    assert!(out.is_empty());
    assert!(matches!(err, Some(FrameError::Decode(_))), "{err:?}");
}

#[test]
fn encoding_refuses_oversize_messages() {
    let big = ToInference::Command {
        seq: 1,
        command: SessionCommand::LoadModel {
            model: "x".repeat(5000),
        },
    };
    assert!(matches!(
        encode(big, 1024),
        Err(FrameError::Oversize { .. })
    ));
}

#[test]
fn server_messages_have_protocol_shapes() {
    let e = ServerMessage::error(ErrorCode::ModelNotFound, "no such model");
    let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"error","message":"no such model","code":"model_not_found"})
    );
    let p: serde_json::Value = serde_json::from_str(&ServerMessage::Paused {}.to_json()).unwrap();
    assert_eq!(p, serde_json::json!({"type":"paused"}));
    // Browser messages also survive the msgpack hop inside worker events.
    let ev = FromTraining::Message(ServerMessage::Resumed {});
    let bytes = encode(ev.clone(), 1024).unwrap();
    assert_eq!(read_all::<FromTraining>(&bytes, &[3], 1024).0, vec![ev]);
}

/// A frame waiting in a browser's queue holds no more memory than its text: up to 256 frames wait
/// per browser, and the encoder starts from a 4 KB buffer for a frame of about 1 KB.
#[test]
fn an_encoded_frame_keeps_no_spare_capacity() {
    let w = hamlet_env::World::new();
    let frame = hamlet_env::wire::state_update(&w, Default::default());
    let json = ServerMessage::StateUpdate(Box::new(frame)).to_json();
    assert!(json.len() < 2048, "a plain frame is small: {}", json.len());
    assert_eq!(json.capacity(), json.len());
}

/// A training room's messages say their room first; `queued` names it once, as it always did.
#[test]
fn a_rooms_messages_carry_the_room() {
    use ipc_proto::browser::{Queued, ServerMessage};
    let m = ServerMessage::Paused {};
    let v: serde_json::Value = serde_json::from_str(&m.to_json_in(Some("red"))).unwrap();
    assert_eq!(v, serde_json::json!({"room": "red", "type": "paused"}));
    assert_eq!(m.to_json_in(None), m.to_json());
    let q = ServerMessage::Queued(Queued {
        room: "red".into(),
        position: 2,
    });
    let text = q.to_json_in(Some("red"));
    assert_eq!(text.matches("\"room\"").count(), 1, "{text}");
}
