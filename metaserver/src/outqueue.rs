//! A bounded per-client outgoing queue with the policy of design.md invariant 4: when full, the
//! oldest `state_update` frames are dropped (a slow viewer skips frames); lifecycle and summary
//! messages are kept; a client whose queue holds only undroppable messages and is still full is
//! hopelessly behind and gets disconnected.

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::Notify;

/// One encoded frame; text shared between viewers (cloning is a reference-count bump).
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub text: Utf8Bytes,
    pub droppable: bool,
    /// When the frame reached the relay (the relay-latency clock starts here).
    pub arrived: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued after dropping an older droppable frame (or this one was dropped).
    DroppedOne,
    /// The client is hopelessly behind and must be disconnected.
    Overflow,
}

#[derive(Debug)]
struct Inner {
    q: VecDeque<OutFrame>,
    closed: bool,
}

#[derive(Debug)]
pub struct OutQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
    /// Latest wins: a droppable frame replaces a droppable frame waiting at the tail (for paced
    /// training viewers, who see the present rather than a backlog).
    latest_wins: bool,
}

impl OutQueue {
    pub fn new(capacity: usize) -> Self {
        OutQueue {
            inner: Mutex::new(Inner {
                q: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
            }),
            notify: Notify::new(),
            capacity: capacity.max(2),
            latest_wins: false,
        }
    }

    /// A queue where a new `state_update` replaces one still waiting at the tail.
    pub fn latest_wins(capacity: usize) -> Self {
        OutQueue {
            latest_wins: true,
            ..OutQueue::new(capacity)
        }
    }

    pub fn push(&self, f: OutFrame) -> Push {
        let mut g = self.inner.lock();
        if g.closed {
            return Push::Queued;
        }
        if self.latest_wins && f.droppable && g.q.back().is_some_and(|b| b.droppable) {
            // Only at the tail: a frame never jumps ahead of a lifecycle message queued before it.
            *g.q.back_mut().expect("checked") = f;
            drop(g);
            self.notify.notify_one();
            return Push::DroppedOne;
        }
        let mut res = Push::Queued;
        if g.q.len() >= self.capacity {
            if f.droppable {
                // The newest frame supersedes the oldest droppable one still waiting.
                match g.q.iter().position(|x| x.droppable) {
                    Some(i) => {
                        g.q.remove(i);
                    }
                    None => return Push::DroppedOne,
                }
                res = Push::DroppedOne;
            } else if let Some(i) = g.q.iter().position(|x| x.droppable) {
                g.q.remove(i);
                res = Push::DroppedOne;
            } else {
                // Hopelessly behind: what is queued will never be read in time; close now.
                g.q.clear();
                g.closed = true;
                drop(g);
                self.notify.notify_one();
                return Push::Overflow;
            }
        }
        g.q.push_back(f);
        drop(g);
        self.notify.notify_one();
        res
    }

    /// Waits for the next frame; `None` once closed and drained.
    pub async fn pop(&self) -> Option<OutFrame> {
        loop {
            {
                let mut g = self.inner.lock();
                // A closed queue still delivers what was queued before the close (an `error`
                // frame explaining the close code, say).
                if let Some(f) = g.q.pop_front() {
                    return Some(f);
                }
                if g.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Waits until a frame is queued (true) or the queue is closed and empty (false).
    pub async fn ready(&self) -> bool {
        loop {
            {
                let g = self.inner.lock();
                if !g.q.is_empty() {
                    return true;
                }
                if g.closed {
                    return false;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Whether the next frame out is a droppable one.
    pub fn front_is_droppable(&self) -> bool {
        self.inner.lock().q.front().is_some_and(|f| f.droppable)
    }

    pub fn try_pop(&self) -> Option<OutFrame> {
        self.inner.lock().q.pop_front()
    }

    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().q.len()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str, droppable: bool) -> OutFrame {
        OutFrame {
            text: text.to_owned().into(),
            droppable,
            arrived: Instant::now(),
        }
    }

    #[tokio::test]
    async fn drops_state_updates_keeps_lifecycle_then_overflows() {
        let q = OutQueue::new(3);
        assert_eq!(q.push(f("s1", true)), Push::Queued);
        assert_eq!(q.push(f("end1", false)), Push::Queued);
        assert_eq!(q.push(f("s2", true)), Push::Queued);
        // Full: a new state_update replaces the oldest one.
        assert_eq!(q.push(f("s3", true)), Push::DroppedOne);
        // Full: a lifecycle message evicts a state_update rather than being lost.
        assert_eq!(q.push(f("end2", false)), Push::DroppedOne);
        let texts: Vec<String> = std::iter::from_fn(|| {
            let mut g = q.inner.lock();
            g.q.pop_front().map(|x| x.text.to_string())
        })
        .collect();
        assert_eq!(texts, ["end1", "s3", "end2"]);
        // Only undroppable messages and still full: overflow.
        for i in 0..3 {
            assert_eq!(q.push(f(&format!("e{i}"), false)), Push::Queued);
        }
        assert_eq!(q.push(f("s", true)), Push::DroppedOne);
        assert_eq!(q.push(f("e3", false)), Push::Overflow);
        assert!(q.pop().await.is_none(), "an overflowed queue is closed");
    }

    #[tokio::test]
    async fn latest_wins_replaces_only_a_frame_at_the_tail() {
        let q = OutQueue::latest_wins(8);
        assert_eq!(q.push(f("s1", true)), Push::Queued);
        assert_eq!(q.push(f("s2", true)), Push::DroppedOne, "s2 replaces s1");
        assert_eq!(q.push(f("end", false)), Push::Queued);
        assert_eq!(q.push(f("s3", true)), Push::Queued, "never ahead of `end`");
        assert_eq!(q.push(f("s4", true)), Push::DroppedOne);
        let mut out = Vec::new();
        while let Some(x) = q.try_pop() {
            out.push(x.text.to_string());
        }
        assert_eq!(out, ["s2", "end", "s4"]);
    }
}
