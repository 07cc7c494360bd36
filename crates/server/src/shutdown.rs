//! The server's shutdown as every part sees it, in two phases.
//!
//! **Draining** starts with SIGTERM (or Ctrl-C): no new connections, new renders are
//! answered 503 `shutting_down` with `Retry-After`, event streams send a final
//! `shutdown` event and end, running edits go back to the queue. Renders already
//! queued are still made. **Expired** comes `shutdown_grace_secs` later: renders still
//! running stop at their next step and, like those still queued, answer 503.

use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// Shared by the state, the generation thread and the serve loop.
#[derive(Debug)]
pub struct Shutdown {
    draining: watch::Sender<bool>,
    expired: AtomicBool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            draining: watch::Sender::new(false),
            expired: AtomicBool::new(false),
        }
    }
}

impl Shutdown {
    /// Starts draining (idempotent).
    pub fn begin(&self) {
        self.draining.send_replace(true);
    }

    /// The grace period is over: unfinished renders stop.
    pub fn expire(&self) {
        self.begin();
        self.expired.store(true, Ordering::SeqCst);
    }

    /// True once draining has started.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// True once the grace period is over.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// Resolves when draining starts (at once if it has).
    pub async fn draining(&self) {
        let mut receiver = self.draining.subscribe();
        // The sender lives in `self`, so the wait cannot fail while we borrow it.
        let _ = receiver.wait_for(|&draining| draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_wakes_waiters_and_expiry_implies_draining() {
        let shutdown = std::sync::Arc::new(Shutdown::default());
        assert!(!shutdown.is_draining() && !shutdown.is_expired());
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.draining().await }
        });
        shutdown.expire();
        waiter.await.unwrap();
        assert!(shutdown.is_draining() && shutdown.is_expired());
        // Already draining: resolves at once.
        shutdown.draining().await;
    }
}
