//! The edit table as a job queue: idempotent submission, claiming under leases,
//! heartbeats, cancellation and failures. Each test runs on SQLite and Postgres.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{new_edit, queue};
use refact_store::{EditFilter, EditStatus, InsertOutcome, LeaseState};
use serde_json::json;

const LONG_LEASE: Duration = Duration::from_secs(60);
const SHORT_LEASE: Duration = Duration::from_millis(200);
/// Comfortably longer than SHORT_LEASE, so the lease has lapsed after it.
const LAPSE: Duration = Duration::from_millis(500);

backend_test!(new_edit_is_queued_with_its_request, |store, db| {
    let outcome = store.insert_edit(new_edit(1, None, 3)).await?;
    let InsertOutcome::Created(edit) = outcome else {
        panic!("expected Created, got {outcome:?}");
    };
    assert_eq!(edit.status, EditStatus::Queued);
    assert_eq!(edit.request, common::request(1));
    assert_eq!(edit.attempts, 0);
    assert_eq!(edit.max_attempts, 3);
    assert_eq!(edit.created_by, "ci");
    assert_eq!(store.get_edit(edit.id).await?, Some(edit));
    Ok(())
});

backend_test!(same_key_and_body_returns_the_existing_edit, |store, db| {
    let first = store.insert_edit(new_edit(1, Some("k1"), 3)).await?;
    assert!(matches!(first, InsertOutcome::Created(_)));
    let again = store.insert_edit(new_edit(1, Some("k1"), 3)).await?;
    let InsertOutcome::Existing(existing) = again else {
        panic!("expected Existing, got {again:?}");
    };
    assert_eq!(&existing, first.edit());
    Ok(())
});

backend_test!(same_key_with_another_body_is_a_key_conflict, |store, db| {
    let first = store.insert_edit(new_edit(1, Some("k1"), 3)).await?;
    let other = store.insert_edit(new_edit(2, Some("k1"), 3)).await?;
    let InsertOutcome::KeyConflict(existing) = other else {
        panic!("expected KeyConflict, got {other:?}");
    };
    assert_eq!(existing.id, first.edit().id);
    assert_eq!(existing.request, common::request(1));
    Ok(())
});

backend_test!(
    twenty_concurrent_inserts_with_one_key_create_one_row,
    |store, db| {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.spawn(async move { store.insert_edit(new_edit(7, Some("race"), 3)).await });
        }
        let (mut created, mut existing, mut ids) = (0, 0, HashSet::new());
        while let Some(result) = tasks.join_next().await {
            let outcome = result??;
            ids.insert(outcome.edit().id);
            match outcome {
                InsertOutcome::Created(_) => created += 1,
                InsertOutcome::Existing(_) => existing += 1,
                InsertOutcome::KeyConflict(e) => panic!("same body reported as conflict: {e:?}"),
            }
        }
        assert_eq!((created, existing, ids.len()), (1, 19, 1));
        let page = store.list_edits(EditFilter::default()).await?;
        assert_eq!(page.total, 1);
        Ok(())
    }
);

backend_test!(edits_without_keys_are_never_deduplicated, |store, db| {
    store.insert_edit(new_edit(1, None, 3)).await?;
    store.insert_edit(new_edit(1, None, 3)).await?;
    assert_eq!(store.list_edits(EditFilter::default()).await?.total, 2);
    Ok(())
});

backend_test!(claims_take_the_oldest_edit_first, |store, db| {
    let ids = [
        queue(&store, 1).await?,
        queue(&store, 2).await?,
        queue(&store, 3).await?,
    ];
    for id in ids {
        let claimed = store
            .claim_next_edit("w1", LONG_LEASE)
            .await?
            .expect("an edit");
        assert_eq!(claimed.id, id);
        assert_eq!(claimed.status, EditStatus::Running);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.lease_owner.as_deref(), Some("w1"));
        assert!(claimed.lease_expires_at.unwrap() > claimed.started_at.unwrap());
    }
    assert!(store.claim_next_edit("w1", LONG_LEASE).await?.is_none());
    Ok(())
});

