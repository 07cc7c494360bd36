//! Reading versions, creating the base, and recording gate results.

use serde_json::Value;
use sqlx::types::Json;

use std::collections::BTreeMap;

use super::{version_from, GateStatus, StoredDelta, Version, VersionRow};
use crate::db_types::{le_bytes_to_f32s, now, DbTime};
use crate::error::{Result, StoreError};
use crate::page::{sql_limits, Page};
use crate::store::Store;

impl Store {
    /// Creates version 0 for the model `model_fingerprint` if absent, and returns it.
    /// `Conflict` if the database already belongs to another model: its deltas would
    /// not fit this one.
    pub async fn ensure_base(&self, model_fingerprint: &str) -> Result<Version> {
        if model_fingerprint.is_empty() {
            return Err(StoreError::invalid(
                "model_fingerprint",
                "must not be empty",
            ));
        }
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO versions (number, kind, model_fingerprint, created_at) \
                 VALUES (0, 'base', $1, $2) ON CONFLICT (number) DO NOTHING",
            )
            .bind(model_fingerprint)
            .bind(DbTime(now()))
            .execute(pool)
            .await
            .map(drop)
        })?;
        let base = self
            .get_version(0)
            .await?
            .ok_or_else(|| StoreError::NotFound("version 0".into()))?;
        if base.model_fingerprint != model_fingerprint {
            return Err(StoreError::Conflict(format!(
                "the database holds versions of model {}, not {model_fingerprint}",
                base.model_fingerprint
            )));
        }
        Ok(base)
    }

    /// The newest version. `NotFound` before [`Store::ensure_base`] ran.
    pub async fn head(&self) -> Result<Version> {
        let row: Option<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM versions ORDER BY number DESC LIMIT 1")
                .fetch_optional(pool)
                .await
        })?;
        version_from(row)?.ok_or_else(|| StoreError::NotFound("base version".into()))
    }

    /// Version `number`.
    pub async fn get_version(&self, number: i64) -> Result<Option<Version>> {
        let row: Option<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM versions WHERE number = $1")
                .bind(number)
                .fetch_optional(pool)
                .await
        })?;
        version_from(row)
    }

    /// Versions newest first, with the total count.
    pub async fn list_versions(&self, limit: u32, offset: u64) -> Result<Page<Version>> {
        let (sql_limit, sql_offset) = sql_limits(limit, offset)?;
        let (rows, total): (Vec<VersionRow>, i64) = on_pool!(self, pool => {
            let rows = sqlx::query_as(
                "SELECT * FROM versions ORDER BY number DESC LIMIT $1 OFFSET $2",
            )
            .bind(sql_limit)
            .bind(sql_offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM versions")
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        Ok(Page {
            items: rows
                .into_iter()
                .map(Version::try_from)
                .collect::<Result<_>>()?,
            total,
            limit,
            offset,
        })
    }

    /// Versions 0..=`number`, oldest first: what the server replays at start.
    pub async fn versions_up_to(&self, number: i64) -> Result<Vec<Version>> {
        let rows: Vec<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM versions WHERE number <= $1 ORDER BY number")
                .bind(number)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(Version::try_from).collect()
    }

    /// The deltas of the apply versions `from..=to`, by version, each list in the order
    /// its deltas apply. Versions without deltas (base, reverts) are absent.
    pub async fn version_deltas(
        &self,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<i64, Vec<StoredDelta>>> {
        let rows: Vec<DeltaRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT version, encoder, layer, rank, u, v FROM version_deltas \
                 WHERE version >= $1 AND version <= $2 ORDER BY version, position",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
        })?;
        let mut deltas: BTreeMap<i64, Vec<StoredDelta>> = BTreeMap::new();
        for row in rows {
            deltas.entry(row.version).or_default().push(StoredDelta {
                encoder: row.encoder,
                layer: row.layer,
                rank: row.rank,
                u: le_bytes_to_f32s(&row.u)?,
                v: le_bytes_to_f32s(&row.v)?,
            });
        }
        Ok(deltas)
    }

    /// The apply versions in version `number` (at or below it, not reverted by then)
    /// whose quality gate failed, oldest first: what keeps an alias off `number`.
    pub async fn failed_gates_in(&self, number: i64) -> Result<Vec<i64>> {
        Ok(self
            .live_applies_in(number)
            .await?
            .into_iter()
            .filter(|v| v.gate_status == Some(GateStatus::Failed))
            .map(|v| v.number)
            .collect())
    }

    /// The apply versions live in version `number` (at or below it, not reverted by
    /// then), oldest first: the facts a model at `number` holds.
    pub async fn live_applies_in(&self, number: i64) -> Result<Vec<Version>> {
        let rows: Vec<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.* FROM versions a \
                 WHERE a.number <= $1 AND a.kind = 'apply' \
                   AND NOT EXISTS (SELECT 1 FROM versions r \
                                   WHERE r.reverts_version = a.number AND r.number <= $1) \
                 ORDER BY a.number",
            )
            .bind(number)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(Version::try_from).collect()
    }

    /// Records the quality gate's outcome on version `number`.
    pub async fn set_version_gate(
        &self,
        number: i64,
        status: GateStatus,
        metrics: Value,
    ) -> Result<Version> {
        let row: Option<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "UPDATE versions SET gate_status = $2, gate_metrics = $3 \
                 WHERE number = $1 RETURNING *",
            )
            .bind(number)
            .bind(status.as_str())
            .bind(Json(&metrics))
            .fetch_optional(pool)
            .await
        })?;
        version_from(row)?.ok_or_else(|| StoreError::NotFound(format!("version {number}")))
    }
}

/// A `version_deltas` row.
#[derive(sqlx::FromRow)]
struct DeltaRow {
    version: i64,
    encoder: String,
    layer: i32,
    rank: i32,
    u: Vec<u8>,
    v: Vec<u8>,
}
