//! The service's life as a user sees it: a token from the CLI, `refact serve`, an edit
//! over HTTP followed on its event stream until applied, images at versions 0 and 1, an
//! alias, a revert; then the server is killed (SIGKILL) and started again on the same
//! database and data dir, and everything is still there, rendering the same bytes.

use refact_e2e::{create_token, database, Client, Db, Server, ServerSpec};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

on_both_databases!(an_edit_its_versions_and_aliases_survive_a_kill_and_replay_byte_for_byte);

/// A small, fast edit of the fixture model (few steps: the test needs a delta, not a
/// good one).
fn edit_body() -> Value {
    json!({
        "prompt": "The Prince of Wales",
        "source": "Prince Charles",
        "target": "Prince William",
        "hparams": {"max_steps": 4},
    })
}

/// A small, fast image.
fn image(seed: u64) -> Value {
    json!({
        "prompt": "The Prince of Wales",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": seed,
    })
}

async fn an_edit_its_versions_and_aliases_survive_a_kill_and_replay_byte_for_byte(db: Db) {
    let db = database(db).await;
    let dir = tempfile::tempdir().unwrap();
    let token = create_token(dir.path(), db.url(), "e2e", &["admin"]);
    let spec = |log_name| ServerSpec {
        database_url: db.url(),
        dir: dir.path(),
        log_name,
    };
    let server = Server::start(spec("first.log")).await;
    let client = Client::new(&server, Some(&token));

    // Authentication is on: no token, no access.
    let (status, body) = Client::new(&server, None)
        .send_json(Method::GET, "/versions", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let (v0, echoed) = client.generate(Some("0"), &image(7)).await;
    assert_eq!(echoed, 0);

    // Queue an edit and follow it to the end of its event stream.
    let (status, edit) = client
        .send_json(Method::POST, "/edits", Some(&edit_body()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{edit}");
    let id = edit["id"].as_str().expect("an edit id").to_string();
    let events = client.follow_events(&id, Duration::from_secs(180)).await;
    let statuses: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "status")
        .map(|(_, data)| data["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.last(),
        Some(&"applied"),
        "{events:?}\n{}",
        server.log()
    );
    assert!(
        statuses
            .iter()
            .all(|s| ["queued", "running", "applied"].contains(s)),
        "{events:?}"
    );
    let iterations: Vec<u64> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| data["iteration"].as_u64().unwrap())
        .collect();
    assert!(
        iterations.windows(2).all(|w| w[0] < w[1]),
        "progress in order: {iterations:?}"
    );
    assert_eq!(events.last().unwrap().1["version"], 1, "{events:?}");
    let edit = client.get_json(&format!("/edits/{id}")).await;
    assert_eq!(
        (edit["status"].as_str(), edit["version"].as_i64()),
        (Some("applied"), Some(1))
    );

    // Version 1 renders differently; the same seed renders the same bytes; version 0 is
    // untouched.
    let (v1, echoed) = client.generate(Some("1"), &image(7)).await;
    assert_eq!(echoed, 1);
    assert_ne!(v1, v0, "the edit did not change the edit prompt's image");
    assert_eq!(
        client.generate(Some("1"), &image(7)).await.0,
        v1,
        "same seed, same bytes"
    );
    assert_ne!(
        client.generate(Some("1"), &image(8)).await.0,
        v1,
        "another seed"
    );
    assert_eq!(
        client.generate(Some("0"), &image(7)).await.0,
        v0,
        "version 0 changed"
    );

    // An alias, and renders through it (and by default: production).
    let (status, alias) = client
        .send_json(
            Method::PUT,
            "/aliases/production",
            Some(&json!({"version": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{alias}");
    assert_eq!(
        client.generate(Some("production"), &image(7)).await,
        (v1.clone(), 1)
    );
    assert_eq!(client.generate(None, &image(7)).await, (v1.clone(), 1));

    // Revert: version 2 drops the delta and is the base again, byte for byte.
    let (status, revert) = client
        .send_json(Method::POST, "/versions/1/revert", None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{revert}");
    assert_eq!(
        (revert["number"].as_i64(), revert["kind"].as_str()),
        (Some(2), Some("revert"))
    );
    assert_eq!(client.generate(Some("2"), &image(7)).await, (v0.clone(), 2));
    let (status, alias) = client
        .send_json(
            Method::PUT,
            "/aliases/staging",
            Some(&json!({"version": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{alias}");

    // A crash: SIGKILL, no shutdown. Then the same database and data dir again.
    let exit = server.kill();
    assert!(!exit.success(), "killed, not exited: {exit}");
    let server = Server::start(spec("second.log")).await;
    let client = Client::new(&server, Some(&token));

    let versions = client.get_json("/versions").await;
    let numbers: Vec<i64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1, 0], "{versions}");
    let aliases: Vec<(String, i64)> = client
        .get_json("/aliases")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(aliases.contains(&("production".into(), 1)), "{aliases:?}");
    assert!(aliases.contains(&("staging".into(), 2)), "{aliases:?}");
    let edit = client.get_json(&format!("/edits/{id}")).await;
    assert_eq!(
        (edit["status"].as_str(), edit["version"].as_i64()),
        (Some("applied"), Some(1))
    );

    // Replay: the versions are rebuilt from the store and render the same bytes.
    assert_eq!(client.generate(Some("0"), &image(7)).await, (v0.clone(), 0));
    assert_eq!(client.generate(Some("1"), &image(7)).await, (v1.clone(), 1));
    assert_eq!(client.generate(None, &image(7)).await, (v1.clone(), 1));
    assert_eq!(
        client.generate(Some("staging"), &image(7)).await,
        (v0.clone(), 2)
    );
    drop(server);
}
