//! `/healthz` (the process answers), `/readyz` (model loaded, database reachable) and
//! `/info` (what the dashboard shows about the model). None needs a token; `/info` shows
//! where a local model folder lies only to callers with a `read` token.

use crate::auth::{self, MaybeAuthorized};
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

/// How long `/readyz` waits for the database.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(700);

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
    // Within a second either way: a probe that hangs tells an orchestrator nothing.
    match tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ApiError::Unavailable(format!("database unreachable: {e}"))),
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "database did not answer within {READY_PROBE_TIMEOUT:?}"
            )))
        }
    }
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
    reader: MaybeAuthorized<auth::Read>,
) -> Result<Json<ServerInfo>, ApiError> {
    let mut model = state.backend.summary().clone();
    if reader.0.is_none() {
        model.source = public_source(&model.source);
    }
    Ok(Json(ServerInfo {
        model,
        head: state.store.head().await?.number,
        database: state.store.backend_name(),
        auth_enabled: state.settings.auth.enabled,
        version: env!("CARGO_PKG_VERSION"),
    }))
}

/// The model's source as shown to anyone: a local folder by its name only, not where it
/// lies on the server's disk; hub ids and `demo` as they are.
fn public_source(source: &str) -> String {
    let path = std::path::Path::new(source);
    if path.is_absolute() || path.is_dir() {
        path.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        source.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::public_source;

    #[test]
    fn a_local_folder_is_shown_by_its_name_only() {
        assert_eq!(
            public_source("/srv/models/stable-diffusion-v1-5"),
            "stable-diffusion-v1-5"
        );
        let here = std::env::temp_dir();
        let name = here.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(public_source(&here.display().to_string()), name);
        assert_eq!(public_source("demo"), "demo");
        assert_eq!(
            public_source("stable-diffusion-v1-5/stable-diffusion-v1-5"),
            "stable-diffusion-v1-5/stable-diffusion-v1-5"
        );
    }
}
