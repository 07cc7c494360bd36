//! `GET /metrics`: Prometheus text format (no token: scrapers rarely carry one; put the
//! port behind the cluster network).

use crate::backend::ModelBackend;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new().route("/metrics", get(metrics::<B>))
}

/// Requests, latencies, queue depths, edit and generation durations.
#[utoipa::path(
    get, path = "/metrics", tag = "health", operation_id = "getMetrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 503, response = crate::error::responses::Unavailable),
    )
)]
pub async fn metrics<B: ModelBackend>(
    State(state): State<AppState<B>>,
) -> Result<impl IntoResponse, ApiError> {
    // Queue gauges are read at scrape time, so they are right whichever replica changed them.
    let depth = state.store.queue_depth().await?;
    crate::metrics::set_edit_queue(depth.queued, depth.running, state.versions.len());
    crate::metrics::set_generate_queue_depth(state.generator.depth());
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}
