//! The harness: a real server (real engine on the fixture model) on port 0, over a fresh
//! database (a UUID-named Postgres database, dropped afterwards, or a SQLite temp file).

use refact_server::backend::engine::EngineBackend;
use refact_server::settings::Settings;
use refact_server::worker::EditWorker;
use refact_server::Application;
use refact_store::testing::TestDatabase;
use refact_store::{Scope, Store};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The tiny random-weight SD fixture (`tests/fixtures/tiny-sd`).
pub use refact_testkit::fixture_dir as fixture_model;

/// The caption corpus for layer statistics (`assets/coco_val2017_captions.txt`).
pub use refact_testkit::captions as corpus;

/// A fresh, empty database for one test (dropped with it).
pub async fn test_database(kind: Db) -> TestDatabase {
    match kind {
        Db::Sqlite => TestDatabase::sqlite(),
        Db::Postgres => TestDatabase::postgres().await,
    }
}

/// Settings for a test server: fixture model on the CPU, port 0, auth on, small
/// statistics corpus, short leases.
pub fn test_settings(database_url: &str, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        database_url: refact_server::secret::Secret::new(database_url),
        model: fixture_model().display().to_string(),
        data_dir: data_dir.to_path_buf(),
        device: "cpu".into(),
        dtype: "f32".into(),
        ..Settings::default()
    };
    settings.auth.enabled = true;
    settings.statistics.corpus = corpus().display().to_string();
    settings.statistics.lines = 200;
    settings.limits.max_width = 256;
    settings.limits.max_height = 256;
    settings.limits.max_steps = 50;
    settings.worker.lease_secs = 10.0;
    settings.worker.heartbeat_secs = 1.0;
    settings.worker.poll_interval_secs = 0.2;
    settings
}

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// An admin token.
    pub token: String,
    /// The server's store, to check what was (not) stored.
    pub store: Arc<Store>,
    /// A worker on the server's state (tests that disable the background worker drive
    /// the queue with it).
    pub worker: EditWorker<EngineBackend>,
    _db: TestDatabase,
    _data: TempDir,
}

/// Starts a server on a fresh database; `configure` adjusts the settings first.
pub async fn spawn_app(kind: Db, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = test_database(kind).await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(db.url(), data.path());
    configure(&mut settings);
    let app = Application::build(settings).await.expect("server builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.state().store.clone();
    let worker = app.edit_worker();
    tokio::spawn(app.run_until_stopped());
    let (token, _) = store
        .create_token("test-admin", &[Scope::Admin])
        .await
        .expect("admin token");
    TestApp {
        base,
        client: reqwest::Client::new(),
        token,
        store,
        worker,
        _db: db,
        _data: data,
    }
}

/// A small, fast edit of the fixture model (few steps: tests need a delta, not a good one).
pub fn edit_body(target: &str) -> Value {
    json!({
        "prompt": "The Prince of Wales",
        "source": "Prince Charles",
        "target": target,
        "hparams": {"max_steps": 4},
    })
}

/// A small, fast image.
pub fn generate_body(seed: u64) -> Value {
    json!({
        "prompt": "The Prince of Wales",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": seed,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An authenticated request builder.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// `POST /edits`, optionally with an idempotency key.
    pub async fn post_edit(&self, body: &Value, key: Option<&str>) -> Response {
        let mut request = self.request(reqwest::Method::POST, "/edits").json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    /// Submits an edit and returns its id.
    pub async fn submit_edit(&self, body: &Value) -> String {
        let response = self.post_edit(body, None).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let edit: Value = response.json().await.unwrap();
        edit["id"].as_str().unwrap().to_string()
    }

    /// `POST /generate` at `version` (None: the default); returns the PNG bytes and the
    /// echoed version.
    pub async fn generate(&self, version: Option<&str>, body: &Value) -> (Vec<u8>, i64) {
        let path = match version {
            Some(v) => format!("/generate?version={v}"),
            None => "/generate".into(),
        };
        let response = self
            .request(reqwest::Method::POST, &path)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "POST {path}");
        assert_eq!(response.headers()["content-type"], "image/png");
        let echoed = response.headers()["x-refact-version"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (response.bytes().await.unwrap().to_vec(), echoed)
    }

    /// Polls `GET /edits/{id}` until it reaches a terminal status.
    pub async fn wait_for_edit(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let edit = self.get_json(&format!("/edits/{id}")).await;
            if matches!(
                edit["status"].as_str(),
                Some("applied" | "failed" | "cancelled")
            ) {
                return edit;
            }
            assert!(
                Instant::now() < deadline,
                "edit {id} still {} after {timeout:?}",
                edit["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drains the queue with the test's own worker; returns how many edits it ran.
    pub async fn drain_queue(&self) -> usize {
        let mut count = 0;
        while self.worker.try_execute_one().await.unwrap().is_some() {
            count += 1;
        }
        count
    }

    /// Subscribes to edit `id`'s event stream, runs the queue (which must hold that one
    /// edit), and returns every event the stream carried to its end.
    pub async fn run_watching(&self, id: &str) -> Vec<(String, Value)> {
        let events = self
            .request(reqwest::Method::GET, &format!("/edits/{id}/events"))
            .send()
            .await
            .unwrap();
        let reader = tokio::spawn(read_events(events));
        assert_eq!(self.drain_queue().await, 1);
        reader.await.unwrap()
    }
}

/// Reads a Server-Sent Events response to its end: (event name, JSON data) pairs.
pub async fn read_events(response: Response) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

/// Waits (up to 60 s) until edit `id` runs and a heartbeat has stored its progress: the
/// optimisation is under way.
pub async fn wait_until_under_way(store: &Store, id: uuid::Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let edit = store.get_edit(id).await.unwrap().unwrap();
        if edit.status == refact_store::EditStatus::Running && edit.progress.is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline && !edit.status.is_terminal(),
            "the edit never got under way: {edit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `/metrics` text of the server at `base` (unauthenticated, as Prometheus scrapes).
pub async fn fetch_metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series (`name{label="value"}`) in a `/metrics` text, if present.
pub fn metric_value(metrics: &str, series: &str) -> Option<u64> {
    let prefix = format!("{series} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().unwrap())
}
