//! Migration 0006 moves every stored delta into `version_deltas`. Starting from a
//! database made by the schema before it (migrations 0001–0005) holding edits, apply
//! versions and a revert, every version's deltas read after the migration are the
//! factors stored before it, bit for bit, so every version renders as it did.

#[allow(unused_macros)] // backend_test: this file runs its own two tests
#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use refact_store::testing::TestDatabase;
use refact_store::{Store, StoredDelta};
use sqlx::migrate::Migrator;

/// The migrations before 0006, copied into a folder of their own.
fn migrations_before_0006(backend: &str) -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0006" {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    let path = dir.path().to_owned();
    (dir, path)
}

/// The old rows: version 1..=3 apply (layer 7, 7, 9), version 4 reverts 2.
fn old_deltas() -> Vec<(i64, i32, Vec<f32>, Vec<f32>)> {
    (1..=3)
        .map(|n| {
            let layer = if n == 3 { 9 } else { 7 };
            (
                n,
                layer,
                common::delta_values(n as u32, 12),
                common::delta_values(n as u32 + 100, 8),
            )
        })
        .collect()
}

fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the old schema's rows with plain SQL (what a server before 0006 wrote).
macro_rules! write_old_rows {
    ($pool:expr, $id:expr, $time:expr) => {{
        let pool = $pool;
        sqlx::query(
            "INSERT INTO versions (number, kind, model_fingerprint, created_at) \
             VALUES (0, 'base', $1, $2)",
        )
        .bind(common::FINGERPRINT)
        .bind($time)
        .execute(&pool)
        .await?;
        for (number, layer, u, v) in old_deltas() {
            let id = $id(number);
            sqlx::query(
                "INSERT INTO edits (id, status, request, request_hash, max_attempts, version, \
                                    created_by, created_at) \
                 VALUES ($1, 'applied', '{}', 'hash', 3, $2, 'test', $3)",
            )
            .bind(id.clone())
            .bind(number)
            .bind($time)
            .execute(&pool)
            .await?;
            sqlx::query(
                "INSERT INTO versions (number, parent, kind, edit_id, layer, u, v, \
                                       model_fingerprint, created_at) \
                 VALUES ($1, $2, 'apply', $3, $4, $5, $6, $7, $8)",
            )
            .bind(number)
            .bind(number - 1)
            .bind(id)
            .bind(layer)
            .bind(le(&u))
            .bind(le(&v))
            .bind(common::FINGERPRINT)
            .bind($time)
            .execute(&pool)
            .await?;
        }
        sqlx::query(
            "INSERT INTO versions (number, parent, kind, reverts_version, model_fingerprint, \
                                   created_at) VALUES (4, 3, 'revert', 2, $1, $2)",
        )
        .bind(common::FINGERPRINT)
        .bind($time)
        .execute(&pool)
        .await?;
        pool.close().await;
    }};
}

/// The deltas live in each version, by the history's own rule (apply adds, revert
/// removes), from the deltas each apply version holds.
fn live(held: &std::collections::BTreeMap<i64, Vec<StoredDelta>>) -> Vec<Vec<StoredDelta>> {
    let mut live: Vec<(i64, StoredDelta)> = Vec::new();
    let mut per_version = vec![Vec::new()];
    for number in 1..=4 {
        if number == 4 {
            live.retain(|(n, _)| *n != 2);
        } else {
            live.extend(held[&number].iter().cloned().map(|d| (number, d)));
        }
        per_version.push(live.iter().map(|(_, d)| d.clone()).collect());
    }
    per_version
}

async fn check_migrated(url: &str) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    assert_eq!(store.head().await?.number, 4);
    let held = store.version_deltas(0, 4).await?;
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (number, layer, u, v) in old_deltas() {
        let deltas = &held[&number];
        assert_eq!(deltas.len(), 1, "version {number}");
        let d = &deltas[0];
        assert_eq!((d.encoder.as_str(), d.layer, d.rank), ("text", layer, 1));
        assert_eq!(bits(&d.u), bits(&u), "version {number}: u");
        assert_eq!(bits(&d.v), bits(&v), "version {number}: v");
    }
    // Each version's live deltas are the ones the old rows made.
    let old: std::collections::BTreeMap<i64, Vec<StoredDelta>> = old_deltas()
        .into_iter()
        .map(|(n, layer, u, v)| (n, vec![StoredDelta::rank_one(layer, u, v)]))
        .collect();
    assert_eq!(live(&held), live(&old));
    assert_eq!(live(&held)[4].len(), 2, "version 4 keeps versions 1 and 3");
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn sqlite_versions_made_before_0006_keep_their_deltas() -> anyhow::Result<()> {
    let db = TestDatabase::sqlite();
    let (_dir, old) = migrations_before_0006("sqlite");
    let options = db
        .url()
        .parse::<sqlx::sqlite::SqliteConnectOptions>()?
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    Migrator::new(old.as_path()).await?.run(&pool).await?;
    let id = |n: i64| format!("00000000-0000-4000-8000-{n:012}");
    write_old_rows!(pool, id, "2026-11-30T12:00:00.000000Z");
    check_migrated(db.url()).await
}

#[tokio::test]
async fn postgres_versions_made_before_0006_keep_their_deltas() -> anyhow::Result<()> {
    let db = TestDatabase::postgres().await;
    let (_dir, old) = migrations_before_0006("postgres");
    let pool = sqlx::PgPool::connect(db.url()).await?;
    Migrator::new(old.as_path()).await?.run(&pool).await?;
    let id = |n: i64| uuid::Uuid::from_u128(n as u128);
    write_old_rows!(pool, id, chrono::Utc::now());
    check_migrated(db.url()).await
}
