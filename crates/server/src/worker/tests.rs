//! The worker's orchestration (cancel, head moved, retries) with a scripted model whose
//! iterations the test controls. The numbers of a real edit are the end-to-end tests' job
//! (tests/api, real engine on the fixture model); here only the control flow matters.

use super::*;
use crate::scripted::{harness, ScriptedModel, ScriptedRequest};
use refact_store::{request_hash, EditStatus, InsertOutcome, NewEdit};
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_asked_on_another_replica_prevents_the_commit() {
    let h = harness().await;
    // Gated, 3 iterations; the cancel reaches only the store (as from another replica).
    let id = submit(&h.state, 3, 0, "none").await;
    let mut events = h.state.events.subscribe(id);
    let worker = EditWorker::new(h.state.clone());
    let run = tokio::spawn(async move { worker.try_execute_one().await });
    loop {
        if let EditEvent::Progress(step) = events.recv().await.unwrap() {
            if step.iteration == 2 {
                break;
            }
            h.ticks.send(()).unwrap();
        }
    }
    h.state.store.request_cancel(id).await.unwrap();
    h.ticks.send(()).unwrap();
    assert_eq!(
        run.await.unwrap().unwrap().unwrap(),
        (id, Outcome::Cancelled)
    );
    assert_eq!(h.state.store.head().await.unwrap().number, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_edit_is_not_starved_by_a_stream_of_short_ones() {
    let h = harness().await;
    // 300 ms per computation: every one of them sees several short edits commit.
    let long = submit(&h.state, 30, 10, "none").await;
    let long_worker = EditWorker::new(h.state.clone());
    let long_run = tokio::spawn(async move { long_worker.try_execute_one().await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let (state, stop) = (h.state.clone(), stop.clone());
        tokio::spawn(async move {
            let worker = EditWorker::new(state.clone());
            let mut applied = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                submit(&state, 1, 5, "none").await;
                let (_, outcome) = worker.try_execute_one().await.unwrap().unwrap();
                assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
                applied += 1;
            }
            applied
        })
    };
    let finished = tokio::time::timeout(Duration::from_secs(30), long_run).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let shorts = stream.await.unwrap();
    let (id, outcome) = finished
        .expect("the long edit finishes while short edits keep coming")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(id, long);
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert!(shorts >= 2, "short edits moved the head ({shorts} applied)");
    let edit = h.state.store.get_edit(long).await.unwrap().unwrap();
    assert_eq!(edit.attempts, 1, "head moves spend no attempt");
    // Versions are gapless: every short edit and the long one, one version each.
    assert_eq!(
        h.state.store.head().await.unwrap().number,
        i64::from(shorts) + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_hands_the_edit_back_without_spending_an_attempt() {
    let h = harness().await;
    let id = submit(&h.state, 200, 10, "none").await;
    let mut events = h.state.events.subscribe(id);
    let worker = EditWorker::new(h.state.clone());
    let run = tokio::spawn(async move { worker.try_execute_one().await });
    while !matches!(events.recv().await.unwrap(), EditEvent::Progress(_)) {}
    h.state.running.stop_all(StopReason::Shutdown);
    assert_eq!(
        run.await.unwrap().unwrap().unwrap(),
        (id, Outcome::Interrupted)
    );
    let edit = h.state.store.get_edit(id).await.unwrap().unwrap();
    assert_eq!((edit.status, edit.attempts), (EditStatus::Queued, 0));
    assert_eq!(edit.lease_expires_at, None, "no lease left to wait for");
    // The next worker (a restarted replica) takes it at once and applies it.
    let next = EditWorker::new(h.state.clone());
    let (again, outcome) = next.try_execute_one().await.unwrap().unwrap();
    assert_eq!((again, outcome), (id, Outcome::Applied { version: 1 }));
    let edit = h.state.store.get_edit(id).await.unwrap().unwrap();
    assert_eq!(edit.attempts, 1);
}
