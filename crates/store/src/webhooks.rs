//! Webhook deliveries: the outbox of events (`edit.applied`, `alias.moved`, ...) for the
//! configured receivers. Rows are written where the event happens and sent by whichever
//! replica's dispatcher claims them first, so a delivery survives a restart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db_types::{now, now_plus, DbId, DbTime};
use crate::error::Result;
use crate::store::Store;

/// One event for one receiver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub url: String,
    pub event: String,
    /// The JSON body sent (and signed).
    pub payload: Value,
    /// `pending`, `delivered` or `failed` (out of attempts).
    pub status: String,
    pub attempts: i32,
    /// The receiver's HTTP status at the last attempt, if it answered.
    pub last_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: DbId,
    url: String,
    event: String,
    payload: Json<Value>,
    status: String,
    attempts: i32,
    last_code: Option<i32>,
    last_error: Option<String>,
    created_at: DbTime,
    next_attempt_at: DbTime,
    finished_at: Option<DbTime>,
}

impl From<DeliveryRow> for WebhookDelivery {
    fn from(row: DeliveryRow) -> Self {
        Self {
            id: row.id.0,
            url: row.url,
            event: row.event,
            payload: row.payload.0,
            status: row.status,
            attempts: row.attempts,
            last_code: row.last_code,
            last_error: row.last_error,
            created_at: row.created_at.0,
            next_attempt_at: row.next_attempt_at.0,
            finished_at: row.finished_at.map(|t| t.0),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered 2xx.
    Delivered { code: i32 },
    /// Try again after `retry_after`, or give up when it is `None`.
    Failed {
        code: Option<i32>,
        error: String,
        retry_after: Option<std::time::Duration>,
    },
}

impl Store {
    /// Queues `event` for every url in `urls`, due now.
    pub async fn queue_webhook_deliveries(
        &self,
        urls: &[String],
        event: &str,
        payload: &Value,
    ) -> Result<Vec<Uuid>> {
        let mut ids = Vec::with_capacity(urls.len());
        for url in urls {
            let id = Uuid::new_v4();
            let at = DbTime(now());
            on_pool!(self, pool => {
                sqlx::query(
                    "INSERT INTO webhook_deliveries \
                     (id, url, event, payload, status, attempts, created_at, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                )
                .bind(DbId(id))
                .bind(url)
                .bind(event)
                .bind(Json(payload))
                .bind(at)
                .execute(pool)
                .await
                .map(|_| ())
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Claims one pending delivery that is due, pushing its next attempt `lease` ahead
    /// so that no other dispatcher sends it meanwhile; `None` when nothing is due.
    pub async fn claim_due_delivery(
        &self,
        lease: std::time::Duration,
    ) -> Result<Option<WebhookDelivery>> {
        let due: Option<DeliveryRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT * FROM webhook_deliveries WHERE status = 'pending' \
                 AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 1",
            )
            .bind(DbTime(now()))
            .fetch_optional(pool)
            .await
        })?;
        let Some(due) = due else { return Ok(None) };
        // Compare-and-set on the time read: of two dispatchers, one wins.
        let claimed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1 \
                 WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
            )
            .bind(DbTime(now_plus(lease)?))
            .bind(DbId(due.id.0))
            .bind(DbTime(due.next_attempt_at.0))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok((claimed == 1).then(|| due.into()))
    }

    /// Records an attempt on delivery `id`.
    pub async fn record_delivery_attempt(&self, id: Uuid, result: &AttemptResult) -> Result<()> {
        let at = DbTime(now());
        let (status, code, error, next, finished) = match result {
            AttemptResult::Delivered { code } => ("delivered", Some(*code), None, at, Some(at)),
            AttemptResult::Failed {
                code,
                error,
                retry_after: Some(after),
            } => (
                "pending",
                *code,
                Some(error.as_str()),
                DbTime(now_plus(*after)?),
                None,
            ),
            AttemptResult::Failed {
                code,
                error,
                retry_after: None,
            } => ("failed", *code, Some(error.as_str()), at, Some(at)),
        };
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
                 last_code = $2, last_error = $3, next_attempt_at = $4, finished_at = $5 \
                 WHERE id = $6",
            )
            .bind(status)
            .bind(code)
            .bind(error)
            .bind(next)
            .bind(finished)
            .bind(DbId(id))
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// The newest deliveries first, at most `limit` (capped at 200).
    pub async fn recent_deliveries(&self, limit: u32) -> Result<Vec<WebhookDelivery>> {
        let rows: Vec<DeliveryRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM webhook_deliveries ORDER BY created_at DESC, id LIMIT $1")
                .bind(i64::from(limit.min(200)))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(WebhookDelivery::from).collect())
    }
}
