//! `worker-inference`: one browser session per process — a world, an ONNX policy and playback.
//!
//! - [`policy`]: ONNX Runtime via `ort`, model checks, greedy action.
//! - [`session`]: the session rules of protocol.md, as pure state transitions.
//! - [`runner`]: the process loop (socket, clocks, signals) and the steps computed ahead.
//! - [`clock`]: the step clock, a periodic `timerfd`.
//! - [`profile`]: where a paced step's CPU goes, for `scripts/bench scale`.

pub mod clock;
pub mod policy;
pub mod profile;
pub mod runner;
pub mod session;
