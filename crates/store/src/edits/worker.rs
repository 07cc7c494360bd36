//! The worker side of the queue: claiming edits under a lease, heartbeats, and the
//! ends of an attempt that do not create a version (cancel, failure).
//!
//! A worker id must be unique per running worker (e.g. host + process + uuid): the
//! lease is checked by comparing it. Lease times come from the worker's clock, so
//! workers on several machines need clocks synchronised well within a lease.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{edit_from, Edit, EditRow, LeaseState};
use crate::db_types::{now, now_plus, DbId, DbTime};
use crate::error::{Result, StoreError};
use crate::store::{Backend, Store};

// Running edits whose worker vanished and which may not be retried: a pending cancel
// wins, otherwise they fail. Runs before every claim.
const REAP_EXPIRED: &str = "\
    UPDATE edits SET \
        status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, \
        error = CASE WHEN cancel_requested THEN error \
                     ELSE 'lease expired after ' || CAST(attempts AS TEXT) || ' attempts' END, \
        lease_expires_at = NULL, \
        finished_at = $1 \
    WHERE status = 'running' AND lease_expires_at < $1 \
      AND (attempts >= max_attempts OR cancel_requested)";

/// The claim statement; `$lock` is the row-locking clause of the inner select.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE edits SET \
                 status = 'running', lease_owner = $1, lease_expires_at = $2, \
                 attempts = attempts + 1, started_at = $3, turn_requested = FALSE \
             WHERE id = ( \
                 SELECT id FROM edits \
                 WHERE (status = 'queued' OR (status = 'running' AND lease_expires_at < $3)) \
                   AND attempts < max_attempts AND NOT cancel_requested \
                 ORDER BY created_at, id \
                 LIMIT 1",
            $lock,
            ") RETURNING *"
        )
    };
}

// Postgres: concurrent claimers skip rows another claimer has locked instead of
// waiting for them, so each gets a different edit in one statement.
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");
// SQLite: the whole claim runs under BEGIN IMMEDIATE, one writer at a time.
const CLAIM_SQLITE: &str = claim_sql!("");

const HEARTBEAT: &str = "\
    UPDATE edits SET lease_expires_at = $3, progress = COALESCE($4, progress) \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
    RETURNING cancel_requested";

const MARK_CANCELLED: &str = "\
    UPDATE edits SET status = 'cancelled', lease_expires_at = NULL, finished_at = $3 \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
    RETURNING *";

// $4: retryable. A retry goes back to the queue unless attempts are used up or a
// cancel is pending.
const FAIL_ATTEMPT: &str = "\
    UPDATE edits SET \
        status = CASE WHEN cancel_requested THEN 'cancelled' \
                      WHEN $4 AND attempts < max_attempts THEN 'queued' \
                      ELSE 'failed' END, \
        finished_at = CASE WHEN NOT cancel_requested AND $4 AND attempts < max_attempts \
                           THEN NULL ELSE $5 END, \
        error = $3, \
        lease_expires_at = NULL \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
    RETURNING *";

// Hands a running edit back to the queue without spending its attempt (the server is
// stopping: nothing went wrong with the edit). A pending cancel wins.
const RELEASE: &str = "\
    UPDATE edits SET \
        status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, \
        attempts = CASE WHEN cancel_requested THEN attempts ELSE attempts - 1 END, \
        finished_at = CASE WHEN cancel_requested THEN $3 ELSE NULL END, \
        lease_expires_at = NULL, turn_requested = FALSE \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
    RETURNING *";

const REQUEST_TURN: &str = "\
    UPDATE edits SET turn_requested = TRUE \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 \
    RETURNING id";

