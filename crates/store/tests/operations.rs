//! Webhook deliveries (the outbox) and replica heartbeats. Each test runs on SQLite and
//! Postgres.

#[macro_use]
mod common;

use std::time::Duration;

use chrono::Utc;
use refact_store::{AttemptResult, ReplicaReport};
use serde_json::json;

backend_test!(a_delivery_is_claimed_once_retried_then_ends, |store, db| {
    let urls = vec![
        "http://a.test/hook".to_string(),
        "http://b.test/hook".to_string(),
    ];
    let payload = json!({"event": "alias.moved", "alias": "production"});
    let ids = store
        .queue_webhook_deliveries(&urls, "alias.moved", &payload)
        .await?;
    assert_eq!(ids.len(), 2, "one delivery per receiver");

    let lease = Duration::from_secs(60);
    let first = store.claim_due_delivery(lease).await?.expect("due now");
    let second = store
        .claim_due_delivery(lease)
        .await?
        .expect("the other one");
    assert_ne!(first.id, second.id);
    assert!(
        store.claim_due_delivery(lease).await?.is_none(),
        "claimed deliveries are not handed out again while their lease runs"
    );
    assert_eq!(first.payload, payload);

    // The first fails and is retried at once; the second gives up.
    store
        .record_delivery_attempt(
            first.id,
            &AttemptResult::Failed {
                code: Some(500),
                error: "HTTP 500".into(),
                retry_after: Some(Duration::ZERO),
            },
        )
        .await?;
    store
        .record_delivery_attempt(
            second.id,
            &AttemptResult::Failed {
                code: None,
                error: "connection refused".into(),
                retry_after: None,
            },
        )
        .await?;
    let again = store.claim_due_delivery(lease).await?.expect("retry due");
    assert_eq!(again.id, first.id);
    assert_eq!((again.attempts, again.last_code), (1, Some(500)));
    store
        .record_delivery_attempt(first.id, &AttemptResult::Delivered { code: 204 })
        .await?;
    assert!(store.claim_due_delivery(lease).await?.is_none());

    let recent = store.recent_deliveries(10).await?;
    let by_id = |id| recent.iter().find(|d| d.id == id).expect("listed");
    let delivered = by_id(first.id);
    assert_eq!(
        (
            delivered.status.as_str(),
            delivered.attempts,
            delivered.last_code
        ),
        ("delivered", 2, Some(204))
    );
    assert!(delivered.finished_at.is_some());
    let failed = by_id(second.id);
    assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 1));
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    Ok(())
});

backend_test!(replicas_report_themselves_and_leave, |store, db| {
    let started = Utc::now();
    let status = json!({"generate_queue": 0});
    let report = |id: &'static str| ReplicaReport {
        id,
        started_at: started,
        model: "demo",
        worker: id == "a",
        status: &status,
    };
    store.report_replica(&report("a")).await?;
    store.report_replica(&report("b")).await?;
    store.report_replica(&report("a")).await?; // a heartbeat refreshes, not duplicates
    let seen = store
        .replicas_seen_since(started - chrono::Duration::seconds(1))
        .await?;
    let mut ids: Vec<_> = seen.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    let a = seen.iter().find(|r| r.id == "a").unwrap();
    assert!(a.worker && a.last_seen >= a.started_at - chrono::Duration::milliseconds(1));
    assert_eq!(a.status, status);
    assert!(
        store
            .replicas_seen_since(Utc::now() + chrono::Duration::seconds(60))
            .await?
            .is_empty(),
        "none seen in the future"
    );
    store.forget_replica("b").await?;
    let seen = store
        .replicas_seen_since(started - chrono::Duration::seconds(1))
        .await?;
    assert_eq!(seen.len(), 1);
    Ok(())
});
