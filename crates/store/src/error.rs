//! The store's one error type.

/// Everything the store can fail with. The server maps these to HTTP statuses
/// (`NotFound` → 404, `Conflict`/`HeadMoved` → 409, `Invalid` → 422, the rest → 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (e.g. "version 7", "alias staging").
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts what is stored (already reverted, other model, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A version was to be created on `expected`, but the head is now `head`.
    #[error("head moved: expected version {expected}, head is {head}")]
    HeadMoved {
        /// The head the caller expected.
        expected: i64,
        /// The actual head.
        head: i64,
    },
    /// An argument is malformed (empty name, zero attempts, bad alias, ...).
    #[error("invalid {field}: {message}")]
    Invalid {
        /// Which argument.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The database URL names no supported backend.
    #[error("unsupported database url {0:?}: expected postgres://... or sqlite://...")]
    UnsupportedUrl(String),
    /// A stored value cannot be read back (unknown status, blob of odd length, ...).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// True when the database could not be reached (no connection within the pool's
    /// acquire timeout, a broken or closed connection): the request may succeed later,
    /// and nothing about it was wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
            )
        )
    }

    /// A call abandoned by its caller after a time budget: counts as unavailable, as
    /// the pool's own timeout does.
    pub fn timed_out() -> Self {
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }

    /// Shorthand for [`StoreError::Invalid`].
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
