//! Worker-level: a worker killed with `kill -9` mid-episode is replaced by one started from the last
//! snapshot it sent, and the trajectory continues exactly as an uninterrupted worker's does.
//! This test plays the metaserver's part itself (socket, token, Start, numbered commands).

use hamlet_tests::DirectWorker;
use ipc_proto::browser::ServerMessage;
use ipc_proto::inference::{
    FromInference, SessionCommand, SessionSnapshot, SessionStart, ToInference,
};

/// A worker, and its session as its messages describe it (a step sends only what it changed).
struct Worker(DirectWorker, Option<SessionSnapshot>);

impl Worker {
    async fn start(&mut self, snapshot: Option<SessionSnapshot>) {
        let start = SessionStart {
            session_id: "s".into(),
            model: Some("m.onnx".into()),
            max_steps: 500,
            snapshot,
            announce: true,
            seed: 1,
        };
        self.0.send(ToInference::Start(Box::new(start))).await;
    }

    /// The session after `event`, when it changed it.
    fn follow(&mut self, event: &FromInference) -> Option<&SessionSnapshot> {
        let changed = match (&mut self.1, event) {
            (None, FromInference::Snapshot(s)) => {
                self.1 = Some((**s).clone());
                true
            }
            (Some(s), e) => s.follow(e),
            (None, _) => false,
        };
        if changed {
            self.1.as_ref()
        } else {
            None
        }
    }

    /// Sends command number `seq` and waits for the snapshot that says it was applied.
    async fn command(&mut self, seq: u64, command: SessionCommand) {
        self.0.send(ToInference::Command { seq, command }).await;
        loop {
            let event = self.0.recv().await;
            if self.follow(&event).map(|s| s.commands_applied) == Some(seq) {
                return;
            }
        }
    }

    /// Sends `step` number `seq`; returns the state_update it produced and the snapshot after it.
    async fn step(&mut self, seq: u64) -> (serde_json::Value, SessionSnapshot) {
        self.0
            .send(ToInference::Command {
                seq,
                command: SessionCommand::Step,
            })
            .await;
        // A step sends its frame and snapshot in one message, or (the episode's last step) the
        // frame first and the snapshot after the episode's end.
        let mut frame = None;
        loop {
            let event = self.0.recv().await;
            let snapshot = self.follow(&event).cloned();
            if let Some(m @ ServerMessage::StateUpdate(_)) = event.into_browser() {
                frame = Some(serde_json::from_str(&m.to_json()).unwrap());
            }
            match snapshot {
                Some(s) if s.commands_applied == seq && frame.is_some() => {
                    return (frame.unwrap(), s);
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
    let mut t = hamlet_dqn::dqn::Trainer::new(ipc_proto::training::TrainingConfig {
        seed: 3,
        max_steps: 60,
        batch_size: 16,
        ..Default::default()
    });
    for _ in 0..4 {
        t.run_episode(|_| hamlet_dqn::dqn::Flow::Continue);
    }
    let facts = hamlet_dqn::export::TrainingFacts::from_state(&t.state);
    hamlet_dqn::export::write_model(&t.state.online, &facts, &models.join("m.onnx")).unwrap();

    // Reference: one worker, 40 uninterrupted steps (stopping at the episode's end if it comes).
    let mut c = Worker(DirectWorker::spawn(&models).await, None);
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
    let mut a = Worker(DirectWorker::spawn(&models).await, None);
    a.start(None).await;
    let mut last = None;
    for seq in 1..=cut {
        let (f, s) = a.step(seq).await;
        assert_eq!(f, reference[seq as usize - 1]);
        last = Some(s);
    }
    let exit = a.0.kill9().await;
    assert_eq!(exit.signal, Some(9));

    // Worker B: resumes from A's last snapshot; the second half matches the reference exactly
    // (positions, actions, rewards, cumulative reward and Q-values, compared as JSON).
    let snap = last.unwrap();
    assert_eq!(snap.world.step as u64, cut);
    assert_eq!(snap.commands_applied, cut);
    let mut b = Worker(DirectWorker::spawn(&models).await, None);
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

/// ε-greedy play and random starts draw from the session's RNG, which travels in the snapshot: a
/// worker resumed from a snapshot draws exactly the numbers an uninterrupted one draws — the same
/// random actions, the same start cells — across episode boundaries.
#[tokio::test]
async fn a_resumed_session_draws_the_same_random_numbers() {
    use ipc_proto::inference::StartMode;
    let models = std::env::temp_dir().join(format!("resume-rng-{}", std::process::id()));
    std::fs::create_dir_all(&models).unwrap();
    let t = hamlet_dqn::dqn::Trainer::new(ipc_proto::training::TrainingConfig {
        seed: 5,
        ..Default::default()
    });
    let facts = hamlet_dqn::export::TrainingFacts::from_state(&t.state);
    hamlet_dqn::export::write_model(&t.state.online, &facts, &models.join("m.onnx")).unwrap();
    async fn configured(models: &std::path::Path) -> Worker {
        let mut w = Worker(DirectWorker::spawn(models).await, None);
        w.start(None).await;
        w.command(1, SessionCommand::SetEpsilon { epsilon: 0.5 })
            .await;
        w.command(
            2,
            SessionCommand::SetStart {
                mode: StartMode::Random,
            },
        )
        .await;
        w
    }
    // An untrained network dies within ~100 steps: 240 steps cross several episodes.
    const N: u64 = 240;
    let mut c = configured(&models).await;
    let mut reference = Vec::new();
    for seq in 3..3 + N {
        reference.push(c.step(seq).await.0);
    }
    let starts = reference.iter().filter(|f| f["step"] == 0).count();
    let explored = reference.iter().filter(|f| f["explored"] == true).count();
    assert!(starts >= 2, "the run crosses episodes ({starts} starts)");
    assert!(
        explored > 40 && explored < 200,
        "ε 0.5: {explored} of {N} explored"
    );

    let cut = 3 + N / 2;
    let mut a = configured(&models).await;
    let mut last = None;
    for seq in 3..cut {
        let (f, s) = a.step(seq).await;
        assert_eq!(f, reference[(seq - 3) as usize]);
        last = Some(s);
    }
    a.0.kill9().await;
    let mut b = Worker(DirectWorker::spawn(&models).await, None);
    b.start(last).await;
    for seq in cut..3 + N {
        let (f, _) = b.step(seq).await;
        assert_eq!(
            f,
            reference[(seq - 3) as usize],
            "step {seq} after the resume"
        );
    }
    let _ = std::fs::remove_dir_all(models);
}
