//! Creating versions after the base: committing an edit's delta and reverting one.
//! Both run under the version lock (see `in_version_transaction!`), so versions are
//! numbered in commit order with no gaps however many workers commit at once.

use sqlx::types::Json;
use uuid::Uuid;

use super::{CommitDelta, CommitOutcome, Version, VersionKind, VersionRow};
use crate::db_types::{f32s_to_le_bytes, now, DbId, DbTime};
use crate::error::{Result, StoreError};
use crate::store::Store;

const LEASE_HOLDER: &str = "SELECT status, lease_owner FROM edits WHERE id = $1";

// The oldest other edit whose turn comes before `$1`'s commit: a running edit with a
// live lease that asked for a turn, and, if `$1` asked too, asked from an older place
// in the queue (see `Store::request_turn`).
pub(crate) const TURN_AHEAD: &str = "\
    SELECT other.id FROM edits other, edits me \
    WHERE me.id = $1 AND other.id <> me.id \
      AND other.status = 'running' AND other.turn_requested AND other.lease_expires_at > $2 \
      AND (NOT me.turn_requested OR other.created_at < me.created_at \
           OR (other.created_at = me.created_at AND other.id < me.id)) \
    ORDER BY other.created_at, other.id \
    LIMIT 1";

const HEAD: &str = "SELECT number, model_fingerprint FROM versions ORDER BY number DESC LIMIT 1";

// Re-checks the lease in the same statement that writes, so a lease taken over
// between the check above and here is caught (Postgres re-reads the row it updates).
const MARK_APPLIED: &str = "\
    UPDATE edits SET status = 'applied', version = $3, metrics = $4, \
                     lease_expires_at = NULL, finished_at = $5, error = NULL \
    WHERE id = $1 AND status = 'running' AND lease_owner = $2";

// u and v are the legacy columns of migration 0002, empty since 0006: the factors live
// in version_deltas.
const INSERT_APPLY: &str = "\
    INSERT INTO versions (number, parent, kind, edit_id, layer, u, v, model_fingerprint, \
                          created_at, gate_status, gate_metrics) \
    VALUES ($1, $2, 'apply', $3, $4, $5, $5, $6, $7, $8, $9) \
    RETURNING *";

const INSERT_DELTA: &str = "\
    INSERT INTO version_deltas (version, position, encoder, layer, rank, u, v) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_REVERT: &str = "\
    INSERT INTO versions (number, parent, kind, reverts_version, model_fingerprint, created_at) \
    VALUES ($1, $2, 'revert', $3, $4, $5) \
    RETURNING *";

impl Store {
    /// Commits edit `id`'s delta as version `delta.parent + 1` and marks the edit
    /// applied, in one transaction. Nothing is written when `worker_id` no longer
    /// holds the edit (`LeaseLost`) or the head is no longer `delta.parent`
    /// (`HeadMoved`: recompute on the new head and commit again), or another edit's
    /// turn comes first (`TurnTaken`). `Conflict` when the
    /// delta was computed for another model than the stored versions'.
    pub async fn commit_edit(
        &self,
        id: Uuid,
        worker_id: &str,
        delta: CommitDelta,
    ) -> Result<CommitOutcome> {
        check_delta(&delta)?;
        let (gate_status, gate_metrics) = match &delta.gate {
            Some((status, metrics)) => (Some(status.as_str()), Some(Json(metrics))),
            None => (None, None),
        };
        let now = DbTime(now());
        let outcome = in_version_transaction!(self, tx => {
            let holder: Option<(String, Option<String>)> = sqlx::query_as(LEASE_HOLDER)
                .bind(DbId(id))
                .fetch_optional(&mut *tx)
                .await?;
            let (status, owner) =
                holder.ok_or_else(|| StoreError::NotFound(format!("edit {id}")))?;
            if status != "running" || owner.as_deref() != Some(worker_id) {
                return Ok(CommitOutcome::LeaseLost);
            }
            let head: Option<(i64, String)> =
                sqlx::query_as(HEAD).fetch_optional(&mut *tx).await?;
            let (head, fingerprint) =
                head.ok_or_else(|| StoreError::NotFound("base version".into()))?;
            if head != delta.parent {
                return Ok(CommitOutcome::HeadMoved { head });
            }
            let ahead: Option<DbId> = sqlx::query_scalar(TURN_AHEAD)
                .bind(DbId(id))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(DbId(by)) = ahead {
                return Ok(CommitOutcome::TurnTaken { by });
            }
            if fingerprint != delta.model_fingerprint {
                return Err(StoreError::Conflict(format!(
                    "delta computed for model {}, versions are of model {fingerprint}",
                    delta.model_fingerprint
                )));
            }
            let number = head + 1;
            let marked = sqlx::query(MARK_APPLIED)
                .bind(DbId(id))
                .bind(worker_id)
                .bind(number)
                .bind(Json(&delta.metrics))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if marked.rows_affected() == 0 {
                return Ok(CommitOutcome::LeaseLost);
            }
            let row: VersionRow = sqlx::query_as(INSERT_APPLY)
                .bind(number)
                .bind(head)
                .bind(DbId(id))
                .bind(delta.deltas[0].layer)
                .bind(Vec::<u8>::new())
                .bind(&delta.model_fingerprint)
                .bind(now)
                .bind(gate_status)
                .bind(gate_metrics)
                .fetch_one(&mut *tx)
                .await?;
            for (position, stored) in delta.deltas.iter().enumerate() {
                sqlx::query(INSERT_DELTA)
                    .bind(number)
                    .bind(position as i32)
                    .bind(&stored.encoder)
                    .bind(stored.layer)
                    .bind(stored.rank)
                    .bind(f32s_to_le_bytes(&stored.u))
                    .bind(f32s_to_le_bytes(&stored.v))
                    .execute(&mut *tx)
                    .await?;
            }
            CommitOutcome::Committed(row.try_into()?)
        });
        Ok(outcome)
    }

