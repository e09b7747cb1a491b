//! How a live session's snapshot reaches the store: [`StoreWriter`].
//!
//! A store whose cost is per round, not per write (the directory: one `syncfs` makes a whole
//! round durable; a write in a round of 256 costs the machine 20–34 µs of CPU, one made durable
//! on its own with `fdatasync` 68–151 µs, `scripts/bench sessions`) gets one thread,
//! `store-writer`, that gathers the writes sent to it and writes them as rounds
//! ([`SessionStore::put_round`]). Every session's periodic write is due at the same instants
//! ([`StoreWriter::flush_ticks`]), so a flush interval's writes make one round. A store whose
//! writes wait on a network (Redis) keeps one blocking call per write: in a round each would
//! wait for the slowest.
//!
//! **Architecture Invariant: a round never holds two writes of one session.** Two copies stay
//! safe only if one is never overwritten before the other is durable; a second write of a session
//! waits for the next round.

use super::store::{one_per_session, Put, SessionStore, StoreError, StoredSession};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How long the writer waits after a round's first write for the others: the sessions' ticks
/// coincide, but each session task runs its own in turn on the relay thread.
const GATHER: Duration = Duration::from_millis(5);

/// Writes waiting for a round, at most. Each session has one write on its way at a time, so this
/// bounds nothing a server of `--max-sessions` ≤ 1024 can reach; beyond it writers wait.
const QUEUE: usize = 1024;

/// One write on its way.
struct Request {
    entry: StoredSession,
    done: oneshot::Sender<Result<Put, StoreError>>,
}

/// The handle sessions write through (see the module's text).
pub struct StoreWriter {
    store: Arc<dyn SessionStore>,
    /// The round writer's queue, for a store that writes in rounds.
    rounds: Option<mpsc::Sender<Request>>,
    /// Periodic writes are due at `anchor` plus whole flush intervals.
    anchor: Instant,
}

impl StoreWriter {
    /// Starts the round writer's thread if `store` writes in rounds; it ends when the last
    /// handle is dropped.
    pub fn new(store: Arc<dyn SessionStore>) -> std::io::Result<StoreWriter> {
        let rounds = if store.writes_in_rounds() {
            let (tx, rx) = mpsc::channel(QUEUE);
            let store = store.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_rounds(store.as_ref(), rx))?;
            Some(tx)
        } else {
            None
        };
        Ok(StoreWriter {
            store,
            rounds,
            anchor: Instant::now(),
        })
    }

    /// Writes `entry` (durably, as [`SessionStore::put`] would) and waits for the outcome.
    pub async fn write(&self, entry: StoredSession) -> Result<Put, StoreError> {
        let gone = || StoreError::Unavailable("the store writer stopped".into());
        match &self.rounds {
            Some(queue) => {
                let (done, outcome) = oneshot::channel();
                queue
                    .send(Request { entry, done })
                    .await
                    .map_err(|_| gone())?;
                outcome.await.map_err(|_| gone())?
            }
            None => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.put(&entry))
                    .await
                    .map_err(|_| gone())?
            }
        }
    }

    /// When a session's periodic write is due, every `period`. For a store that writes in rounds
    /// every session's ticks fall on the same instants, so their writes make one round; otherwise
    /// each session ticks from its own start, spreading the writes out.
    pub fn flush_ticks(&self, period: Duration) -> Interval {
        let mut tick = if self.rounds.is_some() {
            let now = Instant::now();
            let periods = (now - self.anchor).as_nanos() / period.as_nanos().max(1) + 1;
            let next = self.anchor + period * u32::try_from(periods).unwrap_or(u32::MAX);
            tokio::time::interval_at(next, period)
        } else {
            tokio::time::interval(period)
        };
        // Skip keeps the ticks on their instants after a late one; Delay would drift off them.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        tick
    }
}

/// The `store-writer` thread: a round is what came within [`GATHER`] of its first write, less a
/// second write of a session already in it (kept for the next round).
fn write_rounds(store: &dyn SessionStore, mut queue: mpsc::Receiver<Request>) {
    let mut waiting: Vec<Request> = Vec::new();
    loop {
        if waiting.is_empty() {
            match queue.blocking_recv() {
                Some(r) => waiting.push(r),
                None => return,
            }
            std::thread::sleep(GATHER);
        }
        while let Ok(r) = queue.try_recv() {
            waiting.push(r);
        }
        let (round, rest) = one_per_session(waiting.drain(..), |r| r.entry.token.clone());
        waiting = rest;
        let (entries, dones): (Vec<StoredSession>, Vec<_>) =
            round.into_iter().map(|r| (r.entry, r.done)).unzip();
        for (done, outcome) in dones.into_iter().zip(store.put_round(&entries)) {
            let _ = done.send(outcome);
        }
    }
}

#[cfg(test)]
#[path = "store_writer_tests.rs"]
mod tests;
