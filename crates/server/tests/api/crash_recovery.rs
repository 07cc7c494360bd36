//! Crash recovery: the server runs as a child process, is killed with SIGKILL while an
//! edit runs, and is started again; the edit ends applied exactly once, with no gap in
//! the version numbers.

use crate::child_server::ChildServer;
use crate::helpers::{edit_body, test_database, wait_until_under_way, Db};
use refact_store::{Scope, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

on_both_databases!(an_edit_killed_mid_run_is_applied_exactly_once_after_a_restart);

async fn start_server(database_url: &str, data_dir: &Path, log_name: &str) -> ChildServer {
    ChildServer::start(database_url, data_dir, log_name, &[]).await
}

/// An edit that runs for seconds on the fixture: 1,500 iterations (a few ms each), with
/// a threshold the probability never exceeds.
pub fn slow_edit() -> Value {
    let mut body = edit_body("Prince William");
    body["hparams"] = json!({"max_steps": 1500, "prob_threshold": 1.0});
    body
}

async fn an_edit_killed_mid_run_is_applied_exactly_once_after_a_restart(db: Db) {
    let db = test_database(db).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let (token, _) = store
        .create_token("crash-test", &[Scope::Admin])
        .await
        .unwrap();
    let client = reqwest::Client::new();

    let server = start_server(db.url(), dir.path(), "first.log").await;
    let response = client
        .post(format!("{}/edits", server.base))
        .bearer_auth(&token)
        .json(&slow_edit())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let edit: Value = response.json().await.unwrap();
    let id = uuid::Uuid::parse_str(edit["id"].as_str().unwrap()).unwrap();

    // Kill it once the optimisation is under way (a heartbeat stored its progress).
    wait_until_under_way(&store, id).await;
    drop(server); // SIGKILL
    let killed = store.get_edit(id).await.unwrap().unwrap();
    assert_eq!(
        killed.status,
        refact_store::EditStatus::Running,
        "the edit finished before the kill: the test proves nothing (make it slower)"
    );
    assert_eq!(store.head().await.unwrap().number, 0);

    // A new process reclaims it once the dead worker's lease lapses.
    let server = start_server(db.url(), dir.path(), "second.log").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let edit = loop {
        let edit = store.get_edit(id).await.unwrap().unwrap();
        if edit.status != refact_store::EditStatus::Running
            && edit.status != refact_store::EditStatus::Queued
        {
            break edit;
        }
        assert!(
            Instant::now() < deadline,
            "the edit was not recovered: {edit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(edit.status, refact_store::EditStatus::Applied, "{edit:?}");
    assert_eq!(edit.attempts, 2, "one attempt killed, one that applied it");
    assert_eq!(edit.version, Some(1));

    let versions = store
        .versions_up_to(store.head().await.unwrap().number)
        .await
        .unwrap();
    let numbers: Vec<i64> = versions.iter().map(|v| v.number).collect();
    assert_eq!(numbers, [0, 1], "no gap, no duplicate");
    assert_eq!(versions[1].edit_id, Some(id));

    // The restarted server serves the recovered version.
    let response = client
        .get(format!("{}/versions/1", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    drop(server);
    store.close().await;
}
