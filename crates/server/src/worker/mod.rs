//! The edit worker: claims queued edits from the store and runs them one at a time.
//!
//! For each claimed edit: renew the lease in the background, compute the edit against the
//! current head (on a blocking thread), measure its quality gate if the request has one,
//! commit it (with the gate's verdict) only if the head is still its parent
//! (otherwise recompute on the new head), and stream every iteration to subscribers.
//! An edit whose head moved more than `head_moves_before_turn` times asks for the
//! head's next turn, so that commits go in queue order and no edit starves. A cancel
//! or a lost lease stops the computation within one iteration; a shutdown hands the
//! edit back to the queue without spending its attempt. Errors that could pass (I/O,
//! device) go back to the queue until the edit's attempts are spent; errors that would
//! repeat (invalid request, non-finite optimisation) fail the edit at once.

mod heartbeat;
mod stop;
#[cfg(test)]
mod tests;

pub use stop::{RunningEdits, StopReason, StopSignal};

use crate::backend::{ComputedEdit, EditProgress, ModelBackend};
use crate::error::ApiError;
use crate::events::{EditEvent, StatusEvent};
use crate::gate::{split_submission, verdict, GateMeasurement, GateRequest};
use crate::metrics as m;
use crate::state::AppState;
use heartbeat::ProgressSlot;
use refact_engine::EngineError;
use refact_store::{CommitDelta, CommitOutcome, Edit};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// How often an edit waiting for the head's turn looks whether it has come.
const TURN_POLL: Duration = Duration::from_millis(250);

/// Pauses between store calls retried through a database outage.
const OUTAGE_RETRY_FIRST: Duration = Duration::from_millis(200);
const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// How one claimed edit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Committed as this version.
    Applied {
        version: i64,
    },
    Cancelled,
    /// Failed for good.
    Failed {
        error: String,
    },
    /// Failed this attempt; back in the queue.
    Retrying {
        error: String,
    },
    /// Another worker holds the edit now; nothing was written.
    LeaseLost,
    /// The server is stopping; the edit went back to the queue, its attempt not counted.
    Interrupted,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed { .. } => "failed",
            Outcome::Retrying { .. } => "retry",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One worker; `worker_id` names it in the store's leases.
pub struct EditWorker<B: ModelBackend> {
    state: AppState<B>,
    worker_id: String,
}

impl<B: ModelBackend> EditWorker<B> {
    /// A worker with a fresh id (host, process, random suffix: unique across restarts).
    pub fn new(state: AppState<B>) -> Self {
        EditWorker {
            state,
            worker_id: crate::replicas::unique_process_name(),
        }
    }

    /// The id this worker claims edits under.
    pub fn id(&self) -> &str {
        &self.worker_id
    }

    /// Claims and runs one edit, if one is claimable. Tests call this to drain the
    /// queue without timers.
    pub async fn try_execute_one(&self) -> Result<Option<(Uuid, Outcome)>, ApiError> {
        let settings = &self.state.settings.worker;
        let Some(edit) = self
            .state
            .store
            .claim_next_edit(&self.worker_id, settings.lease())
            .await?
        else {
            return Ok(None);
        };
        let id = edit.id;
        tracing::info!(edit = %id, attempt = edit.attempts, "edit claimed");
        self.state
            .events
            .publish(id, EditEvent::Status(StatusEvent::of(&edit)));

        let started = Instant::now();
        let signal = self.state.running.start(id);
        let progress: ProgressSlot = Arc::new(Mutex::new(None));
        let beat = heartbeat::spawn(
            self.state.store.clone(),
            id,
            self.worker_id.clone(),
            settings.lease(),
            settings.heartbeat(),
            progress.clone(),
            signal.clone(),
        );
        let result = self.execute(&edit, &signal, &progress).await;
        beat.abort();
        self.state.running.finish(id);

        let outcome = match result {
            Ok(outcome) => outcome,
            // The store failed while finishing: the lease will lapse and the edit rerun.
            Err(err) => {
                tracing::error!(edit = %id, error = %err, "edit attempt aborted");
                Outcome::Retrying {
                    error: err.to_string(),
                }
            }
        };
        m::record_edit(started.elapsed(), outcome.label());
        tracing::info!(edit = %id, outcome = ?outcome, elapsed = ?started.elapsed(), "edit attempt finished");
        if let Ok(Some(edit)) = self.state.store.get_edit(id).await {
            self.state
                .events
                .publish(id, EditEvent::Status(StatusEvent::of(&edit)));
            self.announce(&edit, &outcome).await;
        }
        Ok(Some((id, outcome)))
    }

    /// Sends `edit.applied` or `edit.failed` to the webhooks (other outcomes are not
    /// final, or were asked for).
    async fn announce(&self, edit: &Edit, outcome: &Outcome) {
        let event = match outcome {
            Outcome::Applied { .. } => crate::webhooks::EDIT_APPLIED,
            Outcome::Failed { .. } => crate::webhooks::EDIT_FAILED,
            _ => return,
        };
        let data = serde_json::json!({
            "edit_id": edit.id,
            "status": edit.status.as_str(),
            "version": edit.version,
            "error": edit.error,
            "created_by": edit.created_by,
            "request": edit.request,
            "finished_at": edit.finished_at,
        });
        self.state.webhooks.emit(event, data).await;
    }

