//! The pool of training runs (rooms.md "The pool"): at most `--max-training-runs` rooms train at
//! once on this server; a start beyond that waits in a queue, first come first served, and its
//! room's viewers are told their place (`queued`) until a slot frees. Never refused for want of
//! a slot.
//!
//! The slots know room names only — not hubs — so every hub can hold this handle without a circle;
//! `rooms.rs` frees the slots of rooms whose run ended and hands the queue's head its start.

use super::state::HubCmd;
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc;

pub struct RunSlots {
    max: usize,
    s: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Rooms holding a slot, and how many of the rooms' checks found it no longer training.
    holders: BTreeMap<String, u8>,
    queue: VecDeque<Queued>,
}

/// A start waiting for a slot: the room's command queue, and the `start_training` itself.
pub(super) struct Queued {
    pub room: String,
    pub(super) to: mpsc::Sender<HubCmd>,
    pub(super) start: HubCmd,
}

impl RunSlots {
    pub fn new(max: usize) -> RunSlots {
        RunSlots {
            max: max.max(1),
            s: Mutex::new(Slots::default()),
        }
    }

    /// Takes a slot for `room` if one is free and nobody waits ahead of it; `false`: queue it.
    pub fn try_take(&self, room: &str) -> bool {
        let mut s = self.s.lock();
        if let Some(misses) = s.holders.get_mut(room) {
            *misses = 0;
            return true;
        }
        let ahead = s.queue.iter().any(|q| q.room != room);
        if s.holders.len() < self.max && !ahead {
            s.holders.insert(room.to_owned(), 0);
            s.queue.retain(|q| q.room != room);
            return true;
        }
        false
    }

    /// Slots free for a new run (none while starts wait).
    pub fn free(&self) -> usize {
        let s = self.s.lock();
        if s.queue.is_empty() {
            self.max.saturating_sub(s.holders.len())
        } else {
            0
        }
    }

    /// Would [`try_take`](Self::try_take) give `room` a slot now?
    pub fn has_free(&self, room: &str) -> bool {
        let s = self.s.lock();
        s.holders.contains_key(room)
            || (s.holders.len() < self.max && !s.queue.iter().any(|q| q.room != room))
    }

    /// Takes the start at the queue's head (to move it to another node's free slot).
    pub(super) fn take_head(&self) -> Option<Queued> {
        self.s.lock().queue.pop_front()
    }

    /// Puts a start back at the queue's head (it could not move).
    pub(super) fn push_front(&self, q: Queued) {
        self.s.lock().queue.push_front(q);
    }

    /// Queues a room's start (replacing one it had queued); its place, from 1.
    pub(super) fn enqueue(&self, q: Queued) -> usize {
        let mut s = self.s.lock();
        match s.queue.iter().position(|x| x.room == q.room) {
            Some(i) => {
                s.queue[i] = q;
                i + 1
            }
            None => {
                s.queue.push_back(q);
                s.queue.len()
            }
        }
    }

    /// Takes a room's start out of the queue if `may` allows (its starter or an operator
    /// stopped it); whether it was taken out.
    pub(super) fn withdraw(&self, room: &str, may: impl Fn(&HubCmd) -> bool) -> bool {
        let mut s = self.s.lock();
        let before = s.queue.len();
        s.queue.retain(|q| q.room != room || !may(&q.start));
        s.queue.len() != before
    }

    /// A room's place in the queue, from 1.
    pub fn position(&self, room: &str) -> Option<usize> {
        self.s
            .lock()
            .queue
            .iter()
            .position(|q| q.room == room)
            .map(|i| i + 1)
    }

    /// Frees the slots of rooms no longer training — found so twice in a row, so that a run
    /// between taking its slot and saying it trains keeps it — and hands out the freed slots
    /// to the queue's head, in order. Returns the starts to deliver and the rooms still waiting.
    pub(super) fn settle(&self, training: impl Fn(&str) -> bool) -> (Vec<Queued>, Vec<String>) {
        let mut s = self.s.lock();
        s.holders.retain(|room, misses| {
            if training(room) {
                *misses = 0;
            } else {
                *misses += 1;
            }
            *misses < 2
        });
        let mut ready = Vec::new();
        while s.holders.len() < self.max {
            let Some(q) = s.queue.pop_front() else { break };
            s.holders.insert(q.room.clone(), 0);
            ready.push(q);
        }
        let waiting = s.queue.iter().map(|q| q.room.clone()).collect();
        (ready, waiting)
    }
}
