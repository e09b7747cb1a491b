//! Inference sessions (`/ws`, sessions.md): each browser's private world and agent in a worker
//! process of its own, surviving its worker, its connection and this server.
//!
//! Reading order: [`connection`] (a `/ws` connection finds its session; [`fork`] starts one from another's) → [`registry`] (the live
//! sessions and the claim rule) → [`task`] (one session's life) with [`browsers`], [`worker`],
//! [`pacer`] and [`persist`] (what the task does with its browsers, its worker process, the steps
//! the worker computed ahead and the store) →
//! [`store`] and [`dir_store`] (where sessions outlive their connection; [`slot_file`] the
//! directory store's two copies of each; [`store_writer`] how live sessions write to it).
//! [`lookup`] finds sessions in the store; [`sessions`] holds the
//! handles they share; [`identity`] who a session is; [`watcher_view`] a stored session as a
//! watcher first sees it; [`elsewhere`] watching across a cluster's nodes (implemented there).

pub mod browsers;
pub mod connection;
pub mod dir_store;
pub mod elsewhere;
pub mod fork;
pub mod identity;
pub mod lookup;
pub mod pacer;
pub mod persist;
pub mod registry;
pub mod sessions;
mod slot_file;
pub mod store;
pub mod store_writer;
pub mod task;
pub mod watcher_view;
pub mod worker;
