//! Concurrency: one idempotency key under 20 concurrent POSTs; 10 edits submitted at once
//! and run by two workers commit as versions 1..10 in order.

use crate::helpers::{edit_body, spawn_app, Db};
use futures::future::join_all;
use refact_store::EditFilter;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashSet;

on_both_databases!(
    twenty_concurrent_posts_with_one_key_make_one_edit,
    a_default_left_out_or_spelled_out_is_the_same_request,
    ten_edits_at_once_commit_as_versions_one_to_ten
);

async fn twenty_concurrent_posts_with_one_key_make_one_edit(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let body = edit_body("Prince William");
    let responses = join_all((0..20).map(|_| app.post_edit(&body, Some("one-key")))).await;
    let mut statuses = Vec::new();
    let mut ids = HashSet::new();
    for response in responses {
        statuses.push(response.status());
        let edit: Value = response.json().await.unwrap();
        ids.insert(edit["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "all answers name the same edit");
    let created = statuses
        .iter()
        .filter(|&&s| s == StatusCode::ACCEPTED)
        .count();
    let existing = statuses.iter().filter(|&&s| s == StatusCode::OK).count();
    assert_eq!((created, existing), (1, 19), "{statuses:?}");
    let page = app
        .store
        .list_edits(EditFilter {
            status: None,
            limit: 100,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);

    // The same key with another body is a conflict, and stores nothing.
    let response = app
        .post_edit(&edit_body("Prince Harry"), Some("one-key"))
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_conflict");
    let page = app
        .store
        .list_edits(EditFilter {
            status: None,
            limit: 100,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
}

async fn ten_edits_at_once_commit_as_versions_one_to_ten(db: Db) {
    // Two workers (the background one and the test's) race for the queue.
    let app = spawn_app(db, |_| {}).await;
    let targets: Vec<String> = (0..10).map(|i| format!("Prince William {i}")).collect();
    let bodies: Vec<Value> = targets.iter().map(|t| edit_body(t)).collect();
    let ids = join_all(bodies.iter().map(|b| app.submit_edit(b))).await;
    app.drain_queue().await;

    let mut versions_of_edits = Vec::new();
    for id in &ids {
        let edit = app
            .wait_for_edit(id, std::time::Duration::from_secs(120))
            .await;
        assert_eq!(edit["status"], "applied", "{edit}");
        versions_of_edits.push(edit["version"].as_i64().unwrap());
    }
    versions_of_edits.sort();
    assert_eq!(versions_of_edits, (1..=10).collect::<Vec<_>>());

    let page = app.get_json("/versions?limit=50").await;
    assert_eq!(page["total"], 11);
    let mut edits_seen = HashSet::new();
    for version in page["items"].as_array().unwrap() {
        let n = version["number"].as_i64().unwrap();
        if n == 0 {
            assert_eq!(version["kind"], "base");
            continue;
        }
        assert_eq!(version["parent"], n - 1, "version {n}'s parent");
        assert_eq!(version["kind"], "apply");
        assert!(edits_seen.insert(version["edit_id"].as_str().unwrap().to_string()));
    }
    assert_eq!(edits_seen.len(), 10, "one version per edit");
}

async fn a_default_left_out_or_spelled_out_is_the_same_request(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let implicit = edit_body("Prince William");
    let response = app.post_edit(&implicit, Some("k")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let edit: Value = response.json().await.unwrap();
    let layer = edit["request"]["layer"]
        .as_u64()
        .expect("the default layer is stored");
    let mut explicit = implicit.clone();
    explicit["layer"] = layer.into();
    let again = app.post_edit(&explicit, Some("k")).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "the same request, spelled out"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], edit["id"]);
    explicit["layer"] = (layer - 1).into();
    let other = app.post_edit(&explicit, Some("k")).await;
    assert_eq!(
        other.status(),
        StatusCode::CONFLICT,
        "another layer is another request"
    );

    // An edit stored by a release that did not fill the layer in still matches.
    let old_form: refact_engine::refact::EditRequest =
        serde_json::from_value(implicit.clone()).unwrap();
    let old_form = serde_json::to_value(old_form).unwrap();
    assert!(old_form.get("layer").is_none());
    let stored = app
        .store
        .insert_edit(refact_store::NewEdit {
            request_hash: refact_store::request_hash(&old_form),
            request: old_form,
            idempotency_key: Some("old".into()),
            created_by: "earlier release".into(),
            max_attempts: 3,
        })
        .await
        .unwrap();
    let retried = app.post_edit(&implicit, Some("old")).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["id"], stored.edit().id.to_string());
}
