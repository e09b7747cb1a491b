//! Watching a session across nodes (cluster.md "Watching across nodes"): placeholder until the
//! relay lands.

use crate::app::App;
use crate::client::Client;
use crate::sessions::Watching;
use crate::store::StoredSession;
use std::sync::Arc;

pub async fn watch_remote(_app: &Arc<App>, _client: Client, _s: StoredSession) -> Option<Watching> {
    None
}
