//! End-to-end tests: the real server (real engine, fixture model) driven over HTTP, each
//! scenario once on a fresh SQLite file and once on a fresh Postgres database.

mod child_server;
mod helpers;

/// Runs each `async fn name(db: Db)` as two tests: `on_sqlite::name`, `on_postgres::name`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Db::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Db::Postgres).await
                }
            )*
        }
    };
}

mod bad_requests;
mod batch_edits;
mod batching;
mod browser;
mod cli;
mod concurrency;
mod crash_recovery;
mod database_gone;
mod database_outage;
mod edit_lifecycle;
mod flaky_proxy;
mod gates;
mod operations;
mod push;
mod replicas;
mod sdxl;
mod shutdown;
mod slow_clients;
