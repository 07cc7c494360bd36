//! Stopping work that nobody waits for any more: SIGTERM while an edit runs (it goes
//! back to the queue without spending its attempt, event streams end with a `shutdown`
//! event, the process exits cleanly), and a render whose client left (it stops at its
//! next denoising step).

use crate::child_server::ChildServer;
use crate::crash_recovery::slow_edit;
use crate::helpers::{
    fetch_metrics, metric_value, read_events, test_database, wait_until_under_way, Db,
};
use refact_store::{EditStatus, Scope, Store};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn started(
    env: &[(&str, &str)],
) -> (
    ChildServer,
    Store,
    String,
    tempfile::TempDir,
    refact_store::testing::TestDatabase,
) {
    let db = test_database(Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    let (token, _) = store
        .create_token("shutdown-test", &[Scope::Admin])
        .await
        .unwrap();
    let server = ChildServer::start(db.url(), dir.path(), "serve.log", env).await;
    (server, store, token, dir, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_edit_back_and_ends_event_streams_with_a_shutdown_event() {
    let (server, store, token, _dir, _db) = started(&[("REFACT_SHUTDOWN_GRACE_SECS", "1")]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/edits", server.base))
        .bearer_auth(&token)
        .json(&slow_edit())
        .send()
        .await
        .unwrap();
    let edit: Value = response.json().await.unwrap();
    let id = Uuid::parse_str(edit["id"].as_str().unwrap()).unwrap();
    wait_until_under_way(&store, id).await;
    let stream = client
        .get(format!("{}/edits/{id}/events", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), reqwest::StatusCode::OK);
    let reader = tokio::spawn(read_events(stream));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let events = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ended with the server")
        .unwrap();
    let (name, data) = events.last().expect("events");
    assert_eq!(name, "shutdown", "{events:?}");
    assert_eq!(data["code"], "shutting_down");
    assert!(
        events.iter().any(|(name, _)| name == "progress"),
        "{events:?}"
    );
    let edit = store.get_edit(id).await.unwrap().unwrap();
    assert_eq!(edit.status, EditStatus::Queued, "handed back: {edit:?}");
    assert_eq!(edit.attempts, 0, "the shutdown spent no attempt");
    assert_eq!(edit.lease_expires_at, None, "nothing to wait for");
}

/// The `refact_generate_duration_seconds` count for `outcome`, from `/metrics`.
async fn renders_ended(client: &reqwest::Client, server: &ChildServer, outcome: &str) -> u64 {
    let text = fetch_metrics(client, &server.base).await;
    let series = format!("refact_generate_duration_seconds_count{{outcome=\"{outcome}\"}}");
    metric_value(&text, &series).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_whose_client_left_stops_at_its_next_step() {
    let (server, _store, token, _dir, _db) = started(&[]).await;
    let client = reqwest::Client::new();
    // Many seconds of denoising on the fixture; the client gives up after one.
    let long =
        json!({"prompt": "a long render", "width": 512, "height": 512, "steps": 100, "seed": 1});
    let gave_up = client
        .post(format!("{}/generate", server.base))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(1))
        .json(&long)
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while renders_ended(&client, &server, "cancelled").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the render went on:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(renders_ended(&client, &server, "ok").await, 0);
    // The generation thread is free for the next request.
    let small = json!({"prompt": "next", "width": 64, "height": 64, "steps": 2, "seed": 1});
    let response = client
        .post(format!("{}/generate", server.base))
        .bearer_auth(&token)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}
