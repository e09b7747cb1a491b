//! `worker-training`: the DQN learning core ([`nn`], [`replay`], [`dqn`]), model export
//! ([`export`]) and checkpoints ([`checkpoint`]), plus the live training worker ([`worker`]).

pub mod checkpoint;
pub mod dqn;
pub mod export;
pub mod nn;
pub mod offline;
pub mod replay;
pub mod worker;
