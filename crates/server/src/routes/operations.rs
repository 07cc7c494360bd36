//! `GET /operations`: what an operator checks first, in one call. The edit queue and the
//! edits running now (with their latest progress), recent failures, the generation
//! queue and batching, the replicas seen lately, and image and edit counts per minute
//! over the last hour. `GET /webhooks/deliveries`: the latest webhook deliveries.

use crate::activity::MINUTES;
use crate::auth::{self, Authorized};
use crate::backend::{ModelBackend, TextCacheGauges};
use crate::error::responses::{BadRequest, Forbidden, Unauthorized, Unavailable};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::edits::EditView;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, DurationRound, Utc};
use refact_store::{EditFilter, EditStatus, Replica, WebhookDelivery};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Failed edits listed.
const RECENT_FAILURES: u32 = 10;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/operations", get(operations::<B>))
        .route("/webhooks/deliveries", get(webhook_deliveries::<B>))
}

/// The operations summary.
#[derive(Debug, Serialize, ToSchema)]
pub struct Operations {
    /// Edits waiting for a worker and claimed by one.
    pub edits_queued: i64,
    pub edits_running: i64,
    /// The running edits, oldest first, with `progress` as last stored.
    pub running: Vec<EditView>,
    /// The latest failed edits, newest first.
    pub recent_failures: Vec<EditView>,
    /// This replica's image queue (waiting or rendering) and batching settings.
    pub generation: GenerationGauges,
    /// Replicas seen within three heartbeats, most recently seen first.
    pub replicas: Vec<ReplicaView>,
    /// Per minute, oldest first, the last being the current minute.
    pub last_hour: LastHour,
    /// Webhook receivers configured on this replica.
    pub webhook_receivers: usize,
}

/// The image queue of the replica that answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationGauges {
    pub queue_depth: usize,
    pub queue_limit: usize,
    pub max_batch: usize,
    pub max_wait_ms: f64,
    /// Images this replica rendered since it started (users' and quality gates').
    pub images_rendered: u64,
    /// The text-embedding cache of this replica's model.
    pub text_cache: TextCacheGauges,
}

/// A replica as it last reported itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaView {
    pub id: String,
    /// Whether this is the replica that answered.
    pub this: bool,
    pub model: String,
    /// Runs the edit worker.
    pub worker: bool,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Its generation queue, running edits, loaded versions, last hour of images.
    #[schema(value_type = Object)]
    pub status: Value,
}

/// Counts per minute over the last hour (60 entries each).
#[derive(Debug, Serialize, ToSchema)]
pub struct LastHour {
    /// The start of the first minute.
    pub since: DateTime<Utc>,
    /// Images rendered, all replicas seen.
    pub images: Vec<u64>,
    /// UNet batches run, all replicas seen.
    pub batches: Vec<u64>,
    pub edits_applied: Vec<u64>,
    pub edits_failed: Vec<u64>,
}

/// The operations summary.
#[utoipa::path(
    get, path = "/operations", tag = "health", operation_id = "getOperations",
    responses(
        (status = 200, description = "Queues, running edits, failures, replicas, last hour", body = Operations),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn operations<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
) -> Result<Json<Operations>, ApiError> {
    let store = &state.store;
    let depth = store.queue_depth().await?;
    let list = |status| EditFilter {
        status: Some(status),
        limit: RECENT_FAILURES,
        offset: 0,
    };
    let mut running: Vec<EditView> = store
        .list_edits(list(EditStatus::Running))
        .await?
        .items
        .into_iter()
        .map(EditView::from)
        .collect();
    running.reverse();
    let recent_failures = store
        .list_edits(list(EditStatus::Failed))
        .await?
        .items
        .into_iter()
        .map(EditView::from)
        .collect();

    let now = Utc::now();
    let beat = Duration::milliseconds((state.settings.replica_heartbeat_secs * 3000.0) as i64);
    let replicas = store.replicas_seen_since(now - beat).await?;
    let minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let since = minute - Duration::minutes(MINUTES as i64 - 1);
    let mut last_hour = LastHour {
        since,
        images: vec![0; MINUTES],
        batches: vec![0; MINUTES],
        edits_applied: vec![0; MINUTES],
        edits_failed: vec![0; MINUTES],
    };
    add_replica_activity(&mut last_hour, &replicas);
    for (status, at) in store.edits_finished_since(since).await? {
        let Some(slot) = minute_slot(since, at) else {
            continue;
        };
        match status.as_str() {
            "applied" => last_hour.edits_applied[slot] += 1,
            "failed" => last_hour.edits_failed[slot] += 1,
            _ => {}
        }
    }
    let settings = &state.settings;
    Ok(Json(Operations {
        edits_queued: depth.queued,
        edits_running: depth.running,
        running,
        recent_failures,
        generation: GenerationGauges {
            queue_depth: state.generator.depth(),
            queue_limit: settings.limits.generate_queue,
            max_batch: settings.batching.max_batch,
            max_wait_ms: settings.batching.max_wait_ms,
            images_rendered: state.generator.rendered(),
            text_cache: state.backend.text_cache(),
        },
        replicas: replicas
            .into_iter()
            .map(|r| ReplicaView {
                this: r.id == state.replica.id,
                id: r.id,
                model: r.model,
                worker: r.worker,
                started_at: r.started_at,
                last_seen: r.last_seen,
                status: r.status,
            })
            .collect(),
        last_hour,
        webhook_receivers: settings.webhooks.receivers.len(),
    }))
}

