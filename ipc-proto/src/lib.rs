//! `ipc-proto`: the one definition of everything that crosses a process boundary.
//!
//! Message types (no runtime needed; `hamlet-dqn` uses them without the `link` feature):
//! - [`handshake`]: the worker's first frame (protocol version, kind, pid, one-time token).
//! - [`inference`] / [`training`]: metaserver ⇄ worker commands and events.
//! - [`browser`]: the browser-facing JSON messages of `protocol.md`, shared by every process.
//! - [`wire`]: the `state_update` payload (grid, agents, affordances, meters).
//! - [`env`]: the environment a worker is started with.
//! - [`names`]: what a model name from a client may look like.
//!
//! With the `link` feature (default), the socket side:
//! - [`frame`]: the one framing (u32 big-endian length + MessagePack), a `tokio_util` codec.
//! - [`stream`]: the socket under every connection, woken only for what it waits for.
//! - [`transport`]: framed connections over local sockets and the handshake on both sides.
//! - [`link`]: the metaserver's end of a worker connection (queue, reader, heartbeat).

pub mod browser;
pub mod env;
pub mod handshake;
pub mod inference;
pub mod names;
pub mod training;
pub mod wire;

#[cfg(feature = "link")]
pub mod frame;
#[cfg(feature = "link")]
pub mod link;
#[cfg(feature = "link")]
pub mod stream;
#[cfg(feature = "link")]
pub mod transport;

pub use env::*;
#[cfg(feature = "link")]
pub use frame::{FrameError, DEFAULT_MAX_FRAME};
pub use handshake::{Hello, HelloReply, WorkerKind, PROTOCOL_VERSION};
