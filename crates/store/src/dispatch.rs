//! The two macros that let one SQL text serve both backends.
//!
//! Why an enum of pools and macros rather than a trait with two impls: almost every
//! query is the same text on Postgres and SQLite (both accept `$1` placeholders,
//! `RETURNING`, `ON CONFLICT`), and the few column types that differ are hidden by
//! [`crate::db_types`]. A trait would need every query written twice (or generic code
//! with long sqlx bounds); here the body is written once and the macro compiles it once
//! per pool type. The statements that really differ (claiming with `SKIP LOCKED`, the
//! version lock) match on [`crate::store::Backend`] explicitly.

/// Evaluates `$body` with `$pool` bound to whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Postgres($pool) => $body,
            $crate::store::Backend::Sqlite($pool) => $body,
        }
    };
}

/// Evaluates `$body` inside a transaction that holds the store-wide version lock, so
/// that version numbers are handed out one writer at a time, in order, with no gaps.
/// Postgres: a transaction-scoped advisory lock; SQLite: `BEGIN IMMEDIATE` (the
/// database write lock). `?` inside the body drops the transaction, which rolls back;
/// otherwise it commits.
macro_rules! in_version_transaction {
    ($store:expr, $tx:ident => $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind($crate::store::VERSION_LOCK_KEY)
                    .execute(&mut *$tx)
                    .await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
            $crate::store::Backend::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let value = $body;
                $tx.commit().await?;
                value
            }
        }
    };
}
