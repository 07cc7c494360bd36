//! When the database cannot be reached, requests that need it answer 503 `unavailable`
//! with `Retry-After`, quickly, instead of 500 after the pool's timeout; probes say so too.

use crate::helpers::{spawn_app, Db};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};

on_both_databases!(a_closed_database_answers_503_with_retry_after);

async fn a_closed_database_answers_503_with_retry_after(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let ok = app
        .client
        .get(app.url("/versions"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // The pool closed under the running server: every query now fails to connect.
    app.store.close().await;
    for path in ["/versions", "/edits", "/aliases"] {
        let started = Instant::now();
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(response.headers()["retry-after"], "2", "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{path}: {body}");
        assert!(waited < Duration::from_secs(2), "{path} took {waited:?}");
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}
