//! A PostgreSQL outage under a running server (a proxy the test cuts): renders of
//! versions already loaded keep answering 200 with tokens confirmed before; requests
//! that need the database answer 503 with `Retry-After` within 2 s, `/readyz` within
//! 1 s; the edit that ran through the outage is applied afterwards, without a restart
//! and without spending an attempt.

use crate::crash_recovery::slow_edit;
use crate::flaky_proxy::FlakyProxy;
use crate::helpers::{edit_body, generate_body, spawn_app, wait_until_under_way, Db};
use refact_server::secret::Secret;
use refact_store::testing::{ADMIN_URL_ENV, DEFAULT_ADMIN_URL};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// How long the database stays away: 8 s (about two rounds of probes) in the suite; a
/// soak run sets `REFACT_SOAK_OUTAGE_SECS` (the 40 s; the edit's 10 s lease then
/// lapses, which a single replica survives: nobody else takes the edit over).
fn outage() -> Duration {
    let secs = std::env::var("REFACT_SOAK_OUTAGE_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_database_outage_loaded_versions_render_and_the_running_edit_applies_after() {
    let admin = std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let admin = Url::parse(&admin).unwrap();
    let upstream = (admin.host_str().unwrap(), admin.port().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = FlakyProxy::start(upstream).await;
    let app = spawn_app(Db::Postgres, |settings| {
        let mut url = Url::parse(settings.database_url.expose()).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(proxy.port())).unwrap();
        settings.database_url = Secret::new(url.as_str());
    })
    .await;

    // Version 1, loaded; the token confirmed by a first render.
    let first = app.submit_edit(&edit_body("Prince William")).await;
    let applied = app.wait_for_edit(&first, Duration::from_secs(120)).await;
    assert_eq!(applied["status"], "applied", "{applied}");
    let (before, _) = app.generate(Some("1"), &generate_body(5)).await;
    let running = app.submit_edit(&slow_edit()).await;
    let id = uuid::Uuid::parse_str(&running).unwrap();
    wait_until_under_way(&app.store, id).await;

    proxy.cut();
    let outage_ends = Instant::now() + outage();
    let mut rounds = 0;
    while Instant::now() < outage_ends {
        let (during, version) = app.generate(Some("1"), &generate_body(5)).await;
        assert_eq!((during == before, version), (true, 1), "the same image");
        for (method, path) in [
            (reqwest::Method::GET, "/versions"),
            (reqwest::Method::GET, "/edits"),
            (reqwest::Method::POST, "/edits"),
        ] {
            let started = Instant::now();
            let mut request = app.request(method.clone(), path);
            if method == reqwest::Method::POST {
                request = request.json(&edit_body("Prince George"));
            }
            let response = request.send().await.unwrap();
            let waited = started.elapsed();
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {path}"
            );
            assert!(response.headers().contains_key("retry-after"), "{path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable", "{path}: {body}");
            assert!(
                waited < Duration::from_secs(2),
                "{method} {path} took {waited:?}"
            );
        }
        let started = Instant::now();
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        rounds += 1;
    }
    assert!(rounds >= 2, "the outage was probed ({rounds} rounds)");

    proxy.restore().await;
    let done = app.wait_for_edit(&running, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "applied", "{done}");
    assert_eq!(done["attempts"], 1, "the outage spent no attempt: {done}");
    assert_eq!(done["version"], 2);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "recovered without a restart"
    );
}
