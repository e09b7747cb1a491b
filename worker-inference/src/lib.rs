//! `worker-inference`: one browser session per process — a world, an ONNX policy and playback.
//!
//! - [`policy`]: ONNX Runtime via `ort`, model checks, greedy action.
//! - [`session`]: the session rules of protocol.md, as pure state transitions.
//! - [`runner`]: the process loop (socket, clock, signals).

pub mod policy;
pub mod runner;
pub mod session;
