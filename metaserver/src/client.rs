//! The browser side of a WebSocket: a writer task draining an [`OutQueue`] (with keep-alive pings
//! and a close code), and a reader loop that enforces size, rate and error limits and hands every
//! text message to a validator. Shared by `/ws` and `/ws/training`.

use crate::metrics::Metrics;
use crate::outqueue::{Delivery, OutFrame, OutQueue, Push};
use crate::validate::Rejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ipc_proto::browser::{ErrorCode, ServerMessage};
use parking_lot::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// WebSocket close codes we use.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    /// The server restarts (SIGTERM, drain): reconnect with the resume token.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Another connection took the session over with its token.
    pub const TAKEN_OVER: u16 = 4001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A connected browser: where to send frames, and how to close it.
#[derive(Clone)]
pub struct Client {
    pub out: Arc<OutQueue>,
    close: Arc<Mutex<Option<(u16, String)>>>,
    metrics: Arc<Metrics>,
    /// At most one `state_update` per this period (training viewers, `--viewer-fps`).
    pace: Option<Duration>,
    /// A training viewer's room: every message encoded here says it.
    room: Option<Arc<str>>,
}

impl Client {
    /// Queues a message of the metaserver's own (encoded here); returns false if the client is
    /// hopelessly behind.
    pub fn send(&self, m: &ServerMessage) -> bool {
        self.relay(m, Instant::now())
    }

    /// This client, its messages marked with `room` (a `/ws/training` viewer's).
    pub fn in_room(mut self, room: &str) -> Client {
        self.room = Some(Arc::from(room));
        self
    }

    /// Queues a worker's message that reached the relay at `arrived` (the relay-latency clock
    /// starts there, before encoding).
    pub fn relay(&self, m: &ServerMessage, arrived: Instant) -> bool {
        let text = m.to_json_in(self.room.as_deref());
        self.send_encoded(Utf8Bytes::from(text), Delivery::of(m), arrived)
    }

    /// Queues an already encoded frame (frames are encoded once for every viewer).
    pub fn send_encoded(&self, text: Utf8Bytes, delivery: Delivery, arrived: Instant) -> bool {
        match self.out.push(OutFrame {
            text,
            delivery,
            arrived,
        }) {
            Push::Queued => true,
            Push::DroppedOne => {
                self.metrics.frames_dropped.fetch_add(1, Relaxed);
                true
            }
            Push::Overflow => {
                self.metrics.clients_overflowed.fetch_add(1, Relaxed);
                self.close(
                    close::POLICY,
                    "client too slow: too many undelivered messages",
                );
                false
            }
        }
    }

    /// Closed by us or by the browser going away (nothing more will be written).
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }

    /// Refuses for now: an `error` saying why, then close 1013 (try again later) once written.
    pub fn try_again_later(&self, code: ErrorCode, message: impl Into<String>, reason: &str) {
        self.send(&ServerMessage::error(code, message));
        self.close(close::TRY_AGAIN_LATER, reason);
    }

    /// Closes the connection with a code after the queued frames are written.
    pub fn close(&self, code: u16, reason: &str) {
        let mut c = self.close.lock();
        if c.is_none() {
            *c = Some((code, reason.chars().take(120).collect()));
        }
        drop(c);
        self.out.close();
    }
}

/// Splits a socket: spawns the writer, returns the client handle and the read half. With
/// `max_fps`, the client gets at most that many `state_update`s a second, the newest winning
/// (training viewers); without, every one its queue can hold (an inference session's own frames).
pub fn start(
    socket: WebSocket,
    queue: usize,
    max_fps: Option<f64>,
    metrics: Arc<Metrics>,
) -> (Client, SplitStream<WebSocket>) {
    let (sink, stream) = socket.split();
    let pace = max_fps
        .filter(|f| f.is_finite() && *f > 0.0)
        .map(|f| Duration::from_secs_f64(1.0 / f));
    let client = Client {
        out: Arc::new(OutQueue::new(queue)),
        close: Arc::new(Mutex::new(None)),
        metrics,
        pace,
        room: None,
    };
    tokio::spawn(writer(sink, client.clone()));
    (client, stream)
}

async fn writer(mut sink: SplitSink<WebSocket, Message>, c: Client) {
    // Pings keep idle connections alive through proxies and detect dead peers.
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    ping.tick().await;
    const SEND_TIMEOUT: Duration = Duration::from_secs(10);
    let mut next_frame_at = Instant::now();
    // Reused for every write: the hot path allocates no list of its own.
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            f = next_frame(&c, &mut next_frame_at) => match f {
                Some(f) => {
                    more_frames(&c, f, &mut batch);
                    match tokio::time::timeout(SEND_TIMEOUT, write_batch(&mut sink, &batch)).await {
                        Ok(Ok(())) => {
                            c.metrics.frames_relayed.fetch_add(batch.len() as u64, Relaxed);
                            for f in &batch {
                                c.metrics.observe_relay(f.arrived.elapsed());
                            }
                        }
                        _ => break,
                    }
                }
                None => break,
            },
            _ = ping.tick() => {
                if tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err()) {
                    break;
                }
            }
        }
    }
    let frame = c.close.lock().clone().map(|(code, reason)| CloseFrame {
        code,
        reason: reason.into(),
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(frame))).await;
    let _ = sink.close().await;
}

