//! Tokens made with the CLI against the database a running server uses: scopes are
//! enforced over HTTP, and a token revoked with the CLI is refused at once.

use refact_e2e::{create_token, database, refact, run_ok, Client, Db, Server, ServerSpec};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_databases!(cli_tokens_carry_their_scopes_and_a_revoked_one_is_refused);

async fn cli_tokens_carry_their_scopes_and_a_revoked_one_is_refused(db: Db) {
    let db = database(db).await;
    let dir = tempfile::tempdir().unwrap();
    let reader = create_token(dir.path(), db.url(), "reader", &["read"]);
    let server = Server::start(ServerSpec {
        database_url: db.url(),
        dir: dir.path(),
        log_name: "server.log",
    })
    .await;
    let client = Client::new(&server, Some(&reader));

    // A token created while the server runs works at once.
    let editor = create_token(dir.path(), db.url(), "editor", &["edit", "read"]);
    let (status, body) = Client::new(&server, Some(&editor))
        .send_json(
            Method::PUT,
            "/aliases/production",
            Some(&json!({"version": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Read scope: reads, no edits, no images.
    assert_eq!(client.get_json("/aliases/production").await["version"], 0);
    let edit = json!({"prompt": "The Prince of Wales", "source": "Prince Charles", "target": "Prince William"});
    let (status, body) = client.send_json(Method::POST, "/edits", Some(&edit)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let image = json!({"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "seed": 1});
    let (status, body) = client
        .send_json(Method::POST, "/generate", Some(&image))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = Client::new(&server, Some("not-a-token"))
        .send_json(Method::GET, "/versions", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // `refact token list` shows both (never their values); revoke the reader.
    let list = run_ok(refact(dir.path()).args(["token", "list", "--database-url", db.url()]));
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(!list.contains(&reader) && !list.contains(&editor), "{list}");
    let reader_id = list
        .lines()
        .find(|line| line.split('\t').nth(1) == Some("reader"))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| panic!("no `reader` in {list}"))
        .to_string();
    run_ok(refact(dir.path()).args(["token", "revoke", "--database-url", db.url(), &reader_id]));
    let (status, body) = client.send_json(Method::GET, "/versions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = Client::new(&server, Some(&editor))
        .send_json(Method::GET, "/versions", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
