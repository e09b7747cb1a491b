//! `worker-inference`: one browser session per process — a world, an ONNX policy and playback.
//!
//! - [`policy`]: ONNX Runtime via `ort`, model checks, greedy action.
//! - [`session`]: the session rules of protocol.md, as pure state transitions.
//! - [`ahead`]: a playing session's steps, computed in batches for the metaserver to pace out.
//! - [`runner`]: the process loop (socket, signals).
//! - [`profile`]: where a step's CPU goes, for `scripts/bench scale`.

pub mod ahead;
pub mod policy;
pub mod profile;
pub mod runner;
pub mod session;