/// Most frames written with one flush (one system call): enough to empty a burst, few enough that
/// a client's writer does not hold its thread for long.
const WRITE_BATCH: usize = 32;

/// Fills `batch` with `first` and the frames queued behind it, up to [`WRITE_BATCH`]. Paced
/// clients (training viewers) get one frame per turn, as their pace decides.
fn more_frames(c: &Client, first: OutFrame, batch: &mut Vec<OutFrame>) {
    batch.clear();
    batch.push(first);
    while c.pace.is_none() && batch.len() < WRITE_BATCH {
        match c.out.try_pop() {
            Some(f) => batch.push(f),
            None => break,
        }
    }
}

/// Queues every frame of `batch` in the WebSocket's buffer, then flushes once.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &[OutFrame],
) -> Result<(), axum::Error> {
    for f in batch {
        sink.feed(Message::Text(f.text.clone())).await?;
    }
    sink.flush().await
}

/// The next frame to write; for a paced client, a `state_update` waits for its turn (meanwhile a
/// newer one may replace it). Cancel-safe: a frame leaves the queue only when it is returned.
async fn next_frame(c: &Client, next_at: &mut Instant) -> Option<OutFrame> {
    let Some(period) = c.pace else {
        return c.out.pop().await;
    };
    loop {
        if !c.out.ready().await {
            return None;
        }
        if c.out.front_is_droppable() && Instant::now() < *next_at {
            tokio::time::sleep_until((*next_at).into()).await;
            continue;
        }
        if let Some(f) = c.out.try_pop() {
            if f.droppable() {
                *next_at = Instant::now() + period;
            }
            return Some(f);
        }
    }
}

/// What the reader hands on.
pub enum Incoming<T> {
    Valid(T),
    /// The client went away (or was closed).
    Gone,
}

/// A token bucket: `rate` messages a second, bursts of twice that.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    last_warning: Option<Instant>,
}

impl RateLimit {
    fn new(rate: f64) -> Self {
        let burst = (rate * 2.0).max(1.0);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            last_warning: None,
        }
    }

    /// Takes a token; false when the client is over its rate.
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Whether to tell the client it is being limited (at most once a second).
    fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        let warn = self
            .last_warning
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1));
        if warn {
            self.last_warning = Some(now);
        }
        warn
    }
}

/// A client that sends only garbage is closed after this many rejected messages.
const MAX_ERRORS: u32 = 100;

/// What to do with one WebSocket message: its text, or skip it, or stop reading.
enum Read {
    Text(Utf8Bytes),
    Skip,
    Stop,
}

/// Sorts one incoming WebSocket message; binary frames and oversize messages are answered here.
fn classify(msg: Result<Message, axum::Error>, client: &Client, errors: &mut u32) -> Read {
    match msg {
        Ok(Message::Text(t)) => Read::Text(t),
        Ok(Message::Binary(_)) => {
            let e = ServerMessage::error(
                ErrorCode::BinaryFrame,
                "binary frames are not supported; send JSON text",
            );
            if reject(client, &e, errors) {
                Read::Skip
            } else {
                Read::Stop
            }
        }
        Ok(Message::Close(_)) => Read::Stop,
        Ok(_) => Read::Skip, // ping/pong are handled by the library
        Err(e) => {
            // Over --max-frame-bytes: tungstenite refuses it with a capacity error → 1009.
            let inner = e.into_inner();
            if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
                inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
            {
                client.close(close::TOO_BIG, "message too big");
            }
            Read::Stop
        }
    }
}

/// Answers a rejected message; false (and the connection closed with 1008) after too many.
fn reject(client: &Client, answer: &ServerMessage, errors: &mut u32) -> bool {
    *errors += 1;
    client.metrics.client_errors.fetch_add(1, Relaxed);
    client.send(answer);
    if *errors > MAX_ERRORS {
        client.close(close::POLICY, "too many invalid messages");
        return false;
    }
    true
}

/// Reads browser messages, validating each with `parse`; errors are answered on `client` directly.
/// Returns when the client disconnects or is closed for a policy violation — and then closes the
/// client, so its writer (and its buffers) end now, not when a keep-alive ping finally fails.
pub async fn read_loop<T: Send + 'static>(
    mut stream: SplitStream<WebSocket>,
    client: Client,
    rate_per_sec: f64,
    tx: mpsc::Sender<Incoming<T>>,
    parse: impl Fn(&str) -> Result<T, Rejection>,
) {
    let mut limit = RateLimit::new(rate_per_sec);
    let mut errors = 0u32;
    while let Some(msg) = stream.next().await {
        let text = match classify(msg, &client, &mut errors) {
            Read::Text(t) => t,
            Read::Skip => continue,
            Read::Stop => break,
        };
        if !limit.admit() {
            if limit.should_warn() {
                client.send(&ServerMessage::error(
                    ErrorCode::RateLimited,
                    "too many messages: slow down (excess messages are ignored)",
                ));
            }
            continue;
        }
        match parse(&text) {
            Ok(v) => {
                if tx.send(Incoming::Valid(v)).await.is_err() {
                    break;
                }
            }
            Err(rej) => {
                if !reject(&client, &rej.to_message(), &mut errors) {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Incoming::Gone).await;
    // The first close wins: a code set earlier (a policy violation, a takeover) is kept.
    client.close(close::GOING_AWAY, "connection closed");
}
