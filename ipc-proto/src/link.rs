//! The metaserver's end of a worker connection, written once for both worker kinds: a bounded
//! command queue drained by a writer task, a reader task that forwards the worker's events, and the
//! heartbeat (a ping every `ping_every`; no frame from the worker for the `hang_after / ping_every`
//! heartbeats in a row → the link ends as unresponsive).
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
    /// Silence for this long (once the worker has spoken) ends the link as unresponsive: as many
    /// heartbeats in a row without a frame from the worker as `ping_every` fits into it.
    pub hang_after: Duration,
}

/// How many heartbeats in a row a worker may let pass without a word.
fn missed_heartbeat_limit(cfg: &LinkConfig) -> u32 {
    let per = cfg.ping_every.as_nanos().max(1);
    (cfg.hang_after.as_nanos().div_ceil(per) as u32).max(1)
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEnd {
    /// The worker closed its socket (it exited, or is exiting).
    Closed,
    /// No frame for `hang_after` (counted in heartbeats).
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
    let missed_limit = missed_heartbeat_limit(&cfg);
    // Heartbeats the worker has let pass without a word, counted by our own clock's ticks rather
    // than by wall time: a metaserver too busy to run this task (a loaded machine) must not take
    // its own silence for the worker's. Counting starts when the worker first speaks (its `Ready`
    // after loading its runtime); until then the spawn timeout is what bounds it.
    let mut missed: Option<u32> = None;
    let end = loop {
        tokio::select! {
            // Frames that arrived while this task waited are read before the clock is consulted.
            biased;
            frame = stream.next() => match frame {
                Some(Ok(ev)) => {
                    missed = Some(0);
                    if C::is_pong(&ev) {
                        continue;
                    }
                    if events.send(LinkEvent::Event(ev)).await.is_err() {
                        break LinkEnd::Closed; // nobody listens any more
                    }
                }
                None | Some(Err(FrameError::Io(_))) => break LinkEnd::Closed,
                Some(Err(e)) => break LinkEnd::ProtocolError(e.to_string()),
            },
            _ = tick.tick() => {
                if let Some(m) = missed.as_mut() {
                    *m += 1;
                    if *m > missed_limit {
                        break LinkEnd::Unresponsive;
                    }
                }
                seq += 1;
                // A full queue means the worker is not keeping up: no ping now, and the count
                // decides.
                let _ = pings.send(C::ping(seq));
            }
        }
    };
    ended.store(true, Ordering::Release);
    let _ = events.send(LinkEvent::Ended(end)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MsgCodec;
    use crate::transport;
    use std::time::Instant;
    use tokio_util::codec::Framed;

    type WorkerSide = Connection<ToInference, FromInference>;

    const CFG: LinkConfig = LinkConfig {
        queue: 8,
        ping_every: Duration::from_millis(20),
        hang_after: Duration::from_millis(100),
    };

    /// A link over a real socket whose worker has spoken (its `Ready`, which starts the hang
    /// count), and the worker's end of it (which never answers a ping).
    async fn linked(tag: &str) -> (WorkerLink<ToInference>, WorkerSide) {
        let dir = std::env::temp_dir().join(format!("link-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let listener = transport::bind(&path).unwrap();
        let (ours, theirs) = tokio::join!(transport::accept(&listener), transport::connect(&path));
        let _ = std::fs::remove_dir_all(&dir);
        let mut link = WorkerLink::start(Framed::new(ours.unwrap(), MsgCodec::new(1 << 16)), CFG);
        let mut worker = Framed::new(theirs.unwrap(), MsgCodec::new(1 << 16));
        worker.send(FromInference::Ready).await.unwrap();
        assert!(matches!(
            next_event(&mut link).await,
            LinkEvent::Event(FromInference::Ready)
        ));
        (link, worker)
    }

    async fn next_event(link: &mut WorkerLink<ToInference>) -> LinkEvent<FromInference> {
        tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .expect("the link said something")
    }

    /// A metaserver too busy to run the link's task (here: its only thread blocked) is no reason
    /// to call the worker hung: what the worker sent meanwhile is read first, and the heartbeats
    /// the metaserver did not send were not missed.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stalled_metaserver_does_not_call_a_live_worker_hung() {
        let (mut link, mut worker) = linked("stall").await;
        for _ in 0..5 {
            std::thread::sleep(CFG.hang_after * 3); // the whole runtime stands still
            worker.send(FromInference::Ready).await.unwrap();
            match next_event(&mut link).await {
                LinkEvent::Event(FromInference::Ready) => {}
                other => panic!("after a stall of the metaserver: {other:?}"),
            }
        }
    }

    /// A worker that stops talking is unresponsive after `hang_after`, not before.
    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_worker_is_unresponsive_after_hang_after() {
        let (mut link, _worker) = linked("silent").await; // kept open, silent
        let t = Instant::now();
        match next_event(&mut link).await {
            LinkEvent::Ended(LinkEnd::Unresponsive) => {}
            other => panic!("a silent worker: {other:?}"),
        }
        let waited = t.elapsed();
        assert!(waited >= CFG.hang_after, "declared hung after {waited:?}");
        assert!(
            waited < CFG.hang_after + 5 * CFG.ping_every,
            "declared hung only after {waited:?}"
        );
    }

    #[test]
    fn the_missed_heartbeat_limit_covers_hang_after() {
        let cfg = |ping, hang| LinkConfig {
            queue: 1,
            ping_every: Duration::from_millis(ping),
            hang_after: Duration::from_millis(hang),
        };
        assert_eq!(missed_heartbeat_limit(&cfg(1000, 5000)), 5);
        assert_eq!(missed_heartbeat_limit(&cfg(1000, 5500)), 6);
        assert_eq!(missed_heartbeat_limit(&cfg(1000, 10)), 1);
    }
}
