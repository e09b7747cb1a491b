//! The `state_update` payload of `protocol.md`, identical in inference and training. Its types are
//! the world's view, defined once in `hamlet-env` (which needs no sockets or runtime) and re-exported
//! here so every process names them through the protocol crate.

pub use hamlet_env::wire::{
    Activations, AffordanceView, AgentMeters, AgentPos, AgentView, GridView, StateUpdate, StepInfo,
    WireMeters,
};
