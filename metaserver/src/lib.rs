//! The metaserver: one port for browsers, one supervised worker process per session.
//!
//! Code map: [`app`] (state, start, shutdown) · [`http`] (routes) · [`guard`] (who may reach the
//! server and do what: host, origin, operator) · [`drain`] · [`client`]
//! (browser socket I/O and limits) · [`outqueue`] (bounded per-client queue) · [`validate`] (all
//! browser input) · [`session`] (inference relay) · [`sessions`] (live and detached sessions,
//! resume and watch) · [`store`] (durable sessions: `SessionStore`, the directory store) · [`training`] (the shared training run) ·
//! [`history`] (the run's figures for late joiners) · [`pace`] (how fast this machine trains) ·
//! [`supervisor`] (spawn, handshake, ready) · [`process`] (child processes, pidfds, reaping) ·
//! [`registry`] (live workers) · [`budget`] (restart policy) · [`pool`] (warm workers) ·
//! [`metrics`] · [`model_catalog`] (the models offered, read off the runtime) · [`ui`] (embedded browser UI) · [`cluster`] (a node of a cluster: Redis store,
//! heartbeats, shared models, one training run for all nodes).

pub mod app;
pub mod budget;
pub mod client;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod guard;
pub mod history;
pub mod http;
pub mod metrics;
pub mod model_catalog;
pub mod outqueue;
pub mod pace;
pub mod pool;
pub mod process;
pub mod registry;
pub mod session;
pub mod sessions;
pub mod store;
pub mod supervisor;
pub mod training;
pub mod ui;
pub mod validate;
