//! Replicas: every server process writes its row every few seconds, so any of them can
//! tell the operations view which replicas are alive and what each is doing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use crate::db_types::{now, DbTime};
use crate::error::Result;
use crate::store::Store;

/// A server process as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The model's source (`demo`, a folder, a hub id).
    pub model: String,
    /// Whether it runs the edit worker.
    pub worker: bool,
    /// What it was doing at its last heartbeat.
    pub status: Value,
}

#[derive(sqlx::FromRow)]
struct ReplicaRow {
    id: String,
    started_at: DbTime,
    last_seen: DbTime,
    model: String,
    worker: bool,
    status: Json<Value>,
}

impl From<ReplicaRow> for Replica {
    fn from(row: ReplicaRow) -> Self {
        Self {
            id: row.id,
            started_at: row.started_at.0,
            last_seen: row.last_seen.0,
            model: row.model,
            worker: row.worker,
            status: row.status.0,
        }
    }
}

/// What a replica reports at each heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaReport<'a> {
    pub id: &'a str,
    pub started_at: DateTime<Utc>,
    pub model: &'a str,
    pub worker: bool,
    pub status: &'a Value,
}

impl Store {
    /// Writes (or refreshes) a replica's row with the time now.
    pub async fn report_replica(&self, report: &ReplicaReport<'_>) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO replicas (id, started_at, last_seen, model, worker, status) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, \
                     model = excluded.model, worker = excluded.worker, status = excluded.status",
            )
            .bind(report.id)
            .bind(DbTime(report.started_at))
            .bind(DbTime(now()))
            .bind(report.model)
            .bind(report.worker)
            .bind(Json(report.status))
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Replicas seen since `since`, the most recently seen first.
    pub async fn replicas_seen_since(&self, since: DateTime<Utc>) -> Result<Vec<Replica>> {
        let rows: Vec<ReplicaRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM replicas WHERE last_seen >= $1 ORDER BY last_seen DESC, id")
                .bind(DbTime(since))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(Replica::from).collect())
    }

    /// Removes a replica's row (a clean shutdown), so it leaves the list at once.
    pub async fn forget_replica(&self, id: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM replicas WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }
}
