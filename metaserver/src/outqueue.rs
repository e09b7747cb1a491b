//! A bounded per-client outgoing queue with the policy of design.md invariant 4: when full, the
//! oldest `state_update` frames are dropped (a slow viewer skips frames); lifecycle and summary
//! messages are kept; a client whose queue holds only undroppable messages and is still full is
//! hopelessly behind and gets disconnected. A frame faster than its viewer may see (training
//! frames beyond `--viewer-fps`) replaces one like it still waiting at the tail: latest wins.

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::Notify;

/// How a frame may be treated on its way to a browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Lifecycle and summary messages: always delivered, in order.
    Always,
    /// A `state_update` delivered in order, unless the client falls so far behind that its queue
    /// is full (then the oldest such frame goes).
    Droppable,
    /// A `state_update` that a newer `Latest` frame replaces while it waits at the queue's tail.
    Latest,
}

impl Delivery {
    /// `state_update`s are droppable, everything else always delivered.
    pub fn of(m: &ipc_proto::browser::ServerMessage) -> Delivery {
        if m.is_droppable() {
            Delivery::Droppable
        } else {
            Delivery::Always
        }
    }
}

/// One encoded frame; text shared between viewers (cloning is a reference-count bump).
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub text: Utf8Bytes,
    pub delivery: Delivery,
    /// When the frame reached the relay (the relay-latency clock starts here).
    pub arrived: Instant,
}

impl OutFrame {
    pub fn droppable(&self) -> bool {
        self.delivery != Delivery::Always
    }
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
        }
    }

    pub fn push(&self, f: OutFrame) -> Push {
        let mut g = self.inner.lock();
        if g.closed {
            return Push::Queued;
        }
        let latest = |x: &OutFrame| x.delivery == Delivery::Latest;
        if latest(&f) && g.q.back().is_some_and(latest) {
            // Only at the tail: a frame never jumps ahead of a lifecycle message queued before it.
            *g.q.back_mut().expect("checked") = f;
            drop(g);
            self.notify.notify_one();
            return Push::DroppedOne;
        }
        let mut res = Push::Queued;
        if g.q.len() >= self.capacity {
            if f.droppable() {
                // The newest frame supersedes the oldest droppable one still waiting.
                match g.q.iter().position(OutFrame::droppable) {
                    Some(i) => {
                        g.q.remove(i);
                    }
                    None => return Push::DroppedOne,
                }
                res = Push::DroppedOne;
            } else if let Some(i) = g.q.iter().position(OutFrame::droppable) {
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
        self.inner.lock().q.front().is_some_and(OutFrame::droppable)
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
        let delivery = if droppable {
            Delivery::Droppable
        } else {
            Delivery::Always
        };
        frame(text, delivery)
    }

    fn frame(text: &str, delivery: Delivery) -> OutFrame {
        OutFrame {
            text: text.to_owned().into(),
            delivery,
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
    async fn latest_wins_replaces_only_a_latest_frame_at_the_tail() {
        let q = OutQueue::new(8);
        let latest = |t| frame(t, Delivery::Latest);
        assert_eq!(q.push(latest("s1")), Push::Queued);
        assert_eq!(q.push(latest("s2")), Push::DroppedOne, "s2 replaces s1");
        assert_eq!(q.push(f("end", false)), Push::Queued);
        assert_eq!(q.push(latest("s3")), Push::Queued, "never ahead of `end`");
        assert_eq!(q.push(latest("s4")), Push::DroppedOne);
        // In-order frames are never replaced, and do not replace.
        assert_eq!(q.push(f("p1", true)), Push::Queued);
        assert_eq!(q.push(f("p2", true)), Push::Queued);
        assert_eq!(q.push(latest("s5")), Push::Queued);
        let mut out = Vec::new();
        while let Some(x) = q.try_pop() {
            out.push(x.text.to_string());
        }
        assert_eq!(out, ["s2", "end", "s4", "p1", "p2", "s5"]);
    }
}
