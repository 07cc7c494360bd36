//! Shared harness: every behaviour test runs once on SQLite and once on Postgres.
#![allow(dead_code)]

use refact_store::{NewEdit, Store};
use serde_json::{json, Value};

/// Defines `mod $name { sqlite(), postgres() }`: two tests running `$body` with
/// `$store` (a migrated `Store`) and `$db` (its `TestDatabase`) on each backend.
/// Multi-threaded runtimes, so concurrent tasks really run in parallel.
macro_rules! backend_test {
    ($name:ident, |$store:ident, $db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_variables)]
            async fn run(
                $store: refact_store::Store,
                $db: &refact_store::testing::TestDatabase,
            ) -> anyhow::Result<()> {
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() -> anyhow::Result<()> {
                let db = refact_store::testing::TestDatabase::sqlite();
                let store = db.store().await;
                let outcome = run(store.clone(), &db).await;
                store.close().await;
                outcome
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() -> anyhow::Result<()> {
                let db = refact_store::testing::TestDatabase::postgres().await;
                let store = db.store().await;
                let outcome = run(store.clone(), &db).await;
                store.close().await;
                outcome
            }
        }
    };
}

/// A plausible edit request; `n` makes it unique.
pub fn request(n: u32) -> Value {
    json!({
        "prompt": "The President of the United States",
        "source": "Donald Trump",
        "target": format!("Joe Biden {n}"),
        "layer": 7,
    })
}

/// A new edit for request `n`, with an optional idempotency key.
pub fn new_edit(n: u32, key: Option<&str>, max_attempts: i32) -> NewEdit {
    let request = request(n);
    NewEdit {
        request_hash: refact_store::request_hash(&request),
        request,
        idempotency_key: key.map(str::to_owned),
        created_by: "ci".to_owned(),
        max_attempts,
    }
}

/// Queues request `n` and returns the edit's id.
pub async fn queue(store: &Store, n: u32) -> anyhow::Result<uuid::Uuid> {
    Ok(store.insert_edit(new_edit(n, None, 3)).await?.edit().id)
}

/// A delta whose values encode `seed`, so versions can be told apart.
pub fn delta_values(seed: u32, len: usize) -> Vec<f32> {
    (0..len).map(|i| seed as f32 + i as f32 * 0.25).collect()
}

/// The fingerprint every test model has.
pub const FINGERPRINT: &str = "sha256:test-model";

/// The raw `u` and `v` column bytes of version `number`, read with plain sqlx.
pub async fn raw_delta_bytes(url: &str, number: i64) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    const SQL: &str = "SELECT u, v FROM version_deltas WHERE version = $1 AND position = 0";
    Ok(if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let row = sqlx::query_as(SQL).bind(number).fetch_one(&pool).await?;
        pool.close().await;
        row
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let row = sqlx::query_as(SQL).bind(number).fetch_one(&pool).await?;
        pool.close().await;
        row
    })
}

/// Every `api_tokens` row, each column as text, read with plain sqlx.
pub async fn raw_token_rows(url: &str) -> anyhow::Result<Vec<Vec<String>>> {
    const SQL: &str = "SELECT CAST(id AS TEXT), name, token_hash, scopes FROM api_tokens";
    let rows: Vec<(String, String, String, String)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let rows = sqlx::query_as(SQL).fetch_all(&pool).await?;
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows = sqlx::query_as(SQL).fetch_all(&pool).await?;
        pool.close().await;
        rows
    };
    Ok(rows
        .into_iter()
        .map(|(a, b, c, d)| vec![a, b, c, d])
        .collect())
}
