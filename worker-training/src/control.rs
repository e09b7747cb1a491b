//! Run control shared by the worker's event loop, the training thread and the replayer: pause,
//! the ways a run ends, and the recording waiting to be replayed (`pacing: replay`).
//!
//! **The replayer.** With `pacing: replay`, the training thread records each shown episode's
//! frames at full speed and goes on learning; the replayer plays the newest recording to viewers
//! one frame per `step_delay`. A recording that arrives while another plays waits, and a newer one
//! replaces it, so viewers always see a real, recent training episode. When the run completes,
//! the replayer plays out what it has before `training_complete`; a stop cuts it short.

use crate::outbox::Outbox;
use ipc_proto::browser::{EpisodeStart, ServerMessage};
use ipc_proto::wire::StateUpdate;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct CtlState {
    pub paused: bool,
    /// End the run early and save its model (`stop`).
    pub stop: bool,
    /// The worker is going away with the server: checkpoint, save the model, end the run.
    pub shutdown: bool,
    /// The worker is being replaced: checkpoint and end, leaving the run to the successor.
    pub handover: bool,
    /// The training loop is over: the replayer plays out what is recorded, then stops.
    finished: bool,
    /// The training thread is unwinding from a panic: everything stops at once.
    abandoned: bool,
    /// The newest recorded shown episode not yet replayed.
    waiting: Option<Recording>,
}

impl CtlState {
    /// The run must end now (nothing more is played).
    fn ending(&self) -> bool {
        self.stop || self.shutdown || self.handover || self.abandoned
    }
}

/// A shown episode's frames, recorded at full speed for the replayer.
pub struct Recording {
    pub episode: u32,
    pub epsilon: f64,
    pub frames: Vec<StateUpdate>,
}

/// Frames kept of one shown episode (about 1 KB each): at the smallest non-zero delays this is
/// minutes of replay; the rest of a longer episode is not shown.
pub const MAX_RECORDED_FRAMES: usize = 3000;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    /// A greedy evaluation was competent and the run was configured to stop there.
    Competent,
    Stopped,
    Shutdown,
    Handover,
}

#[derive(Default)]
pub struct RunCtl {
    s: Mutex<CtlState>,
    cv: Condvar,
    /// The episode training has reached (replayed frames say so: `live_episode`).
    live_episode: AtomicU32,
}

impl RunCtl {
    pub fn set(&self, f: impl FnOnce(&mut CtlState)) {
        f(&mut self.s.lock());
        self.cv.notify_all();
    }

    /// Blocks while paused and waits out `delay` (interruptibly). `false`: the run must end now.
    pub fn gate(&self, delay: Duration) -> bool {
        let mut g = self.s.lock();
        // The condvar also wakes for other changes (a new recording): wait out the whole delay.
        let deadline = Instant::now() + delay;
        while !delay.is_zero() && !g.ending() {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        while g.paused && !g.ending() {
            self.cv.wait(&mut g);
        }
        !g.ending()
    }

    pub fn set_live_episode(&self, episode: u32) {
        self.live_episode.store(episode, Relaxed);
    }

    /// Hands a recording to the replayer (replacing one still waiting).
    pub fn record(&self, r: Recording) {
        self.set(|s| s.waiting = Some(r));
    }

    /// The training loop is over: the replayer may play out what it has.
    pub fn finish(&self) {
        self.set(|s| s.finished = true);
    }

    pub fn reason(&self) -> RunEnd {
        let s = self.s.lock();
        if s.handover {
            RunEnd::Handover
        } else if s.shutdown {
            RunEnd::Shutdown
        } else {
            RunEnd::Stopped
        }
    }

    /// The next recording to replay; `None` once the run is over and nothing waits.
    fn next_recording(&self) -> Option<Recording> {
        let mut g = self.s.lock();
        loop {
            if g.ending() {
                return None;
            }
            if let Some(r) = g.waiting.take() {
                return Some(r);
            }
            if g.finished {
                return None;
            }
            self.cv.wait(&mut g);
        }
    }
}

/// Stops everything at once if the training thread unwinds from a panic (the replayer would
/// otherwise keep the thread scope, and the crash report, waiting).
pub struct AbandonOnUnwind<'a>(pub &'a RunCtl);

impl Drop for AbandonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set(|s| s.abandoned = true);
        }
    }
}

/// The replayer's body: each recording as `episode_start` and its frames, one per `delay`, every
/// one marked `replay` with the episode training has reached.
pub fn replay(ctl: &RunCtl, out: &Outbox, delay: Duration) {
    while let Some(rec) = ctl.next_recording() {
        let live = || Some(ctl.live_episode.load(Relaxed));
        out.message(ServerMessage::EpisodeStart(EpisodeStart {
            episode: rec.episode,
            model_name: None,
            epsilon: Some(rec.epsilon),
            replay: Some(true),
            live_episode: live(),
        }));
        for mut f in rec.frames {
            f.replay = Some(true);
            f.live_episode = live();
            out.frame(ServerMessage::StateUpdate(Box::new(f)), delay);
            if !ctl.gate(delay) {
                return;
            }
        }
    }
}
