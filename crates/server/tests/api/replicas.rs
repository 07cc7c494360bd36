//! Three replicas on one PostgreSQL: a long edit competes with a stream of short ones
//! while the replica running it is stopped with SIGTERM and started again, three times,
//! as a rolling restart does. Every edit is applied exactly once with gapless versions,
//! and neither the restarts nor the moving head spend the long edit's attempts.

use crate::child_server::ChildServer;
use crate::crash_recovery::slow_edit;
use crate::helpers::{edit_body, test_database, Db};
use refact_store::{EditStatus, Scope, Store};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

const REPLICAS: usize = 3;
const RESTARTS: usize = 3;

/// Short edits submitted before each restart: 4 in the suite; a soak run sets
/// `REFACT_SOAK_SHORT_EDITS_PER_ROUND` (50: the 150 short edits).
fn short_edits_per_round() -> usize {
    std::env::var("REFACT_SOAK_SHORT_EDITS_PER_ROUND")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4)
}

async fn submit(client: &reqwest::Client, server: &ChildServer, token: &str, body: &Value) -> Uuid {
    let response = client
        .post(format!("{}/edits", server.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let edit: Value = response.json().await.unwrap();
    Uuid::parse_str(edit["id"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_edit_survives_rolling_restarts_among_short_edits() {
    let db = test_database(Db::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    let (token, _) = store
        .create_token("replica-test", &[Scope::Admin])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let replica_dir = |i: usize| {
        let path = dir.path().join(format!("replica-{i}"));
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let log = format!("start-{i}.log");
        replicas.push(ChildServer::start(db.url(), &replica_dir(i), &log, &[]).await);
    }

    let long = submit(&client, &replicas[0], &token, &slow_edit()).await;
    let mut edits = vec![long];
    for round in 0..RESTARTS {
        for n in 0..short_edits_per_round() {
            let server = &replicas[n % REPLICAS];
            let target = format!("Prince William {round}-{n}");
            edits.push(submit(&client, server, &token, &edit_body(&target)).await);
        }
        // Stop the replica that runs the long edit, once it is under way there.
        let deadline = Instant::now() + Duration::from_secs(120);
        let holder = loop {
            let edit = store.get_edit(long).await.unwrap().unwrap();
            assert!(!edit.status.is_terminal(), "finished too early: {edit:?}");
            let owner = edit.lease_owner.clone().unwrap_or_default();
            let holder = replicas
                .iter()
                .position(|r| owner.contains(&format!("-{}-", r.pid())));
            if let (EditStatus::Running, Some(holder)) = (edit.status, holder) {
                break holder;
            }
            assert!(Instant::now() < deadline, "never ran: {edit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stopping = replicas.remove(holder);
        let status = stopping.terminate().await;
        assert!(
            status.success(),
            "SIGTERM ends the server cleanly: {status:?}"
        );
        let edit = store.get_edit(long).await.unwrap().unwrap();
        assert!(
            matches!(edit.status, EditStatus::Queued | EditStatus::Running),
            "handed back, not failed: {edit:?}"
        );
        assert!(edit.attempts <= 1, "a restart spent an attempt: {edit:?}");
        let log = format!("restart-{round}.log");
        let restarted = ChildServer::start(db.url(), &replica_dir(holder), &log, &[]).await;
        replicas.insert(holder, restarted);
    }

    let deadline = Instant::now() + Duration::from_secs(300 + 10 * edits.len() as u64);
    for &id in &edits {
        let edit = loop {
            let edit = store.get_edit(id).await.unwrap().unwrap();
            if edit.status.is_terminal() {
                break edit;
            }
            assert!(Instant::now() < deadline, "not finished: {edit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(edit.status, EditStatus::Applied, "{edit:?}");
        if id == long {
            assert_eq!(
                edit.attempts, 1,
                "restarts and head moves are free: {edit:?}"
            );
        }
    }
    let head = store.head().await.unwrap().number;
    let versions = store.versions_up_to(head).await.unwrap();
    let numbers: Vec<i64> = versions.iter().map(|v| v.number).collect();
    let expected: Vec<i64> = (0..=edits.len() as i64).collect();
    assert_eq!(numbers, expected, "one version per edit, no gap");
    let mut applied: Vec<Uuid> = versions.iter().filter_map(|v| v.edit_id).collect();
    applied.sort();
    let mut submitted = edits.clone();
    submitted.sort();
    assert_eq!(applied, submitted, "each edit committed exactly once");
    store.close().await;
}
