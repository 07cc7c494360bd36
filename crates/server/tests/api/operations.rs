//! What operators and automations rely on: alias history and protected aliases,
//! webhooks (signed, retried, recorded), the facts live in a version, the operations
//! summary, and the per-iteration series the dashboard draws its curves from.

use crate::gates::{gated_edit, leaking_negative, unrelated_negative};
use crate::helpers::{edit_body, generate_body, spawn_app, Db, TestApp};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use refact_server::settings::WebhookReceiver;
use refact_server::webhooks::sign;
use refact_store::Scope;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

on_both_databases!(
    a_protected_alias_moves_only_for_an_admin_or_a_passed_gate_and_every_move_is_history,
    webhooks_are_signed_retried_and_recorded,
    a_version_lists_its_live_facts_and_the_operations_summary_adds_up
);

async fn put_alias(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .put(app.url("/aliases/production"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn a_protected_alias_moves_only_for_an_admin_or_a_passed_gate_and_every_move_is_history(
    db: Db,
) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let (ci, _) = app
        .store
        .create_token("ci-bot", &[Scope::Edit, Scope::Read])
        .await
        .unwrap();
    // v1: no gate; v2: a gate that passes; v3: a gate that fails.
    app.submit_edit(&edit_body("Prince William")).await;
    app.submit_edit(&gated_edit(
        "Prince Harry",
        unrelated_negative("Prince Harry"),
    ))
    .await;
    app.submit_edit(&gated_edit(
        "Prince Andrew",
        leaking_negative("Prince Andrew"),
    ))
    .await;
    assert_eq!(app.drain_queue().await, 3);
    assert_eq!(app.get_json("/versions/2").await["gate_status"], "passed");
    assert_eq!(app.get_json("/versions/3").await["gate_status"], "failed");

    let (status, alias) = put_alias(&app, &ci, json!({"version": 1, "protected": true})).await;
    assert_eq!(status, StatusCode::OK, "{alias}");
    assert_eq!(alias["protected"], true);

    // Protected: the bot may not move it onto an ungated version...
    let (status, error) = put_alias(&app, &ci, json!({"version": 0})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "alias_protected");
    // ...nor force it onto a failed gate, nor lift the protection, nor remove it...
    let (status, error) = put_alias(&app, &ci, json!({"version": 3, "force": true})).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (StatusCode::CONFLICT, &json!("alias_protected"))
    );
    let (status, _) = put_alias(&app, &ci, json!({"version": 1, "protected": false})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let removal = app
        .client
        .delete(app.url("/aliases/production"))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(removal.status(), StatusCode::CONFLICT);
    // ...but onto a version whose gate passed, yes; and an admin may do anything.
    let (status, alias) = put_alias(&app, &ci, json!({"version": 2})).await;
    assert_eq!(
        (status, alias["version"].as_i64()),
        (StatusCode::OK, Some(2))
    );
    assert_eq!(alias["protected"], true, "a move keeps the protection");
    let (status, alias) = put_alias(&app, &app.token, json!({"version": 3, "force": true})).await;
    assert_eq!(
        (status, alias["version"].as_i64()),
        (StatusCode::OK, Some(3))
    );
    let removal = app
        .request(Method::DELETE, "/aliases/production")
        .send()
        .await
        .unwrap();
    assert_eq!(removal.status(), StatusCode::NO_CONTENT);

    let history = app.get_json("/aliases/production/history").await;
    let rows: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["from_version"].as_i64(),
                e["to_version"].as_i64(),
                e["actor"].as_str().unwrap().to_string(),
                e["forced"].as_bool().unwrap(),
            )
        })
        .collect();
    let row = |a: &str, f, t, who: &str, forced| (a.to_string(), f, t, who.to_string(), forced);
    assert_eq!(
        rows,
        vec![
            row("removed", Some(3), None, "test-admin", false),
            row("moved", Some(2), Some(3), "test-admin", true),
            row("moved", Some(1), Some(2), "ci-bot", false),
            row("moved", None, Some(1), "ci-bot", false),
        ],
        "newest first, refused moves absent"
    );
    let limited = app.get_json("/aliases/production/history?limit=1").await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let bad = app
        .request(Method::GET, "/aliases/production/history?limit=0")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let never = app
        .request(Method::GET, "/aliases/staging/history")
        .send()
        .await
        .unwrap();
    assert_eq!(
        never.status(),
        StatusCode::NOT_FOUND,
        "an alias that never existed"
    );
}

