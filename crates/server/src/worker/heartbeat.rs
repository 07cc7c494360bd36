//! Keeps a claimed edit's lease alive while it runs, and relays what the store says back.

use super::stop::{StopReason, StopSignal};
use crate::backend::EditProgress;
use refact_store::{LeaseState, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The latest iteration of the running edit, stored with each heartbeat.
pub type ProgressSlot = Arc<Mutex<Option<EditProgress>>>;

/// Renews the lease every `period` until aborted. A lost lease or a cancel requested
/// elsewhere sets `signal`; store errors are logged and retried (if they last, the lease
/// lapses and the commit is refused, so nothing is written twice).
pub fn spawn(
    store: Arc<Store>,
    id: Uuid,
    worker_id: String,
    lease: Duration,
    period: Duration,
    progress: ProgressSlot,
    signal: Arc<StopSignal>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the claim just set the lease
        loop {
            ticker.tick().await;
            let latest = *progress.lock().expect("progress slot poisoned");
            let progress_json = latest.and_then(|p| serde_json::to_value(p).ok());
            match store.heartbeat(id, &worker_id, lease, progress_json).await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::CancelRequested) => signal.stop(StopReason::Cancel),
                Ok(LeaseState::Lost) => {
                    tracing::warn!(edit = %id, "lease lost; stopping");
                    signal.stop(StopReason::LeaseLost);
                    return;
                }
                Err(err) => tracing::warn!(edit = %id, error = %err, "heartbeat failed"),
            }
        }
    })
}
