//! This process as a replica: its identity, and the task that reports it to the store
//! every `replica_heartbeat_secs`, so that the operations view of any replica lists
//! every live one with what it is doing.

use crate::backend::ModelBackend;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use refact_store::ReplicaReport;
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// Who this process is.
#[derive(Debug, Clone)]
pub struct ReplicaIdentity {
    /// `host-pid-random`, unique across restarts.
    pub id: String,
    pub started_at: DateTime<Utc>,
}

impl ReplicaIdentity {
    pub fn new() -> Self {
        ReplicaIdentity {
            id: unique_process_name(),
            started_at: Utc::now(),
        }
    }
}

/// `host-pid-random`: names this process (its replica row, its workers' leases) so that
/// no other process, and no restart of this one, uses the same name.
pub fn unique_process_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

impl Default for ReplicaIdentity {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes this replica's row now and then every period until `shutdown`, then removes
/// it (a replica that crashes simply stops being seen).
pub async fn report_until_stopped<B: ModelBackend>(
    state: AppState<B>,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(state.settings.replica_heartbeat_secs);
    loop {
        report_once(&state).await;
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    if let Err(err) = state.store.forget_replica(&state.replica.id).await {
        tracing::debug!(error = %err, "replica row not removed");
    }
}

/// One heartbeat; a failure is logged (the database may be down: the row ages, and the
/// replica shows as unseen until it is back).
pub async fn report_once<B: ModelBackend>(state: &AppState<B>) {
    let status = json!({
        "generate_queue": state.generator.depth(),
        "running_edits": state.running.ids(),
        "versions_loaded": state.versions.len(),
        "draining": state.shutdown.is_draining(),
        "last_hour": crate::activity::last_hour(),
    });
    let report = ReplicaReport {
        id: &state.replica.id,
        started_at: state.replica.started_at,
        model: &state.backend.summary().source,
        worker: state.settings.worker.enabled,
        status: &status,
    };
    if let Err(err) = state.store.report_replica(&report).await {
        tracing::warn!(error = %err, "replica heartbeat not written");
    }
}
