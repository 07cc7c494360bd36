//! `/versions`: the history of the model, and reverts.

use super::generate::version_not_found;
use super::Pagination;
use crate::auth::{self, Authorized};
use crate::backend::ModelBackend;
use crate::error::responses::{BadRequest, Forbidden, Unauthorized, Unavailable};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use refact_store::{StoreError, Version, VersionKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/versions", get(list_versions::<B>))
        .route("/versions/{n}", get(get_version::<B>))
        .route("/versions/{n}/revert", post(revert_version::<B>))
}

/// A version of the model (its delta vectors are not shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub number: i64,
    /// The version it was made from (none for version 0).
    pub parent: Option<i64>,
    /// base, apply or revert.
    #[schema(example = "apply")]
    pub kind: String,
    /// The edit it applies (kind apply).
    pub edit_id: Option<Uuid>,
    /// The version whose delta it removes (kind revert).
    pub reverts_version: Option<i64>,
    /// The edited text-encoder layer (kind apply).
    pub layer: Option<i64>,
    pub model_fingerprint: String,
    pub created_at: DateTime<Utc>,
    /// passed or failed, when a gate has judged it.
    pub gate_status: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub gate_metrics: Option<serde_json::Value>,
}

impl From<Version> for VersionView {
    fn from(version: Version) -> Self {
        VersionView {
            number: version.number,
            parent: version.parent,
            kind: kind_name(version.kind).to_string(),
            edit_id: version.edit_id,
            reverts_version: version.reverts_version,
            layer: version.layer.map(i64::from),
            model_fingerprint: version.model_fingerprint,
            created_at: version.created_at,
            gate_status: version.gate_status.map(|g| g.as_str().to_string()),
            gate_metrics: version.gate_metrics,
        }
    }
}

fn kind_name(kind: VersionKind) -> &'static str {
    match kind {
        VersionKind::Base => "base",
        VersionKind::Apply => "apply",
        VersionKind::Revert => "revert",
    }
}

/// One page of versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionPage {
    pub items: Vec<VersionView>,
    pub total: i64,
    pub limit: u32,
    pub offset: u64,
}

/// `POST /versions/{n}/revert` options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevertQuery {
    /// Refuse (409 `head_moved`) unless the head is still this version.
    pub expected_head: Option<i64>,
}

/// List versions, newest first.
#[utoipa::path(
    get, path = "/versions", tag = "versions", operation_id = "listVersions",
    params(Pagination),
    responses(
        (status = 200, description = "One page of versions", body = VersionPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list_versions<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiQuery(page): ApiQuery<Pagination>,
) -> Result<Json<VersionPage>, ApiError> {
    let (limit, offset) = page.resolve(state.settings.limits.max_page_size)?;
    let page = state.store.list_versions(limit, offset).await?;
    Ok(Json(VersionPage {
        items: page.items.into_iter().map(VersionView::from).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

/// One version: its edit, layer, parent, creation time.
#[utoipa::path(
    get, path = "/versions/{n}", tag = "versions", operation_id = "getVersion",
    params(("n" = i64, Path, description = "The version number")),
    responses(
        (status = 200, description = "The version", body = VersionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such version (`version_not_found`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get_version<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(n): ApiPath<i64>,
) -> Result<Json<VersionView>, ApiError> {
    let version = state
        .store
        .get_version(n)
        .await?
        .ok_or_else(|| version_not_found(&n.to_string()))?;
    Ok(Json(version.into()))
}

/// Create a new version (head + 1) without the delta of version `n` (an applied edit
/// in the head's history that is not reverted yet).
#[utoipa::path(
    post, path = "/versions/{n}/revert", tag = "versions", operation_id = "revertVersion",
    params(("n" = i64, Path, description = "The version whose delta to remove"), RevertQuery),
    responses(
        (status = 201, description = "The new version", body = VersionView, headers(("Location" = String))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such version (`version_not_found`)", body = ErrorBody),
        (status = 409, description = "Not an applied edit in the head's history or already reverted (`revert_conflict`), or the head moved (`head_moved`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["edit"]))
)]
pub async fn revert_version<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Edit>,
    ApiPath(n): ApiPath<i64>,
    ApiQuery(query): ApiQuery<RevertQuery>,
) -> Result<Response, ApiError> {
    if state.store.get_version(n).await?.is_none() {
        return Err(version_not_found(&n.to_string()));
    }
    let version = match state.store.create_revert(n, query.expected_head).await {
        Ok(version) => version,
        Err(StoreError::Conflict(message)) => {
            return Err(ApiError::conflict("revert_conflict", message))
        }
        Err(err) => return Err(err.into()),
    };
    // Load it now (and any version another replica added before it).
    state.version_deltas(version.number).await?;
    let location = HeaderValue::from_str(&format!("/versions/{}", version.number))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(VersionView::from(version)),
    )
        .into_response())
}
