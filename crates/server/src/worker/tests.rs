//! The worker's orchestration (cancel, head moved, retries) with a scripted model whose
//! iterations the test controls. The numbers of a real edit are the end-to-end tests' job
//! (tests/api, real engine on the fixture model); here only the control flow matters.

use super::*;
use crate::backend::{GenerateParams, ModelSummary};
use crate::settings::Settings;
use refact_engine::InvalidKind;
use refact_store::testing::TestDatabase;
use refact_store::{request_hash, EditStatus, InsertOutcome, NewEdit};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A model whose edits take `steps` iterations of `step_ms` each (or, when `gated`, one
/// iteration per tick the test sends) and whose metrics record how many deltas its parent
/// had (so a test can see what it was computed on).
struct ScriptedModel {
    summary: ModelSummary,
    ticks: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScriptedRequest {
    steps: usize,
    step_ms: u64,
    gated: bool,
    /// `none`, `io` (retryable) or `invalid` (not).
    fail: String,
}

impl ModelBackend for ScriptedModel {
    type Delta = usize;
    type Deltas = Vec<usize>;
    type EditRequest = ScriptedRequest;

    fn summary(&self) -> &ModelSummary {
        &self.summary
    }

    fn delta(&self, layer: usize, _u: Vec<f32>, _v: Vec<f32>) -> Result<usize, EngineError> {
        Ok(layer)
    }

    fn compose(&self, deltas: &[usize]) -> Result<Vec<usize>, EngineError> {
        Ok(deltas.to_vec())
    }

    fn validate_edit(&self, _request: &ScriptedRequest) -> Result<(), EngineError> {
        Ok(())
    }

    fn compute_edit(
        &self,
        request: &ScriptedRequest,
        parent: &Vec<usize>,
        observer: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
    ) -> Result<ComputedEdit, EngineError> {
        match request.fail.as_str() {
            "io" => {
                return Err(EngineError::io(
                    "/stats",
                    std::io::Error::other("disk went away"),
                ))
            }
            "invalid" => return Err(EngineError::invalid(InvalidKind::Empty, "prompt", "empty")),
            _ => {}
        }
        for iteration in 0..request.steps {
            let step = EditProgress {
                iteration,
                loss: 1.0,
                probability: 0.5,
            };
            if observer(step).is_break() {
                return Err(EngineError::Cancelled);
            }
            if request.gated {
                let ticks = self.ticks.lock().unwrap();
                ticks
                    .recv()
                    .map_err(|_| EngineError::Numerical("no more ticks".into()))?;
            } else {
                std::thread::sleep(Duration::from_millis(request.step_ms));
            }
        }
        Ok(ComputedEdit {
            layer: 7,
            u: vec![0.0; 4],
            v: vec![0.0; 2],
            metrics: serde_json::json!({ "parent_deltas": parent.len() }),
        })
    }

    fn validate_generate(&self, _params: &GenerateParams) -> Result<(), EngineError> {
        Ok(())
    }

    fn generate(
        &self,
        _params: &GenerateParams,
        _deltas: &Vec<usize>,
    ) -> Result<Vec<u8>, EngineError> {
        Err(EngineError::Numerical("not used here".into()))
    }
}

struct Harness {
    state: AppState<ScriptedModel>,
    ticks: std::sync::mpsc::Sender<()>,
    _db: TestDatabase,
}

async fn harness() -> Harness {
    let db = TestDatabase::sqlite();
    let mut settings = Settings {
        database_url: crate::secret::Secret::new(db.url()),
        bind: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.worker.enabled = false;
    settings.worker.max_attempts = 2;
    settings.worker.heartbeat_secs = 0.2;
    let (ticks, tick_receiver) = std::sync::mpsc::channel();
    let backend = ScriptedModel {
        ticks: std::sync::Mutex::new(tick_receiver),
        summary: ModelSummary {
            source: "scripted".into(),
            fingerprint: "scripted-model".into(),
            is_demo: false,
            num_layers: 12,
            device: "cpu".into(),
        },
    };
    let app = crate::Application::build_with_backend(settings, backend)
        .await
        .unwrap();
    Harness {
        state: app.state().clone(),
        ticks,
        _db: db,
    }
}

async fn submit(state: &AppState<ScriptedModel>, steps: usize, step_ms: u64, fail: &str) -> Uuid {
    let request = serde_json::to_value(ScriptedRequest {
        steps,
        step_ms,
        gated: step_ms == 0 && steps > 1,
        fail: fail.into(),
    })
    .unwrap();
    let new_edit = NewEdit {
        request_hash: request_hash(&request),
        request,
        idempotency_key: None,
        created_by: "test".into(),
        max_attempts: state.settings.worker.max_attempts,
    };
    match state.store.insert_edit(new_edit).await.unwrap() {
        InsertOutcome::Created(edit) => edit.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_edit_stops_within_one_iteration_and_writes_no_version() {
    let h = harness().await;
    // Gated: the model runs one iteration per tick.
    let id = submit(&h.state, 100_000, 0, "none").await;
    let mut events = h.state.events.subscribe(id);
    let worker = EditWorker::new(h.state.clone());
    let run = tokio::spawn(async move { worker.try_execute_one().await });
    let mut last = 0;
    while last < 5 {
        match events.recv().await.unwrap() {
            EditEvent::Progress(step) => {
                last = step.iteration;
                if last < 5 {
                    h.ticks.send(()).unwrap();
                }
            }
            EditEvent::Status(status) => assert_eq!(status.status, EditStatus::Running),
        }
    }
    // Iteration 5 has been reported and waits for its tick: cancel as `DELETE` does.
    let edit = h.state.store.request_cancel(id).await.unwrap().unwrap();
    assert_eq!(edit.status, EditStatus::Running);
    assert!(edit.cancel_requested);
    assert!(h.state.running.stop(id, StopReason::Cancel));
    h.ticks.send(()).unwrap();
    let terminal = loop {
        match events.recv().await.unwrap() {
            EditEvent::Progress(step) => last = step.iteration,
            EditEvent::Status(status) => break status,
        }
    };
    assert_eq!(last, 6, "the next iteration saw the stop and broke");
    assert_eq!(terminal.status, EditStatus::Cancelled);
    assert_eq!(
        run.await.unwrap().unwrap().unwrap(),
        (id, Outcome::Cancelled)
    );
    assert_eq!(h.state.store.head().await.unwrap().number, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_whose_head_moved_is_recomputed_on_the_new_head() {
    let h = harness().await;
    let slow = submit(&h.state, 40, 10, "none").await;
    let fast = submit(&h.state, 2, 1, "none").await;
    let first = EditWorker::new(h.state.clone());
    let second = EditWorker::new(h.state.clone());
    // The first worker claims the slow edit (oldest); the second commits the fast one
    // meanwhile, so the slow one's parent is no longer the head when it finishes.
    let slow_run = tokio::spawn(async move { first.try_execute_one().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (id, outcome) = second.try_execute_one().await.unwrap().unwrap();
    assert_eq!((id, outcome), (fast, Outcome::Applied { version: 1 }));
    let (id, outcome) = slow_run.await.unwrap().unwrap().unwrap();
    assert_eq!((id, outcome), (slow, Outcome::Applied { version: 2 }));
    let slow_edit = h.state.store.get_edit(slow).await.unwrap().unwrap();
    assert_eq!(
        slow_edit.metrics.unwrap()["parent_deltas"],
        1,
        "recomputed on version 1, which holds one delta"
    );
    let v2 = h.state.store.get_version(2).await.unwrap().unwrap();
    assert_eq!(v2.parent, Some(1));
    assert_eq!(h.state.versions.get(2).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_until_attempts_run_out_and_invalid_ones_fail_at_once() {
    let h = harness().await;
    let transient = submit(&h.state, 1, 0, "io").await;
    let worker = EditWorker::new(h.state.clone());
    let (_, first) = worker.try_execute_one().await.unwrap().unwrap();
    assert!(matches!(first, Outcome::Retrying { .. }), "{first:?}");
    let (_, second) = worker.try_execute_one().await.unwrap().unwrap();
    assert!(matches!(second, Outcome::Failed { .. }), "{second:?}");
    let edit = h.state.store.get_edit(transient).await.unwrap().unwrap();
    assert_eq!((edit.status, edit.attempts), (EditStatus::Failed, 2));
    assert!(edit.error.unwrap().contains("disk went away"));

    let invalid = submit(&h.state, 1, 0, "invalid").await;
    let (id, outcome) = worker.try_execute_one().await.unwrap().unwrap();
    assert_eq!(id, invalid);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        h.state
            .store
            .get_edit(invalid)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    assert!(worker.try_execute_one().await.unwrap().is_none());
}
