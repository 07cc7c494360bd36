//! `GET /`: the dashboard, one HTML page with a little JavaScript and no build step. It
//! calls the API with the token the user pastes in (kept in the browser's localStorage).

use crate::backend::ModelBackend;
use crate::state::AppState;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new().route("/", get(dashboard))
}

async fn dashboard() -> Response {
    super::page::secure_page(include_str!("../../assets/dashboard.html"))
}
