//! `GET /openapi.json` (the generated spec) and `GET /docs` (a page that lists it; no
//! CDN, so it works offline).

use crate::backend::ModelBackend;
use crate::openapi::ApiDoc;
use crate::state::AppState;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn docs_page() -> Response {
    super::page::secure_page(include_str!("../../assets/docs.html"))
}
