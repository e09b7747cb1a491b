//! Fuzzing the one framing path every process reads with (`MsgCodec` in a `FramedRead`): arbitrary
//! bytes and bit-flipped valid frames, cut at arbitrary points, decoded as every message type.
//! Nothing may panic, and no frame over the limit may be produced.

mod common;

use common::{encode, read_all};
use ipc_proto::inference::{FromInference, SessionCommand, ToInference};
use ipc_proto::training::{FromTraining, ToTraining};
use proptest::prelude::*;

const MAX: usize = 1 << 16;

fn decode_all(bytes: &[u8], cuts: &[usize]) {
    let _ = read_all::<ToInference>(bytes, cuts, MAX);
    let _ = read_all::<FromInference>(bytes, cuts, MAX);
    let _ = read_all::<ToTraining>(bytes, cuts, MAX);
    let _ = read_all::<FromTraining>(bytes, cuts, MAX);
}

fn valid_frames() -> Vec<Vec<u8>> {
    vec![
        encode(
            ToInference::Command {
                seq: 1,
                command: SessionCommand::SetSpeed { speed: 2.5 },
            },
            MAX,
        )
        .unwrap(),
        encode(
            ToInference::Command {
                seq: 1,
                command: SessionCommand::LoadModel {
                    model: "default.onnx".into(),
                },
            },
            MAX,
        )
        .unwrap(),
        encode(
            ToTraining::Start {
                config: Box::default(),
                paused: false,
            },
            MAX,
        )
        .unwrap(),
        encode(FromInference::Pong { seq: 7 }, MAX).unwrap(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(1usize..300, 1..8)) {
        decode_all(&bytes, &cuts);
    }

    #[test]
    fn bit_flipped_valid_frames(which in 0usize..4, flips in prop::collection::vec((any::<usize>(), 0u8..8), 1..8), cuts in prop::collection::vec(1usize..16, 1..4)) {
        let mut f = valid_frames()[which].clone();
        for (pos, bit) in flips {
            let i = pos % f.len();
            f[i] ^= 1 << bit;
        }
        decode_all(&f, &cuts);
    }
}
