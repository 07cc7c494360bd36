//! The HTTP routes, one module per resource, merged into one router here.

pub mod aliases;
pub mod dashboard;
pub mod docs;
pub mod edit_events;
pub mod edits;
pub mod generate;
pub mod health;
pub mod metrics;
pub mod operations;
mod page;
#[cfg(test)]
mod tests;
pub mod version_facts;
pub mod versions;

use crate::backend::ModelBackend;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde::Deserialize;
use std::time::Duration;
use tower_http::trace::TraceLayer;
use utoipa::IntoParams;

/// The whole API as one router (no socket: tests may drive it with `oneshot`).
pub fn app<B: ModelBackend>(state: AppState<B>) -> Router {
    let limits = state.settings.limits.clone();
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    Router::new()
        .merge(edits::router())
        .merge(edit_events::router())
        .merge(generate::router())
        .merge(versions::router())
        .merge(version_facts::router())
        .merge(operations::router())
        .merge(aliases::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(docs::router())
        .merge(dashboard::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, time_limit))
        .layer(middleware::from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Gives up on a request (until its response starts) after the configured time, with
/// the API's error shape instead of a bare 408. Event streams are not cut: their
/// response starts at once.
async fn time_limit(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    tokio::time::timeout(limit, next.run(request))
        .await
        .map_err(|_| ApiError::Unavailable(format!("the request took longer than {limit:?}")))
}

/// `?limit=&offset=` of the list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page size (default 50; at most `limits.max_page_size`, 200 by default).
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// Rows to skip (default 0).
    pub offset: Option<u64>,
}

impl Pagination {
    /// The page size and offset, checked against the configured maximum.
    pub fn resolve(&self, max: i64) -> Result<(u32, u64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if limit == 0 || i64::from(limit) > max {
            return Err(ApiError::BadRequest {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: format!("limit must be between 1 and {max}"),
                field: Some("limit".into()),
            });
        }
        let offset = self.offset.unwrap_or(0);
        // The databases count rows in i64; beyond it the store would refuse with a 422
        // that this operation does not list.
        if i64::try_from(offset).is_err() {
            return Err(ApiError::BadRequest {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: format!("offset must be at most {}", i64::MAX),
                field: Some("offset".into()),
            });
        }
        Ok((limit, offset))
    }
}

#[cfg(test)]
mod pagination_tests {
    use super::*;

    #[test]
    fn limits_and_offsets_out_of_range_are_bad_queries() {
        let page = |limit, offset| Pagination { limit, offset }.resolve(200);
        assert_eq!(page(None, None).unwrap(), (50, 0));
        assert_eq!(
            page(Some(200), Some(i64::MAX as u64)).unwrap(),
            (200, i64::MAX as u64)
        );
        for (limit, offset) in [(Some(0), None), (Some(201), None), (None, Some(u64::MAX))] {
            match page(limit, offset) {
                Err(ApiError::BadRequest { code, .. }) => assert_eq!(code, "invalid_query"),
                other => panic!("{limit:?} {offset:?}: {other:?}"),
            }
        }
    }
}
