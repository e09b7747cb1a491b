//! The exported ONNX file, run by the real ONNX Runtime, computes what the Rust network computes.

use hamlet_dqn::export::{write_model, TrainingFacts};
use hamlet_dqn::nn::{Cache, QNet, ACTIONS, OBS};
use ipc_proto::training::Network;
use ort::session::Session;
use ort::value::TensorRef;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use std::path::PathBuf;

fn ort_lib() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(ipc_proto::ORT_LIB_PATH)
}

/// ONNX Runtime allows one environment per process.
fn env() -> &'static ort::environment::Environment {
    static ENV: std::sync::OnceLock<ort::environment::Environment> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        ort::init_from(ort_lib())
            .expect("ONNX Runtime (run scripts/setup)")
            .build()
            .unwrap()
    })
}

fn roundtrip(arch: Network, seed: u64) {
    let mut rng = Pcg64::seed_from_u64(seed);
    let net = QNet::new(arch, &mut rng);
    let path = std::env::temp_dir().join(format!("rt-{}-{seed}.onnx", std::process::id()));
    let facts = TrainingFacts {
        episodes_trained: 7,
        seed,
        ..Default::default()
    };
    write_model(&net, &facts, &path).unwrap();

    let info = hamlet_onnx::inspect_file(&path).unwrap();
    assert_eq!(info.metadata["hamlet.arch"], arch.as_str());
    assert_eq!(info.metadata["hamlet.obs_dim"], "72");
    assert_eq!(info.metadata["hamlet.n_actions"], "5");
    assert_eq!(
        info.metadata["hamlet.action_names"],
        "up,down,left,right,interact"
    );
    assert_eq!(info.metadata["hamlet.episodes_trained"], "7");
    assert!(info.check_shapes(72, 5).is_ok());

    let mut s = Session::builder(env())
        .unwrap()
        .commit_from_file(&path)
        .unwrap();
    assert_eq!(
        s.metadata().unwrap().custom("hamlet.seed"),
        Some(seed.to_string())
    );
    let batch = 16;
    let x: Vec<f32> = (0..batch * OBS)
        .map(|_| rng.random_range(-2.0..8.0))
        .collect();
    let want = net.forward(&x, batch, &mut Cache::default()).to_vec();
    let out = s
        .run(ort::inputs![TensorRef::from_array_view((
            [batch, OBS],
            &x[..]
        ))
        .unwrap()])
        .unwrap();
    let (shape, got) = out["q_values"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(&**shape, &[batch as i64, ACTIONS as i64]);
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "{arch:?}: max abs difference {max}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn qnetwork_and_dueling_match_onnx_runtime() {
    roundtrip(Network::Qnetwork, 11);
    roundtrip(Network::Dueling, 12);
}

#[test]
fn checkpoints_restore_exactly_and_refuse_garbage() {
    use hamlet_dqn::checkpoint;
    use hamlet_dqn::dqn::{Flow, Trainer};
    let cfg = ipc_proto::training::TrainingConfig {
        max_steps: 30,
        batch_size: 8,
        seed: 4,
        ..Default::default()
    };
    let mut a = Trainer::new(cfg);
    for _ in 0..3 {
        a.run_episode(|_| Flow::Continue);
    }
    let p = std::env::temp_dir().join(format!("ck-{}.ckpt", std::process::id()));
    checkpoint::save(&a.state, &p).unwrap();
    let restored = checkpoint::load(&p).unwrap();
    assert_eq!(restored, a.state, "everything round-trips, rng included");
    std::fs::write(&p, b"not a checkpoint").unwrap();
    assert!(checkpoint::load(&p)
        .unwrap_err()
        .to_string()
        .contains("not a Hamlet checkpoint"));
    let _ = std::fs::remove_file(p);
}

/// Q-values and (when present) `h1` of a model file for a batch of observations.
fn run_file(bytes: &[u8], x: &[f32], batch: usize) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut s = Session::builder(env())
        .unwrap()
        .commit_from_memory(bytes)
        .unwrap();
    let has_h1 = s.outputs().iter().any(|o| o.name() == "h1");
    let out = s
        .run(ort::inputs![
            TensorRef::from_array_view(([batch, OBS], x)).unwrap()
        ])
        .unwrap();
    let q = out["q_values"]
        .try_extract_tensor::<f32>()
        .unwrap()
        .1
        .to_vec();
    let h1 = has_h1.then(|| out["h1"].try_extract_tensor::<f32>().unwrap().1.to_vec());
    (q, h1)
}

/// `worker-training reexport`'s core: a model written before the hidden-layer outputs existed
/// (the test fixture `tests/fixtures/hamlet-qnetwork-s1.onnx`) reads back and exports again with `h1`/`h2`, computing
/// exactly the same Q-values, with its metadata kept; our own exports expose their hidden layers,
/// whose ReLU outputs are not negative.
#[test]
fn reexport_adds_hidden_outputs_and_keeps_the_q_function() {
    let old = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hamlet-qnetwork-s1.onnx"),
    )
    .unwrap();
    let (net, meta) = hamlet_onnx::read_network(&old).unwrap();
    let new = hamlet_onnx::export(&net, &meta).unwrap();
    let mut rng = Pcg64::seed_from_u64(9);
    let batch = 32;
    let x: Vec<f32> = (0..batch * OBS)
        .map(|_| rng.random_range(0.0..8.0))
        .collect();
    let (q_old, h_old) = run_file(&old, &x, batch);
    let (q_new, h_new) = run_file(&new, &x, batch);
    assert!(
        h_old.is_none(),
        "the shipped file predates the hidden outputs"
    );
    assert_eq!(q_old, q_new, "the same Q-values, bit for bit");
    let h1 = h_new.expect("h1 after re-export");
    assert_eq!(h1.len(), batch * 128);
    assert!(h1.iter().all(|v| *v >= 0.0));
    assert_eq!(
        hamlet_onnx::inspect(&new).unwrap().metadata,
        hamlet_onnx::inspect(&old).unwrap().metadata
    );
    // A dueling network round-trips too (V and A exposed).
    let net = QNet::new(Network::Dueling, &mut rng);
    let path = std::env::temp_dir().join(format!("rt-duel-{}.onnx", std::process::id()));
    write_model(&net, &TrainingFacts::default(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (net2, meta2) = hamlet_onnx::read_network(&bytes).unwrap();
    assert_eq!(
        run_file(&hamlet_onnx::export(&net2, &meta2).unwrap(), &x, batch).0,
        run_file(&bytes, &x, batch).0
    );
    let _ = std::fs::remove_file(path);
}
