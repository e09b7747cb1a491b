//! The metaserver: one port for browsers, one supervised worker process per session, one shared
//! training run. ARCHITECTURE.md has the code map and a reading path; in short, from the top:
//!
//! - [`server`] starts the parts and stops them; [`http`] is every route;
//! - [`session`] is `/ws` (each browser's session and its worker), [`training`] is
//!   `/ws/training` (the shared run and its worker), [`cluster`] is a node's part in a cluster
//!   (Redis store, shared models, watching across nodes, one run for all nodes);
//! - [`workers`] spawns, supervises and replaces worker processes;
//! - below them: [`client`] (a browser's socket and its limits) with [`outqueue`] (its bounded
//!   queue), [`validate`] (all browser input), [`guard`] (who may reach the server and do what),
//!   [`drain`], [`model_catalog`] (the models offered), [`metrics`], [`resumable`] (a run
//!   another server can continue), [`tokens`] (secrets and their hashes), [`clock`], [`config`].

pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod model_catalog;
pub mod outqueue;
pub mod resumable;
pub mod server;
pub mod session;
pub mod tokens;
pub mod training;
pub mod validate;
pub mod workers;
