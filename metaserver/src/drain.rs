//! Draining (`POST /api/drain`, sessions.md): no new sessions here, every session put away and
//! its browsers told to reconnect (1012), HTTP still served — and `POST /api/undrain` to take
//! sessions again. A cancellation token cannot be un-cancelled, so undraining starts a fresh one:
//! each session watches the token that was current when it started.

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Drain {
    current: Mutex<CancellationToken>,
}

impl Drain {
    /// What a session starting now watches: cancelled when a drain begins.
    pub fn token(&self) -> CancellationToken {
        self.current.lock().clone()
    }

    pub fn is_draining(&self) -> bool {
        self.current.lock().is_cancelled()
    }

    /// Begins a drain; false if one was already under way.
    pub fn start(&self) -> bool {
        let t = self.current.lock();
        let was = t.is_cancelled();
        t.cancel();
        !was
    }

    /// Takes sessions again; false if the server was not draining.
    pub fn stop(&self) -> bool {
        let mut t = self.current.lock();
        if !t.is_cancelled() {
            return false;
        }
        *t = CancellationToken::new();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_cancels_what_sessions_watch_and_undraining_starts_afresh() {
        let d = Drain::default();
        let before = d.token();
        assert!(!d.is_draining() && !d.stop());
        assert!(d.start() && !d.start());
        assert!(before.is_cancelled() && d.is_draining());
        assert!(d.stop());
        assert!(!d.is_draining() && !d.token().is_cancelled());
        assert!(before.is_cancelled(), "sessions of the drain stay drained");
    }
}