backend_test!(concurrent_workers_never_claim_the_same_edit, |store, db| {
    for n in 0..30 {
        queue(&store, n).await?;
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let store = store.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            while let Some(edit) = store.claim_next_edit(&format!("w{w}"), LONG_LEASE).await? {
                mine.push(edit.id);
            }
            anyhow::Ok(mine)
        });
    }
    let mut all = Vec::new();
    while let Some(result) = workers.join_next().await {
        all.extend(result??);
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 30, "every edit claimed exactly once");
    assert_eq!(distinct.len(), 30);
    let depth = store.queue_depth().await?;
    assert_eq!((depth.queued, depth.running), (0, 30));
    Ok(())
});

backend_test!(a_live_lease_is_not_taken, |store, db| {
    let id = queue(&store, 1).await?;
    store
        .claim_next_edit("w1", LONG_LEASE)
        .await?
        .expect("claim");
    assert!(store.claim_next_edit("w2", LONG_LEASE).await?.is_none());
    assert_eq!(
        store.heartbeat(id, "w1", LONG_LEASE, None).await?,
        LeaseState::Held
    );
    Ok(())
});

backend_test!(
    a_lapsed_lease_is_reclaimed_by_another_worker,
    |store, db| {
        let id = queue(&store, 1).await?;
        store
            .claim_next_edit("crashed", SHORT_LEASE)
            .await?
            .expect("claim");
        tokio::time::sleep(LAPSE).await;
        let reclaimed = store
            .claim_next_edit("w2", LONG_LEASE)
            .await?
            .expect("reclaim");
        assert_eq!(reclaimed.id, id);
        assert_eq!(reclaimed.attempts, 2);
        assert_eq!(reclaimed.lease_owner.as_deref(), Some("w2"));
        let lost = store.heartbeat(id, "crashed", LONG_LEASE, None).await?;
        assert_eq!(lost, LeaseState::Lost);
        assert!(store
            .fail_attempt(id, "crashed", "late", true)
            .await?
            .is_none());
        Ok(())
    }
);

backend_test!(an_edit_whose_attempts_are_used_up_fails, |store, db| {
    let id = store.insert_edit(new_edit(1, None, 2)).await?.edit().id;
    for attempt in 1..=2 {
        let claimed = store
            .claim_next_edit(&format!("w{attempt}"), SHORT_LEASE)
            .await?;
        assert_eq!(claimed.expect("claim").attempts, attempt);
        tokio::time::sleep(LAPSE).await;
    }
    assert!(store.claim_next_edit("w3", LONG_LEASE).await?.is_none());
    let edit = store.get_edit(id).await?.unwrap();
    assert_eq!(edit.status, EditStatus::Failed);
    assert_eq!(
        edit.error.as_deref(),
        Some("lease expired after 2 attempts")
    );
    assert!(edit.finished_at.is_some());
    Ok(())
});

backend_test!(
    heartbeat_extends_the_lease_and_records_progress,
    |store, db| {
        let id = queue(&store, 1).await?;
        store
            .claim_next_edit("w1", SHORT_LEASE)
            .await?
            .expect("claim");
        let progress = json!({"iteration": 12, "loss": 0.5, "prob": 0.75});
        let state = store
            .heartbeat(id, "w1", LONG_LEASE, Some(progress.clone()))
            .await?;
        assert_eq!(state, LeaseState::Held);
        tokio::time::sleep(LAPSE).await;
        assert!(
            store.claim_next_edit("w2", LONG_LEASE).await?.is_none(),
            "the extended lease is still live"
        );
        assert_eq!(
            store.heartbeat(id, "w1", LONG_LEASE, None).await?,
            LeaseState::Held
        );
        let edit = store.get_edit(id).await?.unwrap();
        assert_eq!(
            edit.progress,
            Some(progress),
            "a heartbeat without progress keeps it"
        );
        assert_eq!(
            store.heartbeat(id, "other", LONG_LEASE, None).await?,
            LeaseState::Lost
        );
        Ok(())
    }
);

