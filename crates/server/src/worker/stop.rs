//! Stopping a running edit from outside: a flag the optimisation checks every iteration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Why a running edit should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `DELETE /edits/{id}` (here or, seen through the heartbeat, on another replica).
    Cancel,
    /// The lease went to another worker: this one must not write anything more.
    LeaseLost,
    /// The server is shutting down; the edit goes back to the queue.
    Shutdown,
}

/// A one-way flag: the first reason set wins.
#[derive(Debug, Default)]
pub struct StopSignal(AtomicU8);

impl StopSignal {
    /// Asks the edit to stop; a reason already set is kept.
    pub fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Cancel => 1,
            StopReason::LeaseLost => 2,
            StopReason::Shutdown => 3,
        };
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The reason to stop, if any.
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Cancel),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            _ => None,
        }
    }
}

/// The stop signals of the edits running in this process, by edit id.
#[derive(Debug, Default)]
pub struct RunningEdits {
    signals: Mutex<HashMap<Uuid, Arc<StopSignal>>>,
}

impl RunningEdits {
    /// Registers an edit that starts running here and returns its signal.
    pub fn start(&self, id: Uuid) -> Arc<StopSignal> {
        let signal = Arc::new(StopSignal::default());
        self.lock().insert(id, signal.clone());
        signal
    }

    /// Forgets an edit that stopped running.
    pub fn finish(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    /// Stops an edit if it runs in this process; returns whether it did.
    pub fn stop(&self, id: Uuid, reason: StopReason) -> bool {
        match self.lock().get(&id) {
            Some(signal) => {
                signal.stop(reason);
                true
            }
            None => false,
        }
    }

    /// The edits running here now.
    pub fn ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    /// Stops every edit running here (shutdown).
    pub fn stop_all(&self, reason: StopReason) {
        for signal in self.lock().values() {
            signal.stop(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<StopSignal>>> {
        self.signals.lock().expect("running edits poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins() {
        let signal = StopSignal::default();
        assert_eq!(signal.reason(), None);
        signal.stop(StopReason::Cancel);
        signal.stop(StopReason::Shutdown);
        assert_eq!(signal.reason(), Some(StopReason::Cancel));
    }

    #[test]
    fn only_registered_edits_can_be_stopped() {
        let running = RunningEdits::default();
        let id = Uuid::new_v4();
        assert!(!running.stop(id, StopReason::Cancel));
        let signal = running.start(id);
        assert!(running.stop(id, StopReason::Cancel));
        assert_eq!(signal.reason(), Some(StopReason::Cancel));
        running.finish(id);
        assert!(!running.stop(id, StopReason::Cancel));
    }
}
