//! Migrations: idempotent, and the two schemas describe the same tables.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use refact_store::testing::TestDatabase;
use refact_store::Store;

/// How many migration files the backend has.
fn migration_files(backend: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend);
    std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count()
}

async fn applied_migrations(url: &str) -> anyhow::Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
    Ok(if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await?;
        let n = sqlx::query_scalar(SQL).fetch_one(&pool).await?;
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await?;
        let n = sqlx::query_scalar(SQL).fetch_one(&pool).await?;
        pool.close().await;
        n
    })
}

backend_test!(
    migrating_again_changes_nothing_and_keeps_data,
    |store, db| {
        store.ensure_base(common::FINGERPRINT).await?;
        store.migrate().await?;
        store.migrate().await?;
        let expected = migration_files(store.backend_name());
        assert!(expected >= 4);
        assert_eq!(applied_migrations(db.url()).await?, expected as i64);
        // A second process connecting (which migrates) sees the same data.
        let reopened = Store::connect(db.url()).await?;
        assert_eq!(reopened.head().await?.number, 0);
        reopened.ping().await?;
        reopened.close().await;
        assert_eq!(applied_migrations(db.url()).await?, expected as i64);
        Ok(())
    }
);

type Columns = BTreeMap<String, Vec<String>>;

async fn sqlite_columns(url: &str) -> anyhow::Result<Columns> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE '\\_%' ESCAPE '\\' \
           AND m.name NOT LIKE 'sqlite%' ORDER BY m.name, p.name",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(group(rows))
}

async fn postgres_columns(url: &str) -> anyhow::Result<Columns> {
    let pool = sqlx::PgPool::connect(url).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_%' \
         ORDER BY table_name, column_name",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(group(rows))
}

fn group(rows: Vec<(String, String)>) -> Columns {
    let mut columns = Columns::new();
    for (table, column) in rows {
        columns.entry(table).or_default().push(column);
    }
    columns
}

#[tokio::test]
async fn both_schemas_have_the_same_tables_and_columns() -> anyhow::Result<()> {
    let sqlite = TestDatabase::sqlite();
    let postgres = TestDatabase::postgres().await;
    sqlite.store().await.close().await;
    postgres.store().await.close().await;
    let sqlite_schema = sqlite_columns(sqlite.url()).await?;
    let postgres_schema = postgres_columns(postgres.url()).await?;
    assert_eq!(
        sqlite_schema.keys().collect::<Vec<_>>(),
        [
            "alias_events",
            "aliases",
            "api_tokens",
            "edits",
            "replicas",
            "version_deltas",
            "versions",
            "webhook_deliveries",
        ]
    );
    assert_eq!(sqlite_schema, postgres_schema);
    Ok(())
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused() {
    let result = Store::connect("mysql://localhost/db").await;
    assert!(matches!(
        result,
        Err(refact_store::StoreError::UnsupportedUrl(_))
    ));
}

#[tokio::test]
async fn an_in_memory_sqlite_store_works() -> anyhow::Result<()> {
    let store = Store::connect("sqlite::memory:").await?;
    let base = store.ensure_base(common::FINGERPRINT).await?;
    assert_eq!(store.head().await?, base);
    Ok(())
}
