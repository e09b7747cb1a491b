//! Worker-level: a worker killed with `kill -9` mid-episode is replaced by one started from the last
//! snapshot it sent, and the trajectory continues exactly as an uninterrupted worker's does.
//! This test plays the metaserver's part itself (socket, token, Start, numbered commands).

use ipc_proto::browser::ServerMessage;
use ipc_proto::inference::{
    FromInference, SessionCommand, SessionSnapshot, SessionStart, ToInference,
};
use ipc_proto::transport::{self, FrameReader, FrameWriter};
use ipc_proto::WorkerKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Worker {
    child: tokio::process::Child,
    rd: FrameReader,
    wr: FrameWriter,
    _dir: PathBuf,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn spawn(models: &Path, tag: &str) -> Worker {
    let dir = std::env::temp_dir().join(format!("resume-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("w.sock");
    let listener = transport::bind(&sock).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker-inference"))
        .env(ipc_proto::ENV_SOCKET, &sock)
        .env(ipc_proto::ENV_TOKEN, tag)
        .env(
            ipc_proto::ENV_ORT_LIB,
            root().join(".onnxruntime/libonnxruntime.so.1.31.1"),
        )
        .env(ipc_proto::ENV_MODELS_DIR, models)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut rd, wr, _) = transport::accept_worker(
        &listener,
        WorkerKind::Inference,
        tag,
        1 << 20,
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    assert_eq!(
        rd.read::<FromInference>().await.unwrap(),
        FromInference::Ready
    );
    Worker {
        child,
        rd,
        wr,
        _dir: dir,
    }
}

impl Worker {
    async fn start(&mut self, snapshot: Option<SessionSnapshot>) {
        let start = SessionStart {
            session_id: "s".into(),
            model: Some("m.onnx".into()),
            max_steps: 500,
            snapshot,
            announce: true,
        };
        self.wr
            .write(&ToInference::Start(Box::new(start)))
            .await
            .unwrap();
    }

    /// Sends `step` number `seq`; returns the state_update it produced and the snapshot after it.
    async fn step(&mut self, seq: u64) -> (serde_json::Value, SessionSnapshot) {
        self.wr
            .write(&ToInference::Command {
                seq,
                command: SessionCommand::Step,
            })
            .await
            .unwrap();
        let mut frame = None;
        loop {
            match self.rd.read::<FromInference>().await.unwrap() {
                FromInference::Message(m @ ServerMessage::StateUpdate(_)) => {
                    frame = Some(serde_json::from_str(&m.to_json()).unwrap());
                }
                FromInference::Snapshot(s) if s.commands_applied == seq && frame.is_some() => {
                    return (frame.unwrap(), *s);
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn kill_9_then_resume_from_the_last_snapshot_continues_identically() {
    // A real (briefly trained) network, exported by our own trainer.
    let models = std::env::temp_dir().join(format!("resume-models-{}", std::process::id()));
    std::fs::create_dir_all(&models).unwrap();
    let mut t = worker_training::dqn::Trainer::new(ipc_proto::training::TrainingConfig {
        seed: 3,
        max_steps: 60,
        batch_size: 16,
        ..Default::default()
    });
    for _ in 0..4 {
        t.run_episode(|_| worker_training::dqn::Flow::Continue);
    }
    let facts = worker_training::export::TrainingFacts::from_state(&t.state);
    worker_training::export::write_model(&t.state.online, &facts, &models.join("m.onnx")).unwrap();

    // Reference: one worker, 40 uninterrupted steps (stopping at the episode's end if it comes).
    let mut c = spawn(&models, "c").await;
    c.start(None).await;
    let mut reference = Vec::new();
    for seq in 1..=40 {
        let (f, s) = c.step(seq).await;
        reference.push(f);
        if s.phase != ipc_proto::inference::EpisodePhase::Running {
            break;
        }
    }
    assert!(
        reference.len() >= 20,
        "the test model lives at least 20 steps"
    );
    let n = reference.len() as u64;
    let cut = n / 2;

    // Worker A: the first half, then kill -9.
    let mut a = spawn(&models, "a").await;
    a.start(None).await;
    let mut last = None;
    for seq in 1..=cut {
        let (f, s) = a.step(seq).await;
        assert_eq!(f, reference[seq as usize - 1]);
        last = Some(s);
    }
    let pid = a.child.id().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = a.child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // Worker B: resumes from A's last snapshot; the second half matches the reference exactly
    // (positions, actions, rewards, cumulative reward and Q-values, compared as JSON).
    let snap = last.unwrap();
    assert_eq!(snap.world.step as u64, cut);
    assert_eq!(snap.commands_applied, cut);
    let mut b = spawn(&models, "b").await;
    b.start(Some(snap)).await;
    for seq in cut + 1..=n {
        let (f, _) = b.step(seq).await;
        assert_eq!(
            f,
            reference[seq as usize - 1],
            "step {seq} after the resume"
        );
    }
    let _ = std::fs::remove_dir_all(models);
}
