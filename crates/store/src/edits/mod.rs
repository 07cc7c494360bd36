//! Edits: the requests to change the model, which are also the job queue.

mod submit;
mod worker;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db_types::{DbId, DbTime};
use crate::error::StoreError;

/// Where an edit is in its life. `queued → running → applied | failed | cancelled`;
/// a retryable failure sends a running edit back to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EditStatus {
    /// Waiting for a worker.
    Queued,
    /// Claimed by a worker that holds a lease on it.
    Running,
    /// Committed as a version.
    Applied,
    /// Gave up; `error` says why.
    Failed,
    /// Cancelled before it was applied.
    Cancelled,
}

impl EditStatus {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True once the edit can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Applied | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for EditStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EditStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "applied" => Ok(Self::Applied),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(StoreError::invalid(
                "status",
                format!("unknown edit status {other:?}"),
            )),
        }
    }
}

/// A request to queue an edit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEdit {
    /// The edit request (prompts, layer, hyper-parameters); opaque to the store.
    pub request: Value,
    /// Hex sha256 of the canonical request ([`crate::request_hash`]).
    pub request_hash: String,
    /// Client-chosen key: resubmitting the same key returns the first edit.
    pub idempotency_key: Option<String>,
    /// Name of the token that asked.
    pub created_by: String,
    /// How many times a worker may claim the edit before it fails.
    pub max_attempts: i32,
}

/// A stored edit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edit {
    /// Identifier.
    pub id: Uuid,
    /// Where it is in its life.
    pub status: EditStatus,
    /// The request as submitted.
    pub request: Value,
    /// Hex sha256 of the canonical request.
    pub request_hash: String,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// How many times a worker claimed it.
    pub attempts: i32,
    /// Claims allowed before it fails.
    pub max_attempts: i32,
    /// The worker holding (or that last held) the lease.
    pub lease_owner: Option<String>,
    /// When the current lease lapses; `None` unless running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// A cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// The last failure.
    pub error: Option<String>,
    /// Final metrics of the applied edit (steps, losses, probability).
    pub metrics: Option<Value>,
    /// Latest progress a worker reported (iteration, loss, probability).
    pub progress: Option<Value>,
    /// The version it created, once applied.
    pub version: Option<i64>,
    /// Name of the token that asked.
    pub created_by: String,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`crate::Store::insert_edit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    /// A new edit was queued.
    Created(Edit),
    /// The idempotency key was already used for the same request: that edit.
    Existing(Edit),
    /// The idempotency key was already used for a different request: that edit.
    KeyConflict(Edit),
}

impl InsertOutcome {
    /// The edit, whichever the outcome.
    pub fn edit(&self) -> &Edit {
        match self {
            Self::Created(edit) | Self::Existing(edit) | Self::KeyConflict(edit) => edit,
        }
    }
}

/// Which edits [`crate::Store::list_edits`] returns (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditFilter {
    /// Only edits in this status.
    pub status: Option<EditStatus>,
    /// Page size, 1..=[`crate::MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

impl Default for EditFilter {
    fn default() -> Self {
        Self {
            status: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// What a worker learns from a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The lease is ours and was extended.
    Held,
    /// Another worker took the edit, or it ended: stop without writing.
    Lost,
    /// The lease is ours (extended) but a cancel was asked: stop, then
    /// [`crate::Store::mark_cancelled`].
    CancelRequested,
}

/// How many edits wait and run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Edits waiting for a worker.
    pub queued: i64,
    /// Edits claimed by a worker (including ones whose lease lapsed).
    pub running: i64,
}

/// An `edits` row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct EditRow {
    id: DbId,
    status: String,
    request: Json<Value>,
    request_hash: String,
    idempotency_key: Option<String>,
    attempts: i32,
    max_attempts: i32,
    lease_owner: Option<String>,
    lease_expires_at: Option<DbTime>,
    cancel_requested: bool,
    error: Option<String>,
    metrics: Option<Json<Value>>,
    progress: Option<Json<Value>>,
    version: Option<i64>,
    created_by: String,
    created_at: DbTime,
    started_at: Option<DbTime>,
    finished_at: Option<DbTime>,
}

impl TryFrom<EditRow> for Edit {
    type Error = StoreError;

    fn try_from(row: EditRow) -> Result<Self, StoreError> {
        let status = row
            .status
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("edit status {:?}", row.status)))?;
        Ok(Self {
            id: row.id.0,
            status,
            request: row.request.0,
            request_hash: row.request_hash,
            idempotency_key: row.idempotency_key,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at.map(|t| t.0),
            cancel_requested: row.cancel_requested,
            error: row.error,
            metrics: row.metrics.map(|j| j.0),
            progress: row.progress.map(|j| j.0),
            version: row.version,
            created_by: row.created_by,
            created_at: row.created_at.0,
            started_at: row.started_at.map(|t| t.0),
            finished_at: row.finished_at.map(|t| t.0),
        })
    }
}

/// Converts an optional row, the shape most single-edit queries return.
pub(crate) fn edit_from(row: Option<EditRow>) -> Result<Option<Edit>, StoreError> {
    row.map(Edit::try_from).transpose()
}