    /// Runs until `shutdown` turns true: executes edits while there are any, otherwise
    /// waits for the store's wake-up or the poll interval.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let poll = self.state.settings.worker.poll_interval();
        tracing::info!(worker = %self.worker_id, "edit worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let idle = match self.try_execute_one().await {
                Ok(Some(_)) => continue,
                Ok(None) => false,
                Err(err) => {
                    tracing::error!(error = %err, "edit worker failed to claim");
                    true
                }
            };
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.state.store.wait_for_work(poll), if !idle => {}
                _ = tokio::time::sleep(poll), if idle => {}
            }
        }
        tracing::info!(worker = %self.worker_id, "edit worker stopped");
    }

    async fn execute(
        &self,
        edit: &Edit,
        signal: &Arc<StopSignal>,
        progress: &ProgressSlot,
    ) -> Result<Outcome, ApiError> {
        let store = &self.state.store;
        let (request, gate) = match split_submission::<B::EditRequest>(edit.request.clone()) {
            Ok(parts) => parts,
            Err(err) => {
                return self
                    .fail(edit.id, format!("stored request unreadable: {err}"), false)
                    .await
            }
        };
        if let Err(err) = self.state.backend.validate_edit(&request) {
            return self.fail(edit.id, err.to_string(), false).await;
        }
        let moves_before_turn = self.state.settings.worker.head_moves_before_turn;
        let mut head_moves = 0u32;
        'compute: loop {
            let head = self
                .patiently(signal, || async { Ok(store.head().await?.number) })
                .await?;
            let parent = self
                .patiently(signal, || self.state.version_deltas(head))
                .await?
                .ok_or_else(|| {
                    ApiError::Internal(format!("head version {head} cannot be loaded"))
                })?;
            let computed = self
                .compute(edit.id, request.clone(), parent.clone(), signal, progress)
                .await;
            let computed = match computed {
                Ok(computed) => computed,
                Err(err) => return self.after_error(edit.id, err, signal).await,
            };
            let verdict = match &gate {
                None => None,
                Some(gate) => {
                    let measured = self
                        .measure_gate(&request, gate, parent, &computed, signal)
                        .await;
                    match measured {
                        Ok(measured) => Some(verdict(gate, &measured)),
                        Err(err) => return self.after_error(edit.id, err, signal).await,
                    }
                }
            };
            let commit = CommitDelta {
                parent: head,
                deltas: computed.deltas,
                model_fingerprint: self.state.backend.summary().fingerprint.clone(),
                metrics: computed.metrics,
                gate: verdict,
            };
            loop {
                // A cancel that arrives after the last iteration still wins over
                // committing, also one asked on another replica that no heartbeat has
                // relayed yet.
                if let Some(reason) = signal.reason() {
                    return self.after_stop(edit.id, reason).await;
                }
                let stored = self
                    .patiently(signal, || async { Ok(store.get_edit(edit.id).await?) })
                    .await?;
                if stored.is_some_and(|e| e.cancel_requested) {
                    return self.after_stop(edit.id, StopReason::Cancel).await;
                }
                let committed = self
                    .patiently(signal, || async {
                        Ok(store
                            .commit_edit(edit.id, &self.worker_id, commit.clone())
                            .await?)
                    })
                    .await?;
                match committed {
                    CommitOutcome::Committed(version) => {
                        self.state.version_deltas(version.number).await?;
                        return Ok(Outcome::Applied {
                            version: version.number,
                        });
                    }
                    CommitOutcome::LeaseLost => return Ok(Outcome::LeaseLost),
                    CommitOutcome::HeadMoved { head: new_head } => {
                        head_moves += 1;
                        tracing::info!(edit = %edit.id, parent = head, head = new_head, head_moves, "head moved; recomputing");
                        if head_moves > moves_before_turn {
                            if let Some(stopped) = self.take_turn(edit.id, signal).await? {
                                return Ok(stopped);
                            }
                        }
                        continue 'compute;
                    }
                    // Our delta may still be right: if the head has not moved once
                    // the turn is ours, the commit goes through as computed.
                    CommitOutcome::TurnTaken { by } => {
                        tracing::info!(edit = %edit.id, ahead = %by, "waiting for the head's turn");
                        if let Some(stopped) = self.take_turn(edit.id, signal).await? {
                            return Ok(stopped);
                        }
                    }
                }
            }
        }
    }

    /// Runs a store call again while the database is unreachable, so that an outage
    /// does not throw away a computed edit: once the database is back, the heartbeat
    /// renews the lease (if no other replica took the lapsed edit over) and the commit
    /// goes through. Gives up when the edit is told to stop.
    async fn patiently<T, F, Fut>(&self, signal: &StopSignal, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut pause = OUTAGE_RETRY_FIRST;
        loop {
            match call().await {
                Err(ApiError::Store(err)) if err.is_unavailable() && signal.reason().is_none() => {
                    tracing::warn!(error = %err, retry_in = ?pause, "database unreachable; the edit waits");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(OUTAGE_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    /// Asks for the head's next turn and waits until no edit's turn comes before this
    /// one's. `Some` when the wait ended the attempt instead (stop signal, lost lease).
    /// The lease stays renewed meanwhile: the heartbeat runs on.
    async fn take_turn(
        &self,
        id: Uuid,
        signal: &Arc<StopSignal>,
    ) -> Result<Option<Outcome>, ApiError> {
        let store = &self.state.store;
        if !store.request_turn(id, &self.worker_id).await? {
            return Ok(Some(Outcome::LeaseLost));
        }
        let pause = self.state.settings.worker.poll_interval().min(TURN_POLL);
        loop {
            if let Some(reason) = signal.reason() {
                return self.after_stop(id, reason).await.map(Some);
            }
            if store.turn_ahead_of(id).await?.is_none() {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Runs the optimisation on a blocking thread, publishing each iteration.
    async fn compute(
        &self,
        id: Uuid,
        request: B::EditRequest,
        parent: B::Deltas,
        signal: &Arc<StopSignal>,
        progress: &ProgressSlot,
    ) -> Result<ComputedEdit, EngineError> {
        let backend = self.state.backend.clone();
        let events = self.state.events.clone();
        let signal = signal.clone();
        let progress = progress.clone();
        on_blocking_thread("edit computation", move || {
            let mut observer = |step: EditProgress| {
                *progress.lock().expect("progress slot poisoned") = Some(step);
                events.publish(id, EditEvent::Progress(step));
                match signal.reason() {
                    Some(_) => ControlFlow::Break(()),
                    None => ControlFlow::Continue(()),
                }
            };
            let stopped = || signal.reason().is_some();
            backend.compute_edit(&request, &parent, &mut observer, &stopped)
        })
        .await
    }

    /// Measures the edit's quality gate on a blocking thread (images can take minutes).
    async fn measure_gate(
        &self,
        request: &B::EditRequest,
        gate: &GateRequest,
        parent: B::Deltas,
        computed: &ComputedEdit,
        signal: &Arc<StopSignal>,
    ) -> Result<GateMeasurement, EngineError> {
        let backend = self.state.backend.clone();
        let generator = self.state.generator.clone();
        let (request, gate, computed) = (request.clone(), gate.clone(), computed.clone());
        let signal = signal.clone();
        on_blocking_thread("quality gate", move || {
            let stopped = || signal.reason().is_some();
            // The gate's images queue with everyone else's: one model thread renders.
            let render = |params, deltas: &B::Deltas| {
                let rendered = generator.generate_blocking(params, deltas.clone());
                rendered.map(|image| image.png).map_err(|err| match err {
                    ApiError::ShuttingDown => EngineError::Cancelled,
                    other => EngineError::Numerical(format!("gate image: {other}")),
                })
            };
            backend.measure_gate(&request, &gate, &parent, &computed, &stopped, &render)
        })
        .await
    }

    async fn after_error(
        &self,
        id: Uuid,
        err: EngineError,
        signal: &StopSignal,
    ) -> Result<Outcome, ApiError> {
        if let Some(reason) = signal.reason() {
            return self.after_stop(id, reason).await;
        }
        let retryable = !matches!(
            err,
            EngineError::Invalid { .. } | EngineError::Numerical(_) | EngineError::Cancelled
        );
        self.fail(id, err.to_string(), retryable).await
    }

    async fn after_stop(&self, id: Uuid, reason: StopReason) -> Result<Outcome, ApiError> {
        match reason {
            StopReason::Cancel => {
                self.state.store.mark_cancelled(id, &self.worker_id).await?;
                Ok(Outcome::Cancelled)
            }
            StopReason::LeaseLost => Ok(Outcome::LeaseLost),
            // Nothing went wrong with the edit: it goes back to the queue at once, its
            // attempt not counted, for another replica (or this one, restarted).
            StopReason::Shutdown => {
                self.state.store.release_edit(id, &self.worker_id).await?;
                Ok(Outcome::Interrupted)
            }
        }
    }

    async fn fail(&self, id: Uuid, error: String, retryable: bool) -> Result<Outcome, ApiError> {
        tracing::warn!(edit = %id, %error, retryable, "edit attempt failed");
        self.state
            .store
            .fail_attempt(id, &self.worker_id, &error, retryable)
            .await?;
        let requeued = matches!(
            self.state.store.get_edit(id).await?,
            Some(edit) if edit.status == refact_store::EditStatus::Queued
        );
        Ok(if requeued {
            Outcome::Retrying { error }
        } else {
            Outcome::Failed { error }
        })
    }
}

/// Runs tensor work off the async runtime; a panic in it fails the attempt like a
/// numerical error (not retried) instead of taking the worker down.
async fn on_blocking_thread<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(EngineError::Numerical(format!("{what} panicked: {join}"))),
    }
}
