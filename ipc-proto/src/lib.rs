//! `ipc-proto`: the one definition of everything that crosses a process boundary.
//!
//! - [`frame`]: u32 big-endian length + MessagePack body, size-checked before allocating.
//! - [`transport`]: async frame I/O over local (Unix domain) sockets.
//! - [`handshake`]: the worker's first frame (protocol version, kind, pid, one-time token).
//! - [`inference`] / [`training`]: metaserver ⇄ worker commands and events.
//! - [`browser`]: the browser-facing JSON messages of `protocol.md`, shared by every process.
//! - [`wire`]: the `state_update` payload (grid, agents, affordances, meters).

pub mod browser;
pub mod frame;
pub mod handshake;
pub mod inference;
pub mod logging;
pub mod training;
pub mod transport;
pub mod wire;

pub use frame::{FrameError, DEFAULT_MAX_FRAME};
pub use handshake::{Hello, HelloReply, WorkerKind, PROTOCOL_VERSION};

/// Environment variable through which the metaserver hands a worker its socket path.
pub const ENV_SOCKET: &str = "HAMLET_SOCKET";
/// Environment variable carrying the one-time handshake token.
pub const ENV_TOKEN: &str = "HAMLET_TOKEN";
/// Environment variable naming the worker (for logs only; identity is the token).
pub const ENV_WORKER_ID: &str = "HAMLET_WORKER_ID";
/// Environment variable with the path of ONNX Runtime's shared library.
pub const ENV_ORT_LIB: &str = "HAMLET_ORT_LIB";
/// Environment variable with the models directory.
pub const ENV_MODELS_DIR: &str = "HAMLET_MODELS_DIR";
