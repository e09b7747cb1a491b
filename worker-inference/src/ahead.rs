//! Steps computed ahead of the browser (issue 34). After a sleep, ONNX Runtime's `Run` costs ten
//! times what it costs back to back (its code and data have left the caches: 114–130 µs against
//! 6–8 µs for our network), and every wake and every write costs a worker more than a step. So the
//! worker has no clock of its own: the metaserver asks for steps (`Produce`), the worker computes
//! the next [`steps_ahead`] of them in one go and sends them in one message, and the metaserver
//! releases them to the browsers one per period (`metaserver/src/session/pacer.rs`).
//!
//! Each entry is numbered (1, 2, … since the worker started) and its session state before it is
//! kept until the metaserver says it was released, so a `TakeBack` can return the session to the
//! step the browser last saw before a command or a probe acts on it.

use crate::session::{Checkpoint, Session};
use ipc_proto::inference::{EpisodePhase, PacedEntry, StepsAhead};
use std::collections::VecDeque;
use std::time::Duration;
use tracing::warn;

/// How far ahead steps are computed: about this much of the session's time…
const AHEAD: Duration = Duration::from_millis(100);
/// …and never more entries than this in one batch.
pub const MAX_STEPS_AHEAD: usize = 16;
/// Entries kept for a take-back: more than the metaserver ever holds unreleased (half a batch
/// and a batch); beyond it the oldest are forgotten.
const MAX_KEPT: usize = 4 * MAX_STEPS_AHEAD;

/// Steps computed per batch at this step period: 1 at speed 1 (one every 100 ms), 10 at speed 10.
pub fn steps_ahead(period: Duration) -> usize {
    ((AHEAD.as_secs_f64() / period.as_secs_f64()).round() as usize).clamp(1, MAX_STEPS_AHEAD)
}

#[derive(Default)]
pub struct Ahead {
    /// Entries not known to be released: their number and the session before each, oldest first.
    kept: VecDeque<(u64, Checkpoint)>,
    /// The number of the last entry computed.
    produced: u64,
    /// The last take-back's epoch; batches carry it.
    epoch: u64,
    /// Entries per batch instead of [`steps_ahead`]'s choice (a measurement knob).
    fixed: Option<usize>,
}

impl Ahead {
    /// `fixed`: entries per batch instead of [`steps_ahead`]'s choice (at most
    /// [`MAX_STEPS_AHEAD`]).
    pub fn new(fixed: Option<usize>) -> Ahead {
        Ahead {
            fixed: fixed.map(|n| n.clamp(1, MAX_STEPS_AHEAD)),
            ..Ahead::default()
        }
    }

    /// The next batch: steps while the session plays, and the next episode's start when one
    /// ended (due a pause between episodes after the end). `released`: entries the metaserver
    /// has shown, no longer to be taken back.
    pub fn produce(&mut self, s: &mut Session, released: u64) -> StepsAhead {
        self.kept.retain(|(n, _)| *n > released);
        let n = self.fixed.unwrap_or_else(|| steps_ahead(s.step_period()));
        let first = self.produced + 1;
        let mut entries = Vec::new();
        while entries.len() < n {
            let before = s.checkpoint();
            let (wait, events) = match s.phase() {
                EpisodePhase::Ended => (s.episode_gap(), s.start_next_episode()),
                EpisodePhase::Running if s.playing() => (s.step_period(), s.step_once()),
                EpisodePhase::Running => break,
            };
            self.produced += 1;
            if self.kept.len() == MAX_KEPT {
                self.kept.pop_front();
            }
            self.kept.push_back((self.produced, before));
            entries.push(PacedEntry {
                wait_us: wait.as_micros() as u64,
                events,
            });
        }
        StepsAhead {
            epoch: self.epoch,
            first,
            entries,
        }
    }

    /// Returns the session to just after entry `released`, forgetting every later one.
    pub fn take_back(&mut self, s: &mut Session, epoch: u64, released: u64) {
        self.epoch = epoch;
        if released < self.produced {
            match self.kept.iter().find(|(n, _)| *n == released + 1) {
                Some((_, before)) => s.rewind(before),
                None => warn!(
                    released,
                    produced = self.produced,
                    "take-back of a step no longer kept"
                ),
            }
        }
        self.kept.clear();
        self.produced = released;
    }
}
