//! A client that never finishes its request headers is disconnected after
//! `limits.header_read_timeout_secs`, and the server keeps answering everyone else.

use crate::helpers::{spawn_app, Db};
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_both_databases!(a_client_trickling_headers_is_disconnected);

async fn a_client_trickling_headers_is_disconnected(db: Db) {
    let app = spawn_app(db, |s| {
        s.worker.enabled = false;
        s.limits.header_read_timeout_secs = 1.0;
    })
    .await;
    let address = app.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();

    // Meanwhile the server answers others.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The slow connection is closed (EOF, or a reset) without an answer, within the
    // timeout plus scheduling slack; before the fix it stayed open indefinitely.
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buffer)).await;
    let waited = started.elapsed();
    assert!(
        read.is_ok(),
        "the connection was still open after {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s timeout"
    );
    let answer = String::from_utf8_lossy(&buffer);
    assert!(
        !answer.contains("200 OK"),
        "a partial request got an answer: {answer}"
    );
}
