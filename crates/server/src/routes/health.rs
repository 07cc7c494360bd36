//! `/healthz` (the process answers), `/readyz` (model loaded, database reachable) and
//! `/info` (what the dashboard shows about the model). None needs a token.

use crate::backend::{ModelBackend, ModelSummary};
use crate::error::responses::Unavailable;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<B>))
        .route("/info", get(info::<B>))
}

/// Liveness and readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "getHealth",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = HealthStatus))
)]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// The model is loaded (it is, once the server listens) and the database answers.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "getReadiness",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = HealthStatus),
        (status = 503, description = "The database does not answer or the versions are not loaded (`unavailable`)", body = ErrorBody),
    )
)]
pub async fn readyz<B: ModelBackend>(
    State(state): State<AppState<B>>,
) -> Result<Json<HealthStatus>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("database unreachable: {e}")))?;
    if state.versions.is_empty() {
        return Err(ApiError::Unavailable("versions not loaded".into()));
    }
    Ok(Json(HealthStatus { status: "ready" }))
}

/// What the server runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    pub model: ModelSummary,
    /// The newest version.
    pub head: i64,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    pub auth_enabled: bool,
    pub version: &'static str,
}

/// The model (and whether it is the random-weight demo), the head version, the database.
#[utoipa::path(
    get, path = "/info", tag = "health", operation_id = "getInfo",
    responses(
        (status = 200, description = "The model, head version, database and auth mode", body = ServerInfo),
        (status = 503, response = Unavailable),
    )
)]
pub async fn info<B: ModelBackend>(
    State(state): State<AppState<B>>,
) -> Result<Json<ServerInfo>, ApiError> {
    Ok(Json(ServerInfo {
        model: state.backend.summary().clone(),
        head: state.store.head().await?.number,
        database: state.store.backend_name(),
        auth_enabled: state.settings.auth.enabled,
        version: env!("CARGO_PKG_VERSION"),
    }))
}
