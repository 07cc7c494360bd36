//! Throwaway databases for integration tests (cargo feature `testing`), for this
//! crate's tests and the server's:
//!
//! ```no_run
//! # async fn demo() {
//! use refact_store::testing::TestDatabase;
//! let db = TestDatabase::postgres().await; // or TestDatabase::sqlite()
//! let store = db.store().await;            // connected and migrated
//! // ... the database is dropped when `db` is.
//! # }
//! ```
//!
//! Postgres: a fresh database named by a UUID on the server at `REFACT_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). An unreachable server is a
//! test failure, never a skip.

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use uuid::Uuid;

use crate::Store;

/// Environment variable naming the Postgres admin URL tests create databases with.
pub const ADMIN_URL_ENV: &str = "REFACT_TEST_PG_URL";

/// Admin URL used when [`ADMIN_URL_ENV`] is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for as long as this value: a SQLite file in a temp dir, or
/// a Postgres database dropped (`WITH (FORCE)`) on drop.
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

enum Kind {
    Sqlite { _dir: TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A new SQLite database file in a fresh temp dir.
    ///
    /// # Panics
    /// If no temp dir can be created.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir for the SQLite test database");
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        Self {
            url,
            kind: Kind::Sqlite { _dir: dir },
        }
    }

    /// A new, empty Postgres database.
    ///
    /// # Panics
    /// If the Postgres server cannot be reached or refuses `CREATE DATABASE`.
    pub async fn postgres() -> Self {
        let admin_url =
            std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = format!("refact_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "Postgres is needed for this test and unreachable at {admin_url} ({e}); \
                 start it (pg_ctlcluster --skip-systemctl-redirect <version> main start) \
                 or set {ADMIN_URL_ENV}"
            )
        });
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        let _ = admin.close().await;
        Self {
            url: database_url(&admin_url, &name),
            kind: Kind::Postgres { admin_url, name },
        }
    }

    /// The database URL, for [`Store::connect`] or a raw sqlx connection.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on this database, migrated.
    ///
    /// # Panics
    /// If connecting or migrating fails.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop may run inside a Tokio runtime (where blocking on one is forbidden) or
        // while unwinding: use a private runtime on a plain thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test database {}: {dropped:?}",
                self.url
            );
        }
    }
}

/// `admin_url` with its database name replaced by `name` (query string kept).
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/admin?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
