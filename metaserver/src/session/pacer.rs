//! A playing session's steps, released to its browsers at the session's pace (issue 34).
//!
//! The worker computes steps ahead of the clock — ten at a time at speed 10 — because ONNX Runtime
//! runs ten times slower cold, after a sleep, than back to back, and because each wake and each
//! write costs a worker more than the step itself. This pacer asks for them (`Produce`), keeps
//! them and releases one per period (each entry says how long after the previous one it is due:
//! the step period, or the pause between episodes). Only a released step reaches the browsers,
//! the snapshot and so the store: what the session *is*, for everyone outside the worker, is the
//! last step released.
//!
//! **Architecture Invariant: a command meets the step the browser last saw.** Before any command
//! or probe reaches the worker, the pacer forgets what it holds and tells the worker to take back
//! every step after the last released (`TakeBack`). Each take-back starts a new epoch; steps the
//! worker computed before it learned of the take-back carry the old epoch and are dropped here.

use ipc_proto::inference::{FromInference, PacedEntry, StepsAhead, ToInference};
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{sleep_until, Instant, Sleep};
use tracing::warn;

/// A step released later than this after it was due (or later than its own wait, when that is
/// longer: the pause between episodes) starts the cadence again from now. One released less late
/// keeps it, and the steps that fell due meanwhile follow at once: a hiccup of the machine is made
/// up, so the session keeps the speed its user set, but a longer stall is not — no rush of steps
/// after a freeze. At speed 10 that is five steps; at speed 1 (100 ms a step), none.
const CATCH_UP: Duration = Duration::from_millis(50);

/// A step released: its messages, and whether the session fell behind its speed with it.
pub(super) struct Release {
    pub events: Vec<FromInference>,
    /// Released more than [`CATCH_UP`] late: the cadence started again from now.
    pub fell_behind: bool,
}

pub(super) struct Pacer {
    queue: VecDeque<PacedEntry>,
    /// Entries released since the worker started (the worker numbers its entries the same way).
    released: u64,
    /// Raised by each take-back.
    epoch: u64,
    /// A `Produce` is on its way and its answer has not come.
    asked: bool,
    /// Entries are being asked for and released (false: paused, or none came back).
    active: bool,
    /// When the last entry was due: the next is due its `wait` later.
    last_due: Instant,
    /// An empty batch came back (the worker found nothing to compute): ask again only once the
    /// session changed, never in a loop.
    stalled: bool,
    /// The length of the last batch: more are asked for when half of it is left.
    batch: usize,
    /// Fires when the queue's first entry is due.
    timer: Pin<Box<Sleep>>,
}

impl Pacer {
    pub fn new() -> Pacer {
        let now = Instant::now();
        Pacer {
            queue: VecDeque::new(),
            released: 0,
            epoch: 0,
            asked: false,
            active: false,
            stalled: false,
            last_due: now,
            batch: 0,
            timer: Box::pin(sleep_until(now)),
        }
    }

