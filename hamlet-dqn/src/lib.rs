//! `hamlet-dqn`: the DQN of world.md, as a library that knows nothing of sockets, runtimes or
//! command lines — the live training worker and the offline trainer both drive it.
//!
//! - [`nn`]: dense layers on `matrixmultiply`'s sgemm, the two architectures, backward, Adam.
//! - [`replay`]: the replay buffer in preallocated arrays.
//! - [`dqn`]: the [`dqn::Trainer`] (ε-greedy, target network, updates), deterministic under a seed.
//! - [`export`]: the network as an ONNX model with Hamlet's metadata.
//! - [`checkpoint`]: the whole trainer state, written atomically, checked on load.

pub mod checkpoint;
pub mod dqn;
pub mod export;
pub mod nn;
pub mod replay;
