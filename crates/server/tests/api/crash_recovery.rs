//! Crash recovery: the server runs as a child process, is killed with SIGKILL while an
//! edit runs, and is started again; the edit ends applied exactly once, with no gap in
//! the version numbers.

use crate::helpers::{corpus, edit_body, fixture_model, test_database, Db};
use refact_store::{Scope, Store};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

on_both_databases!(an_edit_killed_mid_run_is_applied_exactly_once_after_a_restart);

/// A server child process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `refact serve` on the fixture model and waits until it answers.
async fn start_server(database_url: &str, data_dir: &Path, log_name: &str) -> Server {
    let port = free_port();
    let log = std::fs::File::create(data_dir.join(log_name)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_refact"))
        .arg("serve")
        .args(["--model", &fixture_model().display().to_string()])
        .args(["--database-url", database_url])
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &data_dir.join("data").display().to_string()])
        .args(["--device", "cpu", "--dtype", "f32"])
        // Not the repository's config/default.toml: the test sets what it needs.
        .current_dir(data_dir)
        .env_remove("REFACT_CONFIG")
        .env("REFACT_AUTH__ENABLED", "true")
        .env("REFACT_STATISTICS__CORPUS", corpus())
        .env("REFACT_STATISTICS__LINES", "200")
        .env("REFACT_WORKER__LEASE_SECS", "3")
        .env("REFACT_WORKER__HEARTBEAT_SECS", "0.5")
        .env("REFACT_WORKER__POLL_INTERVAL_SECS", "0.2")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start refact serve");
    let mut server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
            if response.status().is_success() {
                return server;
            }
        }
        let exited = server.child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(data_dir.join(log_name)).unwrap_or_default();
            panic!("the server did not become ready ({exited:?}):\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An edit that runs for seconds on the fixture: 1,500 iterations (a few ms each), with
/// a threshold the probability never exceeds.
fn slow_edit() -> Value {
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let edit = store.get_edit(id).await.unwrap().unwrap();
        if edit.status == refact_store::EditStatus::Running && edit.progress.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline && !edit.status.is_terminal(),
            "the edit never got under way: {edit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
