//! End-to-end scenarios: the built `refact` binary, started and driven as a user does
//! (`refact token create`, `refact serve`, HTTP), on the fixture model
//! `tests/fixtures/tiny-sd`. Each scenario runs once on a fresh SQLite file and once on
//! a fresh PostgreSQL database (`REFACT_TEST_PG_URL`). The harness is `refact_e2e`
//! (`tests/harness/lib.rs`).

/// Runs each `async fn name(db: Db)` as two tests: `on_sqlite::name`, `on_postgres::name`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(refact_e2e::Db::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(refact_e2e::Db::Postgres).await
                }
            )*
        }
    };
}

mod lifecycle;
mod tokens;
