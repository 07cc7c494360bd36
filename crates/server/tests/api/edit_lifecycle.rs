//! An edit from submission to version, image bytes across versions, revert, aliases.

use crate::helpers::{edit_body, fetch_metrics, generate_body, read_events, spawn_app, Db};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_databases!(
    an_edit_goes_queued_running_applied_and_changes_only_its_version,
    a_running_edit_cancelled_over_http_stops_and_leaves_no_version
);

async fn an_edit_goes_queued_running_applied_and_changes_only_its_version(db: Db) {
    // The background worker is off: the test runs the queue itself, after subscribing.
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let (v0_before, echoed) = app.generate(Some("0"), &generate_body(11)).await;
    assert_eq!(echoed, 0);

    // Submit: 202, Location, queued.
    let response = app.post_edit(&edit_body("Prince William"), None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let edit: Value = response.json().await.unwrap();
    let id = edit["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/edits/{id}"));
    assert_eq!(edit["status"], "queued");
    assert_eq!(edit["created_by"], "test-admin");
    assert_eq!(app.get_json(&location).await["status"], "queued");

    // Subscribe, then let the worker run it.
    let events = app
        .request(Method::GET, &format!("/edits/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = tokio::spawn(read_events(events));
    assert_eq!(app.drain_queue().await, 1);
    let events = reader.await.unwrap();

    let statuses: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "status")
        .map(|(_, data)| data["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "running", "applied"], "{events:?}");
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| data)
        .collect();
    assert!(!progress.is_empty(), "no progress events: {events:?}");
    for (i, step) in progress.iter().enumerate() {
        assert_eq!(step["iteration"], i, "iterations arrive in order");
        assert!(step["loss"].as_f64().unwrap().is_finite());
        let p = step["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    let last = &events.last().unwrap().1;
    assert_eq!(last["version"], 1);

    let edit = app.get_json(&location).await;
    assert_eq!(edit["status"], "applied");
    assert_eq!(edit["version"], 1);
    assert_eq!(edit["attempts"], 1);
    assert!(edit["metrics"].is_object());
    let version = app.get_json("/versions/1").await;
    assert_eq!(version["kind"], "apply");
    assert_eq!(version["parent"], 0);
    assert_eq!(version["edit_id"], id.as_str());
    assert_eq!(version["layer"], 7);

    // Version 0 gives exactly the bytes it gave before; version 1 differs.
    let (v0_after, _) = app.generate(Some("0"), &generate_body(11)).await;
    assert_eq!(v0_after, v0_before, "version 0 changed after an edit");
    let (v1, echoed) = app.generate(Some("1"), &generate_body(11)).await;
    assert_eq!(echoed, 1);
    assert_ne!(
        v1, v0_before,
        "the edit did not change the edit prompt's image"
    );
    // No version and no `production` alias: the latest.
    let (latest, echoed) = app.generate(None, &generate_body(11)).await;
    assert_eq!((echoed, &latest), (1, &v1));

    // Revert version 1: version 2 is the base again, byte for byte.
    let response = app
        .request(Method::POST, "/versions/1/revert")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/versions/2");
    let revert: Value = response.json().await.unwrap();
    assert_eq!(
        (revert["number"].as_i64(), revert["kind"].as_str()),
        (Some(2), Some("revert"))
    );
    assert_eq!(revert["reverts_version"], 1);
    let (v2, _) = app.generate(Some("2"), &generate_body(11)).await;
    assert_eq!(
        v2, v0_before,
        "reverting the only edit must give the base model"
    );
    // A second revert of the same version conflicts; version 0 is not an edit.
    for target in [1, 0] {
        let response = app
            .request(Method::POST, &format!("/versions/{target}/revert"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT, "revert {target}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "revert_conflict");
    }

    // Aliases: production → 1 becomes the default version; removing it falls back to
    // the latest (2).
    let response = app
        .request(Method::PUT, "/aliases/production")
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (by_default, echoed) = app.generate(None, &generate_body(11)).await;
    assert_eq!((echoed, &by_default), (1, &v1));
    let (by_alias, echoed) = app.generate(Some("production"), &generate_body(11)).await;
    assert_eq!((echoed, &by_alias), (1, &v1));
    let aliases = app.get_json("/aliases").await;
    assert_eq!(aliases[0]["name"], "production");
    assert_eq!(aliases[0]["version"], 1);
    let response = app
        .request(Method::DELETE, "/aliases/production")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (_, echoed) = app.generate(None, &generate_body(11)).await;
    assert_eq!(echoed, 2);

    let versions = app.get_json("/versions").await;
    assert_eq!(versions["total"], 3);
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1, 0]);

    // The metrics saw all of it.
    let metrics = fetch_metrics(&app.client, &app.base).await;
    for name in [
        "refact_http_requests_total",
        "refact_generate_duration_seconds",
        "refact_edit_duration_seconds",
        "refact_edits_queued",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

async fn a_running_edit_cancelled_over_http_stops_and_leaves_no_version(db: Db) {
    let app = spawn_app(db, |_| {}).await;
    let mut body = edit_body("Prince William");
    body["hparams"] = json!({"max_steps": 10_000, "prob_threshold": 1.0});
    let id = app.submit_edit(&body).await;
    let events = app
        .request(Method::GET, &format!("/edits/{id}/events"))
        .send()
        .await
        .unwrap();
    // Cancel once the optimisation is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let edit = app.get_json(&format!("/edits/{id}")).await;
        if edit["status"] == "running" && !edit["progress"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never under way: {edit}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let response = app
        .request(Method::DELETE, &format!("/edits/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["cancel_requested"], true);

    let events = read_events(events).await;
    let last = &events.last().unwrap().1;
    assert_eq!(last["status"], "cancelled", "{last}");
    let iterations = events.iter().filter(|(name, _)| name == "progress").count();
    assert!(iterations < 10_000, "it ran to the end");
    let edit = app.get_json(&format!("/edits/{id}")).await;
    assert_eq!(edit["status"], "cancelled");
    assert!(edit["version"].is_null());
    assert_eq!(
        app.get_json("/versions").await["total"],
        1,
        "no version was written"
    );
    // A cancelled edit stays cancelled.
    let response = app
        .request(Method::DELETE, &format!("/edits/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