    /// Creates version `head + 1` that removes the delta of version `target`.
    /// `target` must be an apply version that no revert has removed yet (`Conflict`
    /// otherwise; `NotFound` if it does not exist). With `expected_head`, fails with
    /// `HeadMoved` unless the head is that version.
    pub async fn create_revert(&self, target: i64, expected_head: Option<i64>) -> Result<Version> {
        let now = DbTime(now());
        let version = in_version_transaction!(self, tx => {
            let head: Option<(i64, String)> =
                sqlx::query_as(HEAD).fetch_optional(&mut *tx).await?;
            let (head, fingerprint) =
                head.ok_or_else(|| StoreError::NotFound("base version".into()))?;
            if let Some(expected) = expected_head.filter(|&e| e != head) {
                return Err(StoreError::HeadMoved { expected, head });
            }
            let kind: Option<String> =
                sqlx::query_scalar("SELECT kind FROM versions WHERE number = $1")
                    .bind(target)
                    .fetch_optional(&mut *tx)
                    .await?;
            let kind = kind.ok_or_else(|| StoreError::NotFound(format!("version {target}")))?;
            if kind != VersionKind::Apply.as_str() {
                return Err(StoreError::Conflict(format!(
                    "version {target} is a {kind} version; only apply versions can be reverted"
                )));
            }
            let reverted_by: Option<i64> =
                sqlx::query_scalar("SELECT number FROM versions WHERE reverts_version = $1")
                    .bind(target)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(by) = reverted_by {
                return Err(StoreError::Conflict(format!(
                    "version {target} was already reverted by version {by}"
                )));
            }
            let row: VersionRow = sqlx::query_as(INSERT_REVERT)
                .bind(head + 1)
                .bind(head)
                .bind(target)
                .bind(&fingerprint)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            Version::try_from(row)?
        });
        Ok(version)
    }
}

fn check_delta(delta: &CommitDelta) -> Result<()> {
    if delta.deltas.is_empty() {
        return Err(StoreError::invalid(
            "deltas",
            "an apply version needs a delta",
        ));
    }
    for stored in &delta.deltas {
        if !matches!(stored.encoder.as_str(), "text" | "text_2") {
            return Err(StoreError::invalid(
                "encoder",
                format!("unknown text encoder {:?}", stored.encoder),
            ));
        }
        if stored.layer < 0 {
            return Err(StoreError::invalid("layer", "must not be negative"));
        }
        let rows = usize::try_from(stored.rank).unwrap_or(0);
        if rows == 0
            || stored.u.is_empty()
            || stored.v.is_empty()
            || !stored.u.len().is_multiple_of(rows)
            || !stored.v.len().is_multiple_of(rows)
        {
            return Err(StoreError::invalid(
                "delta",
                format!(
                    "rank {} does not divide u ({} values) and v ({} values) into rows",
                    stored.rank,
                    stored.u.len(),
                    stored.v.len()
                ),
            ));
        }
    }
    if delta.model_fingerprint.is_empty() {
        return Err(StoreError::invalid(
            "model_fingerprint",
            "must not be empty",
        ));
    }
    Ok(())
}
