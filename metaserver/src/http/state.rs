//! What the routes reach: a handle to each part of the server, each owned below.

use crate::cluster::Cluster;
use crate::config::Config;
use crate::guard::Operators;
use crate::session::sessions::Sessions;
use crate::training::history::RandomReference;
use crate::training::hub::TrainingHub;
use crate::training::rooms::Rooms;
use std::sync::Arc;
use std::time::Instant;

pub struct ServerState {
    pub cfg: Arc<Config>,
    pub sessions: Arc<Sessions>,
    /// The room `class` (`/ws/training` without a room).
    pub training: Arc<TrainingHub>,
    /// Every training room, `class` included.
    pub rooms: Arc<Rooms>,
    pub operators: Operators,
    /// This node's link to the cluster (`--store redis://…`); `None` on one machine.
    pub cluster: Option<Arc<Cluster>>,
    pub started: Instant,
    /// How the random policy does (measured once at start, for the learning curves).
    pub random_reference: RandomReference,
}
