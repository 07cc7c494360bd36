//! The router without a socket (`oneshot`), over the scripted model: error shapes of
//! what axum would otherwise answer itself, auth, the spec, probes, and a cancel.

use crate::scripted::{harness, Harness};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use refact_store::Scope;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn error_code(&self) -> String {
        let body = self.json();
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"].get("field").is_some(), "{body}");
        body["error"]["code"].as_str().unwrap().to_string()
    }
}

async fn send(
    h: &Harness,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = match body {
        Some(text) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(text.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = super::app(h.state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn admin_token(h: &Harness) -> String {
    h.state
        .store
        .create_token("admin", &[Scope::Admin])
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_the_error_shape() {
    let h = harness().await;
    let reply = send(&h, Method::GET, "/no/such/route", None, None).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let reply = send(&h, Method::PATCH, "/edits", None, None).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_before_the_body_is_read() {
    let h = harness().await;
    let reply = send(&h, Method::POST, "/edits", None, Some("{")).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    let reply = send(&h, Method::GET, "/edits", Some("rfs_nope"), None).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let (reader, info) = h
        .state
        .store
        .create_token("reader", &[Scope::Read])
        .await
        .unwrap();
    let reply = send(&h, Method::POST, "/edits", Some(&reader), Some("{")).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::FORBIDDEN, "missing_scope")
    );
    assert_eq!(
        send(&h, Method::GET, "/edits", Some(&reader), None)
            .await
            .status,
        StatusCode::OK
    );
    // A revoked token is unknown.
    assert!(h.state.store.revoke_token(info.id).await.unwrap());
    let reply = send(&h, Method::GET, "/edits", Some(&reader), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_400_and_422_with_the_field() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let reply = send(
        &h,
        Method::POST,
        "/edits",
        Some(&token),
        Some(r#"{"steps": 1,"#),
    )
    .await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let body = r#"{"steps": "many", "step_ms": 0, "gated": false, "fail": "none"}"#;
    let reply = send(&h, Method::POST, "/edits", Some(&token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json()["error"]["field"], "steps");
    let reply = send(&h, Method::GET, "/versions/abc", Some(&token), None).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let edits = h
        .state
        .store
        .list_edits(refact_store::EditFilter {
            status: None,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(edits.total, 0, "nothing stored");
}

#[tokio::test]
async fn a_queued_edit_is_cancelled_at_once_and_a_second_cancel_is_harmless() {
    let h = harness().await;
    let token = admin_token(&h).await;
    let body = json!({"steps": 3, "step_ms": 0, "gated": false, "fail": "none"}).to_string();
    let reply = send(&h, Method::POST, "/edits", Some(&token), Some(&body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let reply = send(
            &h,
            Method::DELETE,
            &format!("/edits/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "cancelled");
    }
    let reply = send(
        &h,
        Method::GET,
        "/edits?status=cancelled",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(reply.json()["total"], 1);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_bearer_scheme() {
    let h = harness().await;
    let reply = send(&h, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let spec = reply.json();
    for path in [
        "/edits",
        "/edits/{id}",
        "/edits/{id}/events",
        "/generate",
        "/versions",
        "/versions/{n}",
        "/versions/{n}/revert",
        "/aliases",
        "/aliases/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    // What tests/openapi_contract.rs checks structurally is what the route serves.
    let built =
        serde_json::to_value(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    assert_eq!(spec, built);
}

#[tokio::test]
async fn probes_pages_and_metrics_need_no_token() {
    let h = harness().await;
    for path in ["/healthz", "/readyz", "/info", "/", "/docs", "/metrics"] {
        let reply = send(&h, Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let page = send(&h, Method::GET, "/", None, None).await;
    assert!(String::from_utf8_lossy(&page.body).contains("DEMO model"));
    let info = send(&h, Method::GET, "/info", None, None).await.json();
    assert_eq!(info["model"]["is_demo"], false);
    assert_eq!(info["head"], 0);
    let metrics = send(&h, Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("refact_edits_queued"), "{text}");
}