/// One request a receiver got: headers, body, arrival.
type Received = (HeaderMap, Vec<u8>, Instant);

/// A webhook receiver that answers 500 to its first `failures` requests, then 204, and
/// keeps every request's headers and body.
#[derive(Clone, Default)]
struct Receiver {
    failures: Arc<Mutex<usize>>,
    seen: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> AxumStatus {
    receiver
        .seen
        .lock()
        .unwrap()
        .push((headers, body.to_vec(), Instant::now()));
    let mut failures = receiver.failures.lock().unwrap();
    if *failures > 0 {
        *failures -= 1;
        AxumStatus::INTERNAL_SERVER_ERROR
    } else {
        AxumStatus::NO_CONTENT
    }
}

async fn start_receiver(failures: usize) -> (String, Receiver) {
    let receiver = Receiver {
        failures: Arc::new(Mutex::new(failures)),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn webhooks_are_signed_retried_and_recorded(db: Db) {
    const SECRET: &str = "receiver-secret";
    let (flaky_url, flaky) = start_receiver(2).await;
    let (edits_url, edits) = start_receiver(0).await;
    let app = spawn_app(db, |s| {
        s.worker.enabled = false;
        s.webhooks.first_retry_secs = 0.2;
        s.webhooks.receivers = vec![
            WebhookReceiver {
                url: flaky_url.clone(),
                secret: refact_server::secret::Secret::new(SECRET),
                events: vec!["alias.moved".into()],
            },
            WebhookReceiver {
                url: edits_url.clone(),
                secret: refact_server::secret::Secret::new("other"),
                events: vec!["edit.applied".into(), "edit.failed".into()],
            },
        ];
    })
    .await;
    app.submit_edit(&edit_body("Prince William")).await;
    assert_eq!(app.drain_queue().await, 1);
    let (status, _) = put_alias(&app, &app.token, json!({"version": 1})).await;
    assert_eq!(status, StatusCode::OK);

    // alias.moved: refused twice, delivered on the third attempt, after growing waits.
    wait_until("three attempts", || flaky.seen.lock().unwrap().len() == 3).await;
    let seen = flaky.seen.lock().unwrap().clone();
    let first_wait = seen[1].2 - seen[0].2;
    let second_wait = seen[2].2 - seen[1].2;
    assert!(first_wait >= Duration::from_millis(190), "{first_wait:?}");
    assert!(
        second_wait >= Duration::from_millis(380),
        "doubling: {second_wait:?}"
    );
    let ids: Vec<_> = seen
        .iter()
        .map(|(h, _, _)| h["x-refact-delivery"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one delivery, retried");
    for (headers, body, _) in &seen {
        assert_eq!(headers["x-refact-event"], "alias.moved");
        let signature = headers["x-hub-signature-256"].to_str().unwrap();
        assert_eq!(
            signature,
            sign(SECRET, body),
            "signed with the receiver's secret"
        );
        assert_ne!(signature, sign("other", body));
    }
    let payload: Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(payload["event"], "alias.moved");
    assert_eq!(payload["data"]["alias"], "production");
    assert_eq!(payload["data"]["from_version"], Value::Null);
    assert_eq!(payload["data"]["to_version"], 1);
    assert_eq!(payload["data"]["actor"], "test-admin");

    // edit.applied went to the other receiver only, at once.
    wait_until("edit.applied", || !edits.seen.lock().unwrap().is_empty()).await;
    let (headers, body, _) = edits.seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-refact-event"], "edit.applied");
    assert_eq!(
        headers["x-hub-signature-256"].to_str().unwrap(),
        sign("other", &body)
    );
    let applied: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(applied["data"]["version"], 1);
    assert_eq!(applied["data"]["request"]["target"], "Prince William");

    // Recorded: the admin sees both deliveries and how they went.
    let mut deliveries;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        deliveries = app.get_json("/webhooks/deliveries").await;
        let done = deliveries
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered");
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = deliveries.as_array().unwrap();
    assert_eq!(list.len(), 2, "{deliveries}");
    let moved = list.iter().find(|d| d["event"] == "alias.moved").unwrap();
    assert_eq!(moved["status"], "delivered", "{moved}");
    assert_eq!(moved["attempts"], 3);
    assert_eq!(moved["last_code"], 204);
    assert_eq!(moved["url"], flaky_url);
    let (ci, _) = app
        .store
        .create_token("reader", &[Scope::Read])
        .await
        .unwrap();
    let refused = app
        .client
        .get(app.url("/webhooks/deliveries"))
        .bearer_auth(ci)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "deliveries are for admins"
    );
}

async fn a_version_lists_its_live_facts_and_the_operations_summary_adds_up(db: Db) {
    let app = spawn_app(db, |s| {
        s.worker.enabled = false;
        s.replica_heartbeat_secs = 0.2;
    })
    .await;
    app.submit_edit(&edit_body("Prince William")).await;
    let batch = json!({
        "facts": [
            {"prompt": "The President of France", "source": "Macron", "target": "Le Pen"},
            {"prompt": "The King of Spain", "source": "Felipe", "target": "Leonor"},
        ],
        "hparams": {"max_steps": 3},
    });
    app.submit_edit(&batch).await;
    assert_eq!(app.drain_queue().await, 2);
    let targets = |facts: &Value| -> Vec<String> {
        facts
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["facts"].as_array().unwrap().clone())
            .map(|f| f["target"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        targets(&app.get_json("/versions/2/facts").await),
        ["Prince William", "Le Pen", "Leonor"]
    );
    assert_eq!(
        targets(&app.get_json("/versions/1/facts").await),
        ["Prince William"]
    );
    let revert = app
        .request(Method::POST, "/versions/1/revert")
        .send()
        .await
        .unwrap();
    assert_eq!(revert.status(), StatusCode::CREATED);
    assert_eq!(
        targets(&app.get_json("/versions/3/facts").await),
        ["Le Pen", "Leonor"],
        "reverted: gone"
    );
    assert!(app
        .get_json("/versions/0/facts")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    let missing = app
        .request(Method::GET, "/versions/9/facts")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Every iteration's loss and probability is stored with the metrics (the
    // dashboard's curves), per fact for a batch.
    let edits = app.get_json("/edits?status=applied").await;
    let single = edits["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["target"] == "Prince William")
        .unwrap();
    let metrics = &single["metrics"];
    assert_eq!(metrics["losses"].as_array().unwrap().len(), 4, "{metrics}");
    assert_eq!(metrics["probabilities"].as_array().unwrap().len(), 4);
    let batch_edit = edits["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["request"]["facts"].is_array())
        .unwrap();
    let facts = batch_edit["metrics"]["facts"].as_array().unwrap();
    assert_eq!(facts.len(), 2);
    for fact in facts {
        let losses = fact["losses"].as_array().unwrap();
        assert!(!losses.is_empty(), "{fact}");
        assert_eq!(
            losses.len(),
            fact["probabilities"].as_array().unwrap().len()
        );
    }

    app.generate(Some("2"), &generate_body(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let ops = loop {
        let ops = app.get_json("/operations").await;
        // Images are counted per process and reach the summary with the next heartbeat.
        // Other tests in this process render too: only "at least ours" holds.
        if series_sum(&ops, "images") >= 1 || Instant::now() > deadline {
            break ops;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(series_sum(&ops, "images") >= 1, "{}", ops["last_hour"]);
    assert!(series_sum(&ops, "batches") >= 1);
    assert_eq!(ops["last_hour"]["images"].as_array().unwrap().len(), 60);
    assert_eq!(series_sum(&ops, "edits_applied"), 2, "{}", ops["last_hour"]);
    assert_eq!(
        (ops["edits_queued"].as_i64(), ops["edits_running"].as_i64()),
        (Some(0), Some(0))
    );
    assert!(ops["recent_failures"].as_array().unwrap().is_empty());
    assert_eq!(ops["generation"]["queue_depth"], 0);
    let replicas = ops["replicas"].as_array().unwrap();
    let me = replicas
        .iter()
        .find(|r| r["this"] == true)
        .expect("this replica is listed");
    assert!(me["model"].as_str().unwrap().ends_with("tiny-sd"), "{me}");
    assert_eq!(me["worker"], false, "this test's server runs no worker");
}

fn series_sum(ops: &Value, key: &str) -> u64 {
    ops["last_hour"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}
