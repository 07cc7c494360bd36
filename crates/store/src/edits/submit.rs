//! The client side of the queue: submitting, reading, listing and cancelling edits.

use sqlx::types::Json;
use uuid::Uuid;

use super::{edit_from, Edit, EditFilter, EditRow, InsertOutcome, NewEdit, QueueDepth};
use crate::db_types::{now, DbId, DbTime};
use crate::error::{Result, StoreError};
use crate::page::{sql_limits, Page};
use crate::store::Store;

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

// A duplicate key inserts nothing (and returns no row) instead of failing, so that
// concurrent submissions with one key race on the UNIQUE index, not on a prior read.
const INSERT_EDIT: &str = "\
    INSERT INTO edits (id, status, request, request_hash, idempotency_key, \
                       max_attempts, created_by, created_at) \
    VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (idempotency_key) DO NOTHING \
    RETURNING *";

// A queued edit is cancelled at once; a running one is flagged for its worker; a
// finished one is left alone. CASE reads the row as it was before the update.
const REQUEST_CANCEL: &str = "\
    UPDATE edits SET \
        status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
        finished_at = CASE WHEN status = 'queued' THEN $2 ELSE finished_at END, \
        cancel_requested = CASE WHEN status IN ('queued', 'running') THEN TRUE \
                                ELSE cancel_requested END \
    WHERE id = $1 \
    RETURNING *";

impl Store {
    /// Queues an edit. With an idempotency key already in use, returns that edit
    /// instead: `Existing` when the request hash matches, `KeyConflict` otherwise.
    /// Race-free: concurrent inserts with one key create exactly one row.
    pub async fn insert_edit(&self, new: NewEdit) -> Result<InsertOutcome> {
        validate(&new)?;
        let inserted: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as(INSERT_EDIT)
                .bind(DbId(Uuid::new_v4()))
                .bind(Json(&new.request))
                .bind(&new.request_hash)
                .bind(&new.idempotency_key)
                .bind(new.max_attempts)
                .bind(&new.created_by)
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        if let Some(row) = inserted {
            self.announce_work().await;
            return Ok(InsertOutcome::Created(row.try_into()?));
        }
        // Nothing inserted: the key exists (edits are never deleted, so it still does).
        let key = new.idempotency_key.as_deref().ok_or_else(|| {
            StoreError::Conflict("edit insert without an idempotency key was refused".into())
        })?;
        let existing = self.edit_by_key(key).await?.ok_or_else(|| {
            StoreError::Conflict(format!("idempotency key {key:?} vanished during insert"))
        })?;
        Ok(if existing.request_hash == new.request_hash {
            InsertOutcome::Existing(existing)
        } else {
            InsertOutcome::KeyConflict(existing)
        })
    }

    /// The edit with this id.
    pub async fn get_edit(&self, id: Uuid) -> Result<Option<Edit>> {
        let row: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM edits WHERE id = $1")
                .bind(DbId(id))
                .fetch_optional(pool)
                .await
        })?;
        edit_from(row)
    }

    /// Edits matching `filter`, newest first, with the total count.
    pub async fn list_edits(&self, filter: EditFilter) -> Result<Page<Edit>> {
        let (limit, offset) = sql_limits(filter.limit, filter.offset)?;
        let status = filter.status.map(|s| s.as_str());
        let (rows, total): (Vec<EditRow>, i64) = on_pool!(self, pool => {
            let rows = sqlx::query_as(
                "SELECT * FROM edits WHERE ($1 IS NULL OR status = $1) \
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
            )
            .bind(status)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(
                "SELECT COUNT(*) FROM edits WHERE ($1 IS NULL OR status = $1)",
            )
            .bind(status)
            .fetch_one(pool)
            .await?;
            (rows, total)
        });
        Ok(Page {
            items: rows
                .into_iter()
                .map(Edit::try_from)
                .collect::<Result<_>>()?,
            total,
            limit: filter.limit,
            offset: filter.offset,
        })
    }

    /// Cancels an edit: a queued one becomes `cancelled` at once; a running one gets
    /// `cancel_requested`, which its worker sees at its next heartbeat. A finished
    /// edit is returned unchanged. `None` if there is no such edit.
    pub async fn request_cancel(&self, id: Uuid) -> Result<Option<Edit>> {
        let row: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as(REQUEST_CANCEL)
                .bind(DbId(id))
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        edit_from(row)
    }

    /// How many edits are queued and running.
    pub async fn queue_depth(&self) -> Result<QueueDepth> {
        let counts: Vec<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM edits \
                 WHERE status IN ('queued', 'running') GROUP BY status",
            )
            .fetch_all(pool)
            .await
        })?;
        let mut depth = QueueDepth::default();
        for (status, count) in counts {
            match status.as_str() {
                "queued" => depth.queued = count,
                _ => depth.running = count,
            }
        }
        Ok(depth)
    }

    /// Edits that ended (`applied`, `failed`, `cancelled`) since `since`: their status
    /// and when, oldest first, at most 10,000 (the operations view's rates).
    pub async fn edits_finished_since(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>> {
        let rows: Vec<(String, DbTime)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT status, finished_at FROM edits \
                 WHERE finished_at IS NOT NULL AND finished_at >= $1 \
                 ORDER BY finished_at LIMIT 10000",
            )
            .bind(DbTime(since))
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(status, at)| (status, at.0))
            .collect())
    }

    async fn edit_by_key(&self, key: &str) -> Result<Option<Edit>> {
        let row: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM edits WHERE idempotency_key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
        })?;
        edit_from(row)
    }
}

fn validate(new: &NewEdit) -> Result<()> {
    if new.max_attempts < 1 {
        return Err(StoreError::invalid("max_attempts", "must be at least 1"));
    }
    if new.request_hash.is_empty() {
        return Err(StoreError::invalid("request_hash", "must not be empty"));
    }
    if let Some(key) = &new.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(StoreError::invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
    }
    Ok(())
}