backend_test!(cancelling_a_queued_edit_cancels_it_at_once, |store, db| {
    let id = queue(&store, 1).await?;
    let edit = store.request_cancel(id).await?.unwrap();
    assert_eq!(edit.status, EditStatus::Cancelled);
    assert!(edit.finished_at.is_some());
    assert!(store.claim_next_edit("w1", LONG_LEASE).await?.is_none());
    assert!(store.request_cancel(uuid::Uuid::new_v4()).await?.is_none());
    Ok(())
});

backend_test!(
    cancelling_a_running_edit_asks_its_worker_to_stop,
    |store, db| {
        let id = queue(&store, 1).await?;
        store
            .claim_next_edit("w1", LONG_LEASE)
            .await?
            .expect("claim");
        let edit = store.request_cancel(id).await?.unwrap();
        assert_eq!(
            (edit.status, edit.cancel_requested),
            (EditStatus::Running, true)
        );
        let state = store.heartbeat(id, "w1", LONG_LEASE, None).await?;
        assert_eq!(state, LeaseState::CancelRequested);
        assert!(store.mark_cancelled(id, "other").await?.is_none());
        let edit = store.mark_cancelled(id, "w1").await?.expect("still held");
        assert_eq!(edit.status, EditStatus::Cancelled);
        assert_eq!(
            store.heartbeat(id, "w1", LONG_LEASE, None).await?,
            LeaseState::Lost
        );
        let again = store.request_cancel(id).await?.unwrap();
        assert_eq!(again, edit, "a finished edit is left alone");
        Ok(())
    }
);

backend_test!(
    a_lapsed_edit_with_a_pending_cancel_is_cancelled_not_retried,
    |store, db| {
        let id = queue(&store, 1).await?;
        store
            .claim_next_edit("crashed", SHORT_LEASE)
            .await?
            .expect("claim");
        store.request_cancel(id).await?;
        tokio::time::sleep(LAPSE).await;
        assert!(store.claim_next_edit("w2", LONG_LEASE).await?.is_none());
        assert_eq!(
            store.get_edit(id).await?.unwrap().status,
            EditStatus::Cancelled
        );
        Ok(())
    }
);

backend_test!(
    a_retryable_failure_requeues_until_attempts_run_out,
    |store, db| {
        let id = store.insert_edit(new_edit(1, None, 2)).await?.edit().id;
        store
            .claim_next_edit("w1", LONG_LEASE)
            .await?
            .expect("claim");
        let edit = store
            .fail_attempt(id, "w1", "out of memory", true)
            .await?
            .unwrap();
        assert_eq!(edit.status, EditStatus::Queued);
        assert_eq!(edit.error.as_deref(), Some("out of memory"));
        assert!(edit.finished_at.is_none());
        let claimed = store
            .claim_next_edit("w2", LONG_LEASE)
            .await?
            .expect("retry");
        assert_eq!((claimed.id, claimed.attempts), (id, 2));
        let edit = store
            .fail_attempt(id, "w2", "out of memory again", true)
            .await?
            .unwrap();
        assert_eq!(edit.status, EditStatus::Failed);
        assert_eq!(edit.error.as_deref(), Some("out of memory again"));
        Ok(())
    }
);

backend_test!(a_non_retryable_failure_fails_at_once, |store, db| {
    let id = queue(&store, 1).await?;
    store
        .claim_next_edit("w1", LONG_LEASE)
        .await?
        .expect("claim");
    let edit = store
        .fail_attempt(id, "w1", "bad prompt", false)
        .await?
        .unwrap();
    assert_eq!(edit.status, EditStatus::Failed);
    assert!(edit.finished_at.is_some());
    assert!(store.claim_next_edit("w1", LONG_LEASE).await?.is_none());
    Ok(())
});

