//! The HTTP side: [`routes`] (the router, the two WebSocket upgrades and the root), [`api`] (status,
//! models, the training form and history, readiness), [`operator`] (what operators may ask),
//! [`ui`] (the embedded browser UI), all reaching the server through [`state`].

pub mod api;
pub mod operator;
pub mod routes;
pub mod state;
pub mod ui;
