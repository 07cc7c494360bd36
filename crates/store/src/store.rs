//! The `Store` handle: connecting, migrating, and which backend it talks to.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// Longest a query waits for a PostgreSQL connection before it fails as unavailable.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::{Result, StoreError};
use crate::wakeup::WorkSignal;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Key of the Postgres advisory lock that serialises version creation ("rfs" + 1).
pub(crate) const VERSION_LOCK_KEY: i64 = 0x7266_7301;

/// How long a connection waits for a SQLite write lock held by another connection.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the two databases the store runs on.
pub(crate) enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

struct Inner {
    backend: Backend,
    work: WorkSignal,
}

/// A handle on the database: edits (the job queue), versions, aliases and API tokens.
/// Cheap to clone; all clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

impl Store {
    /// Opens the database at `url` (`postgres://...` or `sqlite://path`) and applies
    /// any pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let store = Self::open(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database at `url` without migrating it. A SQLite file is created if
    /// missing and opened in WAL mode with a busy timeout and foreign keys on;
    /// `sqlite::memory:` gives a private in-memory database on a single connection.
    pub async fn open(url: &str) -> Result<Self> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                // Fail fast while the database is gone: a request then answers 503 in
                // seconds instead of holding its client for half a minute.
                .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                .connect(url)
                .await?;
            Backend::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite(open_sqlite(url).await?)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                work: WorkSignal::default(),
            }),
        })
    }

    /// Applies pending migrations (`refact migrate`). Applying them twice is a no-op.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend() {
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Closes every connection; later calls fail. Waits for checked-out connections.
    pub async fn close(&self) {
        match self.backend() {
            Backend::Postgres(pool) => pool.close().await,
            Backend::Sqlite(pool) => pool.close().await,
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn work_signal(&self) -> &WorkSignal {
        &self.inner.work
    }
}

async fn open_sqlite(url: &str) -> Result<SqlitePool> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let pool_options = if in_memory {
        // Each connection to :memory: is its own database: keep exactly one, forever.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        // WAL lets readers run while one writer commits.
        options = options.journal_mode(SqliteJournalMode::Wal);
        SqlitePoolOptions::new().max_connections(8)
    };
    Ok(pool_options
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?)
}