    /// A new worker: nothing computed yet, and it counts from 0.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.released = 0;
        self.epoch = 0;
        self.asked = false;
        self.active = false;
        self.stalled = false;
    }

    /// A new snapshot of the session: whether it wants steps may have changed.
    pub fn session_changed(&mut self) {
        self.stalled = false;
    }

    fn next_due(&self) -> Option<Instant> {
        let wait = self.queue.front()?.wait_us;
        Some(self.last_due + Duration::from_micros(wait))
    }

    pub fn has_due(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Fires when the next entry is due (only while [`Pacer::has_due`]).
    pub fn timer(&mut self) -> Pin<&mut Sleep> {
        self.timer.as_mut()
    }

    fn rearm(&mut self) {
        if let Some(due) = self.next_due() {
            self.timer.as_mut().reset(due);
        }
    }

    /// A batch from the worker; one computed before the last take-back is dropped.
    pub fn accept(&mut self, ahead: StepsAhead) {
        if ahead.epoch != self.epoch {
            return;
        }
        let expected = self.released + self.queue.len() as u64 + 1;
        if ahead.first != expected && !ahead.entries.is_empty() {
            // Not expected to happen. The batch is dropped and nothing more asked for; the next
            // command or probe takes back whatever the worker computed (`asked` stays set).
            warn!(
                first = ahead.first,
                expected, "steps computed ahead out of order: dropped"
            );
            return;
        }
        self.asked = false;
        if ahead.entries.is_empty() {
            self.active = false;
            self.stalled = true;
            return;
        }
        self.batch = ahead.entries.len();
        self.queue.extend(ahead.entries);
        self.rearm();
    }

    /// The next entry, if it is due at `now`.
    pub fn release(&mut self, now: Instant) -> Option<Release> {
        let due = self.next_due()?;
        if due > now {
            // Woken early: wait again rather than spin on a timer that has fired.
            self.rearm();
            return None;
        }
        let entry = self.queue.pop_front()?;
        self.released += 1;
        // Late because the machine was busy or the batch came late: made up within `CATCH_UP`,
        // beyond it the cadence starts again from now.
        let fell_behind =
            now.duration_since(due) > CATCH_UP.max(Duration::from_micros(entry.wait_us));
        self.last_due = if fell_behind { now } else { due };
        self.rearm();
        Some(Release {
            events: entry.events,
            fell_behind,
        })
    }

    /// What to ask the worker for now, if anything: more steps while the session plays (or waits
    /// to begin its next episode) and half of the last batch or less is left.
    pub fn ask(&mut self, wanted: bool) -> Option<ToInference> {
        if !wanted {
            self.active = false;
            return None;
        }
        if self.stalled || self.asked || self.queue.len() > self.batch / 2 {
            return None;
        }
        if !self.active {
            // Play (again): the first step is due one period from now.
            self.active = true;
            self.last_due = Instant::now();
        }
        self.asked = true;
        Some(ToInference::Produce {
            epoch: self.epoch,
            released: self.released,
        })
    }

    /// The `Produce` could not be sent: ask again later.
    pub fn not_asked(&mut self) {
        self.asked = false;
    }

    /// Before a command or a probe: the message that takes back the steps computed after the last
    /// released, if the worker may have any. Apply it with [`Pacer::took_back`] once it is sent.
    pub fn take_back(&self) -> Option<ToInference> {
        (self.asked || !self.queue.is_empty()).then(|| ToInference::TakeBack {
            epoch: self.epoch + 1,
            released: self.released,
        })
    }

    pub fn took_back(&mut self) {
        self.epoch += 1;
        self.queue.clear();
        self.asked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_proto::inference::{PacedEntry, StepsAhead};

    const PERIOD: Duration = Duration::from_millis(10);

    /// `n` entries numbered from `first`, each a period after the previous (each entry's one
    /// message is a `Pong` carrying its number, to tell them apart).
    fn batch(epoch: u64, first: u64, n: u64) -> StepsAhead {
        StepsAhead {
            epoch,
            first,
            entries: (first..first + n)
                .map(|seq| PacedEntry {
                    wait_us: PERIOD.as_micros() as u64,
                    events: vec![FromInference::Pong { seq }],
                })
                .collect(),
        }
    }

    fn number(released: Option<Release>) -> Option<u64> {
        match released?.events.as_slice() {
            [FromInference::Pong { seq }] => Some(*seq),
            other => panic!("{other:?}"),
        }
    }

    fn produce(epoch: u64, released: u64) -> Option<ToInference> {
        Some(ToInference::Produce { epoch, released })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_released_in_order_one_period_apart() {
        let mut p = Pacer::new();
        let t0 = Instant::now();
        assert_eq!(p.ask(true), produce(0, 0));
        assert_eq!(p.ask(true), None, "one request at a time");
        p.accept(batch(0, 1, 10));
        assert_eq!(
            number(p.release(t0)),
            None,
            "the first is due a period after play"
        );
        assert_eq!(number(p.release(t0 + PERIOD)), Some(1));
        assert_eq!(number(p.release(t0 + PERIOD * 3 / 2)), None);
        assert_eq!(number(p.release(t0 + PERIOD * 2)), Some(2));
        for n in 3..=4 {
            assert_eq!(number(p.release(t0 + PERIOD * n)), Some(n as u64));
            assert_eq!(p.ask(true), None, "more than half the batch is left");
        }
        assert_eq!(number(p.release(t0 + PERIOD * 5)), Some(5));
        assert_eq!(p.ask(true), produce(0, 5), "half left: the next batch");
        assert_eq!(p.ask(false), None, "paused: nothing asked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hiccup_is_made_up_and_a_longer_stall_restarts_the_cadence() {
        let mut p = Pacer::new();
        let t0 = Instant::now();
        p.ask(true);
        p.accept(batch(0, 1, 10));
        assert_eq!(number(p.release(t0 + PERIOD)), Some(1));
        // 30 ms late (under `CATCH_UP`): the steps due meanwhile follow at once, then the
        // cadence goes on where it was.
        let late = t0 + PERIOD * 4;
        for n in 2..=4 {
            let r = p.release(late).expect("due");
            assert!(!r.fell_behind);
            assert_eq!(number(Some(r)), Some(n));
        }
        assert_eq!(number(p.release(late)), None, "caught up");
        assert_eq!(number(p.release(t0 + PERIOD * 5)), Some(5));
        // 70 ms late: the cadence starts again from then, with no rush of steps.
        let stalled = t0 + PERIOD * 13;
        let r = p.release(stalled).expect("due");
        assert!(r.fell_behind);
        assert_eq!(number(Some(r)), Some(6));
        assert_eq!(
            number(p.release(stalled + PERIOD / 2)),
            None,
            "no catching up"
        );
        assert_eq!(number(p.release(stalled + PERIOD)), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_take_back_forgets_what_is_held_and_drops_batches_computed_before_it() {
        let mut p = Pacer::new();
        let t0 = Instant::now();
        assert_eq!(
            p.take_back(),
            None,
            "nothing computed: nothing to take back"
        );
        p.ask(true);
        p.accept(batch(0, 1, 10));
        assert_eq!(number(p.release(t0 + PERIOD)), Some(1));
        assert_eq!(
            p.take_back(),
            Some(ToInference::TakeBack {
                epoch: 1,
                released: 1
            })
        );
        p.took_back();
        assert!(!p.has_due());
        p.accept(batch(0, 11, 10));
        assert!(!p.has_due(), "computed before the take-back: dropped");
        assert_eq!(p.ask(true), produce(1, 1));
        p.accept(batch(1, 2, 10));
        assert_eq!(
            number(p.release(t0 + PERIOD * 2)),
            Some(2),
            "the cadence goes on"
        );
        p.reset();
        assert_eq!(p.ask(true), produce(0, 0), "a new worker counts from 0");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_stops_the_asking_until_the_session_changes() {
        let mut p = Pacer::new();
        p.ask(true);
        p.accept(batch(0, 1, 0));
        assert_eq!(p.ask(true), None);
        p.session_changed();
        assert_eq!(p.ask(true), produce(0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_out_of_order_is_dropped_and_the_next_command_takes_back() {
        let mut p = Pacer::new();
        p.ask(true);
        p.accept(batch(0, 5, 10));
        assert!(!p.has_due());
        assert_eq!(p.ask(true), None, "no loop of requests");
        assert!(p.take_back().is_some());
    }
}
