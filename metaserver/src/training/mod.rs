//! `/ws/training`: a DQN run in one `worker-training` process, watched by every viewer of its
//! room — the room `class` for clients of the original, any other by `?room=NAME` ([`rooms`]).
//!
//! Reading order: [`viewer`] (a viewer's socket) → [`hub`] (the handle: state, viewers,
//! broadcast) → [`actor`] (the task that owns the worker and takes commands in order) with
//! [`events`] (the worker's events, mirrored and relayed), [`control`] (who may start and control
//! the run) and [`worker`] (spawning, replacing, retiring) → [`run_file`] (a run outliving this
//! server) → [`cluster`] and [`relay`] (the run shared by a cluster's nodes). [`state`] holds the
//! hub's data, [`history`] and [`pace`] the run's figures; `crate::resumable` is what another
//! server needs to continue a run.

pub mod actor;
pub mod cluster;
pub mod control;
pub mod events;
pub mod forward;
pub mod history;
pub mod hub;
pub mod pace;
pub mod relay;
pub mod rooms;
pub mod run_file;
pub mod runs;
pub mod slots;
pub mod snapshots;
pub mod state;
pub mod viewer;
pub mod worker;