backend_test!(
    listing_filters_by_status_and_pages_newest_first,
    |store, db| {
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(queue(&store, n).await?);
        }
        store.claim_next_edit("w1", LONG_LEASE).await?; // the oldest, ids[0], runs
        let queued = EditFilter {
            status: Some(EditStatus::Queued),
            limit: 2,
            offset: 1,
        };
        let page = store.list_edits(queued).await?;
        assert_eq!(page.total, 4);
        let got: Vec<_> = page.items.iter().map(|e| e.id).collect();
        assert_eq!(got, vec![ids[3], ids[2]]);
        let bad = EditFilter {
            limit: 0,
            ..EditFilter::default()
        };
        assert!(store.list_edits(bad).await.is_err());
        let depth = store.queue_depth().await?;
        assert_eq!((depth.queued, depth.running), (4, 1));
        Ok(())
    }
);

backend_test!(inserting_an_edit_wakes_a_waiting_worker, |store, db| {
    // Notifications are best effort (one sent before the wait starts is lost), so
    // keep inserting until the waiter reports a wake-up; the poll interval alone
    // never reports one.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_work(Duration::from_secs(30)).await })
    };
    let mut n = 0;
    while !waiter.is_finished() && n < 100 {
        queue(&store, n).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiter.await?, "the waiter timed out instead of being woken");
    assert!(
        !store.wait_for_work(Duration::from_millis(100)).await,
        "no work arrived, so the wait times out"
    );
    Ok(())
});

/// Postgres only: LISTEN/NOTIFY reaches other processes, modelled here by a second
/// `Store` (its own pool and wake-up state) on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_notify_wakes_a_worker_in_another_process() -> anyhow::Result<()> {
    let db = refact_store::testing::TestDatabase::postgres().await;
    let submitter = db.store().await;
    let worker = db.store().await;
    let waiter = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.wait_for_work(Duration::from_secs(30)).await })
    };
    let mut n = 0;
    while !waiter.is_finished() && n < 100 {
        queue(&submitter, n).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiter.await?, "the other store's waiter was not notified");
    submitter.close().await;
    worker.close().await;
    Ok(())
}

/// SQLite only: no cross-process notification exists, so a wait returns after the
/// short poll interval even when asked to wait far longer.
#[tokio::test]
async fn sqlite_wait_for_work_returns_after_a_short_poll_interval() -> anyhow::Result<()> {
    let db = refact_store::testing::TestDatabase::sqlite();
    let store = db.store().await;
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        store.wait_for_work(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(
        waited.ok(),
        Some(false),
        "the wait should end by polling, unnotified"
    );
    Ok(())
}

backend_test!(
    a_released_edit_is_claimable_at_once_without_spending_its_attempt,
    |store, db| {
        let id = queue(&store, 1).await?;
        store
            .claim_next_edit("stopping", LONG_LEASE)
            .await?
            .expect("claim");
        let released = store.release_edit(id, "stopping").await?.expect("held");
        assert_eq!(released.status, EditStatus::Queued);
        assert_eq!(released.attempts, 0, "a shutdown is not the edit's failure");
        assert_eq!(released.lease_expires_at, None);
        // No lease to wait for: another worker takes it now.
        let claimed = store
            .claim_next_edit("w2", LONG_LEASE)
            .await?
            .expect("claim");
        assert_eq!((claimed.id, claimed.attempts), (id, 1));
        // The old holder can no longer release (or otherwise touch) it.
        assert!(store.release_edit(id, "stopping").await?.is_none());
        // A cancel asked meanwhile wins over going back to the queue.
        store.request_cancel(id).await?;
        let ended = store.release_edit(id, "w2").await?.expect("held");
        assert_eq!(ended.status, EditStatus::Cancelled);
        assert!(ended.finished_at.is_some());
        Ok(())
    }
);
