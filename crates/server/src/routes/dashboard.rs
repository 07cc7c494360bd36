//! `GET /`: the dashboard, and `GET /ui/{path}` its stylesheet and JavaScript modules,
//! all compiled into the binary (no build step, nothing fetched from elsewhere). One
//! module per view under `assets/dashboard/views/`; `app.js` routes between them. The
//! page calls the API with the token the user enters (kept in sessionStorage).

use crate::backend::ModelBackend;
use crate::state::AppState;
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/ui/{*path}", get(asset))
}

/// Every file the page loads: (path under /ui/, content type, content).
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        CSS,
        include_str!("../../assets/dashboard/style.css"),
    ),
    ("app.js", JS, include_str!("../../assets/dashboard/app.js")),
    ("api.js", JS, include_str!("../../assets/dashboard/api.js")),
    ("dom.js", JS, include_str!("../../assets/dashboard/dom.js")),
    (
        "views/versions.js",
        JS,
        include_str!("../../assets/dashboard/views/versions.js"),
    ),
    (
        "views/edits.js",
        JS,
        include_str!("../../assets/dashboard/views/edits.js"),
    ),
    (
        "views/edit.js",
        JS,
        include_str!("../../assets/dashboard/views/edit.js"),
    ),
    (
        "views/compare.js",
        JS,
        include_str!("../../assets/dashboard/views/compare.js"),
    ),
    (
        "views/generate.js",
        JS,
        include_str!("../../assets/dashboard/views/generate.js"),
    ),
    (
        "views/operations.js",
        JS,
        include_str!("../../assets/dashboard/views/operations.js"),
    ),
];

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

async fn dashboard() -> Response {
    super::page::secure_page(include_str!("../../assets/dashboard/index.html"))
}

async fn asset(Path(path): Path<String>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(name, _, _)| *name == path) else {
        return crate::error::ApiError::not_found("not_found", "no such dashboard file")
            .into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on each load, so a new binary's dashboard shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// Every module another one imports is served, so the page cannot load half-way.
    #[test]
    fn every_imported_module_is_served() {
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line.split('"').nth(1).expect("a quoted module path");
                let resolved = resolve(dir, target);
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == resolved),
                    "{name} imports {target} ({resolved}), which is not served"
                );
            }
        }
        let index = include_str!("../../assets/dashboard/index.html");
        for url in ["/ui/style.css", "/ui/app.js"] {
            assert!(index.contains(url), "{url}");
        }
    }

    fn resolve(dir: &str, target: &str) -> String {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
        for piece in target.split('/') {
            match piece {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }
}