impl Store {
    /// Claims the oldest queued edit, or a running one whose lease lapsed (its worker
    /// crashed), if it has attempts left: it becomes `running` under a lease of
    /// `lease` for `worker_id`, with `attempts + 1`. Lapsed edits with no attempts left
    /// become `failed` ("lease expired after N attempts"). `None` when nothing is
    /// claimable. Two workers never claim the same edit.
    pub async fn claim_next_edit(&self, worker_id: &str, lease: Duration) -> Result<Option<Edit>> {
        check_worker(worker_id)?;
        let now = DbTime(now());
        let expires = DbTime(now_plus(lease)?);
        let row: Option<EditRow> = match self.backend() {
            Backend::Postgres(pool) => {
                sqlx::query(REAP_EXPIRED).bind(now).execute(pool).await?;
                sqlx::query_as(CLAIM_POSTGRES)
                    .bind(worker_id)
                    .bind(expires)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?
            }
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(REAP_EXPIRED)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query_as(CLAIM_SQLITE)
                    .bind(worker_id)
                    .bind(expires)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row
            }
        };
        edit_from(row)
    }

    /// Extends `worker_id`'s lease on a running edit to `lease` from now, and records
    /// `progress` if given. Tells the worker whether to go on.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        worker_id: &str,
        lease: Duration,
        progress: Option<Value>,
    ) -> Result<LeaseState> {
        let expires = DbTime(now_plus(lease)?);
        let cancel_requested: Option<bool> = on_pool!(self, pool => {
            sqlx::query_scalar(HEARTBEAT)
                .bind(DbId(id))
                .bind(worker_id)
                .bind(expires)
                .bind(progress.as_ref().map(Json))
                .fetch_optional(pool)
                .await
        })?;
        Ok(match cancel_requested {
            None => LeaseState::Lost,
            Some(true) => LeaseState::CancelRequested,
            Some(false) => LeaseState::Held,
        })
    }

    /// Ends `worker_id`'s attempt as `cancelled`. `None` (nothing written) when the
    /// worker no longer holds the edit.
    pub async fn mark_cancelled(&self, id: Uuid, worker_id: &str) -> Result<Option<Edit>> {
        self.end_attempt(MARK_CANCELLED, id, worker_id).await
    }

    /// Ends `worker_id`'s attempt with `error`: back to `queued` when `retryable` and
    /// attempts remain, else `failed` (`cancelled` if a cancel is pending). `None`
    /// (nothing written) when the worker no longer holds the edit.
    pub async fn fail_attempt(
        &self,
        id: Uuid,
        worker_id: &str,
        error: &str,
        retryable: bool,
    ) -> Result<Option<Edit>> {
        let row: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as(FAIL_ATTEMPT)
                .bind(DbId(id))
                .bind(worker_id)
                .bind(error)
                .bind(retryable)
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        self.announce_if_queued(edit_from(row)?).await
    }

    /// Gives `worker_id`'s running edit back to the queue at once, its attempt not
    /// counted: for a server that stops, so that another replica can take the edit
    /// without waiting for the lease to lapse. `cancelled` instead if a cancel is
    /// pending. `None` (nothing written) when the worker no longer holds the edit.
    pub async fn release_edit(&self, id: Uuid, worker_id: &str) -> Result<Option<Edit>> {
        let edit = self.end_attempt(RELEASE, id, worker_id).await?;
        self.announce_if_queued(edit).await
    }

    /// Asks for the head's next turn for `worker_id`'s running edit, after its parent
    /// moved while it computed. While its lease lives, commits of edits that asked
    /// later (or not at all) answer `TurnTaken`, so the head stays where this edit
    /// computes on, and edits that asked commit in queue order: a long edit cannot
    /// lose forever to a stream of short ones. The turn ends with the attempt (commit,
    /// failure, release or a lapsed lease). False when the worker no longer holds the
    /// edit.
    pub async fn request_turn(&self, id: Uuid, worker_id: &str) -> Result<bool> {
        let held: Option<DbId> = on_pool!(self, pool => {
            sqlx::query_scalar(REQUEST_TURN)
                .bind(DbId(id))
                .bind(worker_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(held.is_some())
    }

    /// The edit whose turn comes before edit `id` commits, if any (see
    /// [`Store::request_turn`]).
    pub async fn turn_ahead_of(&self, id: Uuid) -> Result<Option<Uuid>> {
        let ahead: Option<DbId> = on_pool!(self, pool => {
            sqlx::query_scalar(crate::versions::TURN_AHEAD)
                .bind(DbId(id))
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        Ok(ahead.map(|DbId(id)| id))
    }
}

impl Store {
    /// Runs `sql`, an end of `worker_id`'s attempt bound as ($1 id, $2 worker, $3 now).
    /// `None` when the worker no longer holds the edit.
    async fn end_attempt(&self, sql: &str, id: Uuid, worker_id: &str) -> Result<Option<Edit>> {
        let row: Option<EditRow> = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(DbId(id))
                .bind(worker_id)
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        edit_from(row)
    }

    /// Wakes idle workers when an attempt's end put `edit` back in the queue.
    async fn announce_if_queued(&self, edit: Option<Edit>) -> Result<Option<Edit>> {
        if edit
            .as_ref()
            .is_some_and(|e| e.status == super::EditStatus::Queued)
        {
            self.announce_work().await;
        }
        Ok(edit)
    }
}

fn check_worker(worker_id: &str) -> Result<()> {
    if worker_id.is_empty() {
        return Err(StoreError::invalid("worker_id", "must not be empty"));
    }
    Ok(())
}
