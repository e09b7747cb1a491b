//! Fuzzing frame decoding: arbitrary bytes and bit-flipped valid frames, through the incremental
//! decoder and every message type. Nothing may panic or allocate beyond the limit.

use ipc_proto::frame::{self, FrameDecoder};
use ipc_proto::inference::{FromInference, SessionCommand, ToInference};
use ipc_proto::training::{FromTraining, ToTraining};
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let mut d = FrameDecoder::new(1 << 16);
    d.extend(bytes);
    while let Ok(Some(body)) = d.next_body() {
        assert!(body.len() <= 1 << 16);
        let _ = frame::decode_body::<ToInference>(&body);
        let _ = frame::decode_body::<FromInference>(&body);
        let _ = frame::decode_body::<ToTraining>(&body);
        let _ = frame::decode_body::<FromTraining>(&body);
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        frame::encode(
            &ToInference::Command {
                seq: 1,
                command: SessionCommand::SetSpeed { speed: 2.5 },
            },
            1 << 16,
        )
        .unwrap(),
        frame::encode(
            &ToInference::Command {
                seq: 1,
                command: SessionCommand::LoadModel {
                    model: "default.onnx".into(),
                },
            },
            1 << 16,
        )
        .unwrap(),
        frame::encode(&ToTraining::Start(Box::default()), 1 << 16).unwrap(),
        frame::encode(&FromInference::Pong { seq: 7 }, 1 << 16).unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn bit_flipped_valid_frames(which in 0usize..4, flips in prop::collection::vec((any::<usize>(), 0u8..8), 1..8)) {
        let mut f = valid_frames()[which].clone();
        for (pos, bit) in flips {
            let i = pos % f.len();
            f[i] ^= 1 << bit;
        }
        decode_all(&f);
    }
}
