//! The metaserver's end of a worker connection, written once for both worker kinds: a bounded
//! command queue drained by a writer task, a reader task that forwards the worker's events, and the
//! heartbeat (a ping every `ping_every`; no pong for `hang_after` → the link ends as unresponsive).
//!
//! Reading and writing run in separate tasks on purpose: a worker that is busy writing to us must
//! never wait for us to finish writing to it (the deadlock a command flood once caused). Every way
//! the link can end is said once, as the last item of [`WorkerLink::recv`]: the socket closed, the
//! worker stopped answering, or it sent a frame that is not a valid message (a protocol error).

use crate::frame::FrameError;
use crate::inference::{FromInference, ToInference};
use crate::training::{FromTraining, ToTraining};
use crate::transport::Connection;
use futures_util::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Commands that can carry a heartbeat, and the events that answer it.
pub trait Heartbeat: Serialize + Send + 'static {
    type Event: DeserializeOwned + Send + 'static;
    fn ping(seq: u64) -> Self;
    fn is_pong(ev: &Self::Event) -> bool;
}

impl Heartbeat for ToInference {
    type Event = FromInference;
    fn ping(seq: u64) -> Self {
        ToInference::Ping { seq }
    }
    fn is_pong(ev: &FromInference) -> bool {
        matches!(ev, FromInference::Pong { .. })
    }
}

impl Heartbeat for ToTraining {
    type Event = FromTraining;
    fn ping(seq: u64) -> Self {
        ToTraining::Ping { seq }
    }
    fn is_pong(ev: &FromTraining) -> bool {
        matches!(ev, FromTraining::Pong { .. })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Commands queued for the worker at most; the queue, not the socket, absorbs bursts.
    pub queue: usize,
    pub ping_every: Duration,
    /// No pong for this long (once the worker has spoken) ends the link as unresponsive.
    pub hang_after: Duration,
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The worker closed its socket (it exited, or is exiting).
    Closed,
    /// No pong within `hang_after`.
    Unresponsive,
    /// A frame that is not a valid message: the worker cannot be trusted to continue.
    ProtocolError(String),
}

/// What [`WorkerLink::recv`] yields.
#[derive(Debug)]
pub enum LinkEvent<E> {
    Event(E),
    /// The last item: the link is over.
    Ended(LinkEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the worker has too many commands in flight")]
    Full,
    #[error("the worker's connection is closed")]
    Closed,
}

/// Where to send a worker its commands (cheap to clone).
#[derive(Debug)]
pub struct LinkSender<C> {
    tx: mpsc::Sender<C>,
}

impl<C> Clone for LinkSender<C> {
    fn clone(&self) -> Self {
        LinkSender {
            tx: self.tx.clone(),
        }
    }
}

impl<C> LinkSender<C> {
    /// Queues a command without waiting.
    pub fn send(&self, c: C) -> Result<(), SendError> {
        self.tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// The metaserver's end of one worker connection.
pub struct WorkerLink<C: Heartbeat> {
    pub sender: LinkSender<C>,
    events: mpsc::Receiver<LinkEvent<C::Event>>,
    /// Set by the reader task when the link ends, whether or not anyone has read that yet.
    ended: Arc<AtomicBool>,
}

impl<C: Heartbeat> WorkerLink<C> {
    /// Starts the reader and writer tasks for an authenticated connection.
    pub fn start(conn: Connection<C::Event, C>, cfg: LinkConfig) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(cfg.queue.max(1));
        let (ev_tx, events) = mpsc::channel(cfg.queue.max(1));
        let (sink, stream) = conn.split();
        tokio::spawn(write_commands(sink, cmd_rx));
        let pings = LinkSender { tx: cmd_tx.clone() };
        let ended = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_events::<C>(stream, pings, ev_tx, cfg, ended.clone()));
        WorkerLink {
            sender: LinkSender { tx: cmd_tx },
            events,
            ended,
        }
    }

    /// True once the link has ended (closed, unresponsive or a protocol error).
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The next event; after [`LinkEvent::Ended`] this never returns.
    pub async fn recv(&mut self) -> LinkEvent<C::Event> {
        match self.events.recv().await {
            Some(ev) => ev,
            // The reader task said `Ended` once, earlier; the link stays ended.
            None => std::future::pending().await,
        }
    }

    /// An event already received, without waiting (`None`: nothing queued, or the link ended).
    pub fn try_recv(&mut self) -> Option<C::Event> {
        match self.events.try_recv() {
            Ok(LinkEvent::Event(e)) => Some(e),
            _ => None,
        }
    }
}

type Sink<C> = futures_util::stream::SplitSink<Connection<<C as Heartbeat>::Event, C>, C>;
type Source<C> = futures_util::stream::SplitStream<Connection<<C as Heartbeat>::Event, C>>;

/// Most commands written with one flush (one system call) when several are waiting.
const WRITE_BATCH: usize = 32;

async fn write_commands<C: Heartbeat>(mut sink: Sink<C>, mut commands: mpsc::Receiver<C>) {
    while let Some(first) = commands.recv().await {
        // Whatever queued meanwhile goes out with it: one flush for the lot.
        let mut next = Some(first);
        let mut n = 0;
        while let Some(c) = next.take() {
            if sink.feed(c).await.is_err() {
                return;
            }
            n += 1;
            if n < WRITE_BATCH {
                next = commands.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
}

async fn read_events<C: Heartbeat>(
    mut stream: Source<C>,
    pings: LinkSender<C>,
    events: mpsc::Sender<LinkEvent<C::Event>>,
    cfg: LinkConfig,
    ended: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(cfg.ping_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // The hang clock starts when the worker first speaks (its `Ready` after loading its runtime);
    // until then the spawn timeout is what bounds it.
    let mut last_heard: Option<Instant> = None;
    let end = loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(ev)) => {
                    last_heard = Some(Instant::now());
                    if C::is_pong(&ev) {
                        continue;
                    }
                    if events.send(LinkEvent::Event(ev)).await.is_err() {
                        break LinkEnd::Closed; // nobody listens any more
                    }
                    // Time spent waiting for our own reader does not count against the worker.
                    last_heard = Some(Instant::now());
                }
                None | Some(Err(FrameError::Io(_))) => break LinkEnd::Closed,
                Some(Err(e)) => break LinkEnd::ProtocolError(e.to_string()),
            },
            _ = tick.tick() => {
                if last_heard.is_some_and(|t| t.elapsed() > cfg.hang_after) {
                    break LinkEnd::Unresponsive;
                }
                seq += 1;
                // A full queue means the worker is not keeping up: no ping now, and the hang
                // clock decides.
                let _ = pings.send(C::ping(seq));
            }
        }
    };
    ended.store(true, Ordering::Release);
    let _ = events.send(LinkEvent::Ended(end)).await;
}