/// Which of the 60 minutes from `since` a time falls in.
fn minute_slot(since: DateTime<Utc>, at: DateTime<Utc>) -> Option<usize> {
    // Floor, not truncation: a second before `since` is outside, not in minute 0.
    let slot = (at - since).num_seconds().div_euclid(60);
    (0..MINUTES as i64).contains(&slot).then_some(slot as usize)
}

/// Adds each replica's per-minute image and batch counts (reported with its own
/// "now", which is this minute or, for a replica seen just before the minute turned,
/// the one before: its series is then one minute behind and is shifted by one).
fn add_replica_activity(hour: &mut LastHour, replicas: &[Replica]) {
    let newest_minute = |r: &Replica| {
        r.last_seen
            .duration_trunc(Duration::minutes(1))
            .unwrap_or(r.last_seen)
    };
    for replica in replicas {
        let Some(end) = minute_slot(hour.since, newest_minute(replica)) else {
            continue;
        };
        for (key, sums) in [("images", &mut hour.images), ("batches", &mut hour.batches)] {
            let Some(series) = replica.status["last_hour"][key].as_array() else {
                continue;
            };
            let counts: Vec<u64> = series.iter().map(|v| v.as_u64().unwrap_or(0)).collect();
            // The series' last entry is minute `end`.
            for (back, count) in counts.iter().rev().enumerate() {
                if let Some(slot) = end.checked_sub(back) {
                    sums[slot] += count;
                }
            }
        }
    }
}

/// `GET /webhooks/deliveries?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Most deliveries returned, newest first (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// One webhook delivery: the event, its body, and how its attempts went.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: uuid::Uuid,
    pub url: String,
    #[schema(example = "alias.moved")]
    pub event: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `pending` (more attempts to come), `delivered` or `failed` (out of attempts).
    pub status: String,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        DeliveryView {
            id: d.id,
            url: d.url,
            event: d.event,
            payload: d.payload,
            status: d.status,
            attempts: d.attempts,
            last_code: d.last_code,
            last_error: d.last_error,
            created_at: d.created_at,
            next_attempt_at: d.next_attempt_at,
            finished_at: d.finished_at,
        }
    }
}

/// The latest webhook deliveries, newest first (admin: bodies name every change).
#[utoipa::path(
    get, path = "/webhooks/deliveries", tag = "health", operation_id = "listWebhookDeliveries",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Vec<DeliveryView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, description = "Bad limit (`invalid_query`)", body = crate::error::ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn webhook_deliveries<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Admin>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_query",
            "limit",
            "limit must be between 1 and 200",
        ));
    }
    let deliveries = state.store.recent_deliveries(limit).await?;
    Ok(Json(
        deliveries.into_iter().map(DeliveryView::from).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replica_series_are_aligned_on_the_minute_they_were_reported() {
        let since = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut hour = LastHour {
            since,
            images: vec![0; MINUTES],
            batches: vec![0; MINUTES],
            edits_applied: vec![0; MINUTES],
            edits_failed: vec![0; MINUTES],
        };
        let mut series = vec![0u64; MINUTES];
        series[MINUTES - 1] = 4; // its current minute
        series[MINUTES - 2] = 2;
        let replica = |seen: &str| Replica {
            id: seen.into(),
            started_at: since,
            last_seen: DateTime::parse_from_rfc3339(seen)
                .unwrap()
                .with_timezone(&Utc),
            model: "demo".into(),
            worker: true,
            status: json!({"last_hour": {"images": series, "batches": series}}),
        };
        // One reported in the last minute of the window, one a minute earlier.
        let replicas = [
            replica("2026-12-01T10:59:30Z"),
            replica("2026-12-01T10:58:10Z"),
        ];
        add_replica_activity(&mut hour, &replicas);
        assert_eq!(hour.images[59], 4);
        assert_eq!(hour.images[58], 2 + 4);
        assert_eq!(hour.images[57], 2);
        assert_eq!(hour.images.iter().sum::<u64>(), 12);
        assert_eq!(minute_slot(since, since - Duration::seconds(1)), None);
        assert_eq!(minute_slot(since, since + Duration::minutes(60)), None);
    }
}
