//! Framing: round trips, arbitrary read boundaries, oversize and garbage input.

use ipc_proto::browser::{ErrorCode, ServerMessage};
use ipc_proto::frame::{self, FrameDecoder, FrameError};
use ipc_proto::inference::{
    EpisodePhase, FromInference, SessionCommand, SessionSnapshot, SessionStart, ToInference,
    WorldSnapshot,
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
            }
        ))),
    ]
}

fn arb_to_training() -> impl Strategy<Value = ToTraining> {
    prop_oneof![
        (1u32..100_000, 1u32..1024, any::<u64>(), any::<bool>()).prop_map(|(n, b, seed, d)| {
            ToTraining::Start(Box::new(TrainingConfig {
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
            }))
        }),
        Just(ToTraining::Control(RunControl::Pause)),
        Just(ToTraining::Control(RunControl::Stop)),
        ".{0,80}".prop_map(|checkpoint| ToTraining::ResumeFrom { checkpoint }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inference_commands_round_trip(msg in arb_to_inference()) {
        let bytes = frame::encode(&msg, frame::DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        let back: ToInference = frame::decode_body(&bytes[4..]).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn training_commands_round_trip(msg in arb_to_training()) {
        let bytes = frame::encode(&msg, frame::DEFAULT_MAX_FRAME).unwrap();
        let back: ToTraining = frame::decode_body(&bytes[4..]).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn snapshots_round_trip_bit_exact(s in arb_snapshot()) {
        let ev = FromInference::Snapshot(Box::new(s.clone()));
        let bytes = frame::encode(&ev, frame::DEFAULT_MAX_FRAME).unwrap();
        let back: FromInference = frame::decode_body(&bytes[4..]).unwrap();
        let FromInference::Snapshot(b) = back else { panic!("wrong variant") };
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
            stream.extend(frame::encode(m, frame::DEFAULT_MAX_FRAME).unwrap());
        }
        let mut dec = FrameDecoder::new(frame::DEFAULT_MAX_FRAME);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut ci = 0;
        while pos < stream.len() {
            let n = cuts[ci % cuts.len()].min(stream.len() - pos);
            ci += 1;
            dec.extend(&stream[pos..pos + n]);
            pos += n;
            while let Some(body) = dec.next_body().unwrap() {
                out.push(frame::decode_body::<ToInference>(&body).unwrap());
            }
        }
        prop_assert_eq!(dec.pending(), 0);
        prop_assert_eq!(out, msgs);
    }

    /// Arbitrary bytes never panic and never allocate beyond the limit.
    #[test]
    fn garbage_is_rejected_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = FrameDecoder::new(256);
        dec.extend(&bytes);
        loop {
            match dec.next_body() {
                Ok(Some(body)) => {
                    prop_assert!(body.len() <= 256);
                    let _ = frame::decode_body::<ToInference>(&body);
                    let _ = frame::decode_body::<FromInference>(&body);
                    let _ = frame::decode_body::<ToTraining>(&body);
                    let _ = frame::decode_body::<FromTraining>(&body);
                }
                Ok(None) => break,
                Err(FrameError::Oversize { len, max }) => { prop_assert!(len > max); break; }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
        let _ = frame::decode_body::<ToInference>(&bytes);
    }
}

#[tokio::test]
async fn oversize_header_is_refused_before_allocating() {
    // Claims a 4 GiB body; the reader must refuse on the header alone.
    let mut data: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let err = frame::read_body(&mut data, frame::DEFAULT_MAX_FRAME)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::Oversize {
                len: 0xffff_ffff,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn short_reads_are_reported() {
    let full = frame::encode(&ToInference::Ping { seq: 7 }, 1024).unwrap();
    let mut cut: &[u8] = &full[..full.len() - 1];
    let err = frame::read_body(&mut cut, 1024).await.unwrap_err();
    assert!(matches!(err, FrameError::ShortRead { .. }), "{err}");
    let mut header_only: &[u8] = &full[..2];
    assert!(matches!(
        frame::read_body(&mut header_only, 1024).await.unwrap_err(),
        FrameError::ShortRead { got: 2, want: 4 }
    ));
    let mut empty: &[u8] = &[];
    assert!(matches!(
        frame::read_body(&mut empty, 1024).await.unwrap_err(),
        FrameError::Closed
    ));
}

#[test]
fn wrong_message_type_is_a_decode_error_not_a_panic() {
    let bytes = frame::encode(&ToTraining::Control(RunControl::Resume), 1024).unwrap();
    let err = frame::decode_body::<ToInference>(&bytes[4..]).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)));
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
        frame::encode(&big, 1024),
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
    let bytes = frame::encode(&ev, 1024).unwrap();
    assert_eq!(frame::decode_body::<FromTraining>(&bytes[4..]).unwrap(), ev);
}
