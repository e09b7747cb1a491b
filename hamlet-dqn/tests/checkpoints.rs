//! Checkpoints read from disk are checked, never trusted: a truncated or bit-flipped file is
//! refused by its checksum, a reshaped one (checksum and all, as a hostile file could be) by its
//! shapes — never a network whose sizes or values differ from what was saved — and the previous
//! checkpoint is there to fall back on.

use hamlet_dqn::checkpoint::{self, CheckpointError};
use hamlet_dqn::dqn::{Flow, Trainer, TrainerState};
use ipc_proto::training::{Network, TrainingConfig};
use proptest::prelude::*;
use std::path::PathBuf;

fn trained(network: Network) -> TrainerState {
    let mut t = Trainer::new(TrainingConfig {
        network,
        max_steps: 20,
        batch_size: 8,
        seed: 4,
        ..Default::default()
    });
    for _ in 0..2 {
        t.run_episode(|_| Flow::Continue);
    }
    t.state
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckpt-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("run.ckpt")
}

#[test]
fn a_truncated_checkpoint_is_an_error_and_the_previous_one_is_used() {
    let p = temp("truncated");
    let first = trained(Network::Qnetwork);
    checkpoint::save(&first, &p).unwrap();
    let mut second = first.clone();
    second.episodes_done += 1;
    checkpoint::save(&second, &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    for cut in [8, 9, bytes.len() / 3, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = checkpoint::load(&p).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        let (state, used) = checkpoint::load_latest(&p).unwrap();
        assert_eq!(used, checkpoint::previous(&p));
        assert_eq!(state, first);
    }
    std::fs::write(&p, b"HAMLETC").unwrap();
    assert!(matches!(
        checkpoint::load(&p),
        Err(CheckpointError::NotACheckpoint(_))
    ));
    // Neither usable: the error names the latest file.
    std::fs::write(checkpoint::previous(&p), b"junk").unwrap();
    let err = checkpoint::load_latest(&p).unwrap_err();
    assert!(err.to_string().contains("run.ckpt"), "{err}");
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn layers_whose_shapes_disagree_with_their_weights_are_refused() {
    let p = temp("shapes");
    for network in [Network::Qnetwork, Network::Dueling] {
        // Edit the networks as data (as a corrupt or hostile file could), then save a checkpoint.
        let mut bad = trained(network);
        let mut v = serde_json::to_value(&bad.online).unwrap();
        let w = v["layers"][1]["w"].as_array_mut().unwrap();
        w.truncate(w.len() - 1);
        bad.online = serde_json::from_value(v).unwrap();
        checkpoint::save(&bad, &p).unwrap();
        let err = checkpoint::load(&p).unwrap_err().to_string();
        assert!(err.contains("layer 1"), "{err}");

        let mut bad = trained(network);
        let mut v = serde_json::to_value(&bad.target).unwrap();
        v["layers"][0]["inputs"] = serde_json::json!(1_000_000);
        bad.target = serde_json::from_value(v).unwrap();
        checkpoint::save(&bad, &p).unwrap();
        assert!(checkpoint::load(&p).is_err());

        let mut bad = trained(network);
        bad.config.buffer_capacity = u32::MAX;
        checkpoint::save(&bad, &p).unwrap();
        let err = checkpoint::load(&p).unwrap_err().to_string();
        assert!(err.contains("buffer_capacity"), "{err}");
    }
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

#[test]
fn one_flipped_bit_in_the_weights_is_refused_and_the_previous_checkpoint_used() {
    let p = temp("one-flip");
    let first = trained(Network::Qnetwork);
    checkpoint::save(&first, &p).unwrap();
    let mut second = first.clone();
    second.episodes_done += 1;
    checkpoint::save(&second, &p).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    // The lowest bit of a byte near the middle: inside the weights, a value change only (which
    // every shape check would pass).
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let err = checkpoint::load(&p).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let (state, used) = checkpoint::load_latest(&p).unwrap();
    assert_eq!(used, checkpoint::previous(&p));
    assert_eq!(state, first);
    let _ = std::fs::remove_dir_all(p.parent().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Bit flips anywhere in the file: always refused (the magic, the checksum or the contents
    /// no longer agree), unless the flips cancel out.
    #[test]
    fn bit_flipped_checkpoints_never_load(flips in prop::collection::vec((any::<usize>(), 0u8..8), 1..6)) {
        let p = temp("flips");
        let saved = trained(Network::Qnetwork);
        checkpoint::save(&saved, &p).unwrap();
        let original = std::fs::read(&p).unwrap();
        let mut bytes = original.clone();
        for (pos, bit) in flips {
            let i = pos % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        std::fs::write(&p, &bytes).unwrap();
        match checkpoint::load(&p) {
            Ok(state) => {
                prop_assert_eq!(&bytes, &original, "a changed file loaded");
                prop_assert_eq!(state, saved);
            }
            Err(e) => prop_assert!(bytes != original, "the saved file was refused: {}", e),
        }
    }
}
