//! The server's one error type and its HTTP shape.
//!
//! Every error leaves the server as `{"error": {"code", "message", "field"}}`, including
//! the ones axum would answer on its own (malformed JSON, unknown route, 405, 413). Only
//! this file picks status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use refact_engine::EngineError;
use refact_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Anything that can go wrong in the server, from a bad request to a failed start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read: bad JSON syntax, wrong content type, bad path or
    /// query. `status` is 400, 413 or 415.
    #[error("{message}")]
    BadRequest {
        status: StatusCode,
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The request was read but its content is refused (422); nothing was stored.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    /// No token, or one the server does not know (401).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// A valid token without the scope the endpoint needs (403).
    #[error("this token lacks the `{scope}` scope")]
    Forbidden { scope: &'static str },
    /// An unknown route, edit, version or alias (404).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request contradicts the current state (409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The generation queue is full; retry later (503).
    #[error("{0}")]
    Overloaded(String),
    /// A dependency is not ready (503): `/readyz`, or a request that timed out.
    #[error("{0}")]
    Unavailable(String),
    /// The server is stopping (503 with `Retry-After`): send the request again, to
    /// another replica or to this one once restarted.
    #[error("the server is shutting down; retry shortly")]
    ShuttingDown,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The settings cannot be read or make no sense (a start-up error).
    #[error("settings: {0}")]
    Settings(String),
    /// A bug or an unexpected failure (500); the details go to the log, not the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code (see docs/API.md for the list).
    #[schema(example = "subject_not_in_prompt")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, or `null` (always present).
    #[schema(required = true)]
    pub field: Option<String>,
}

/// Error responses that many operations share, as reusable OpenAPI response components
/// (`#/components/responses/...`), each with an [`ErrorBody`]. Operations list them by
/// the extractors they use: [`crate::auth::Authorized`] (401, 403),
/// [`crate::extract::ApiJson`] (400, 413, 415), [`crate::extract::ApiPath`] and
/// [`crate::extract::ApiQuery`] with typed parameters (400), and every route (503 when it
/// outlasts `limits.request_timeout_secs`).
pub mod responses {
    use utoipa::openapi::header::Header;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Content, Ref, RefOr, Response};
    use utoipa::ToResponse;

    macro_rules! error_response {
        ($(#[doc = $doc:literal])* $name:ident, $description:literal $(, $header:literal)*) => {
            $(#[doc = $doc])*
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let content = Content::new(Some(Ref::from_schema_name("ErrorBody")));
                    #[allow(unused_mut)]
                    let mut response = Response::builder()
                        .description($description)
                        .content("application/json", content);
                    $(
                        response = response.header(
                            $header,
                            Header::new(ObjectBuilder::new().schema_type(Type::String)),
                        );
                    )*
                    (stringify!($name), response.build().into())
                }
            }
        };
    }

    error_response!(
        /// 400 from the extractors.
        BadRequest,
        "The request could not be read: malformed JSON (`malformed_json`), an unreadable body (`unreadable_body`), or a path segment or query parameter of the wrong type or out of range (`invalid_path`, `invalid_query`)"
    );
    error_response!(
        /// 401 from [`crate::auth::Authorized`].
        Unauthorized,
        "No token (`unauthorized`), or an unknown, revoked or malformed one (`invalid_token`)",
        "WWW-Authenticate"
    );
    error_response!(
        /// 403 from [`crate::auth::Authorized`].
        Forbidden,
        "The token lacks the scope this operation needs (`missing_scope`)"
    );
    error_response!(
        /// 413 from [`crate::extract::ApiJson`].
        PayloadTooLarge,
        "The body is larger than `limits.max_body_bytes` (`payload_too_large`)"
    );
    error_response!(
        /// 415 from [`crate::extract::ApiJson`].
        UnsupportedMediaType,
        "The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)"
    );
    error_response!(
        /// 503 from the router's time limit.
        Unavailable,
        "The request took longer than `limits.request_timeout_secs` (`unavailable`)"
    );
}

impl ApiError {
    /// A 422 with a code and the field at fault.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// A 404 with a code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    /// A 409 with a code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status, code, client-facing message and field of this error.
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        use ApiError::*;
        match self {
            BadRequest {
                status,
                code,
                message,
                field,
            } => (*status, *code, message.clone(), field.clone()),
            Invalid {
                code,
                field,
                message,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                *code,
                message.clone(),
                field.clone(),
            ),
            Unauthorized { code, message } => {
                (StatusCode::UNAUTHORIZED, *code, message.clone(), None)
            }
            Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "missing_scope",
                self.to_string(),
                None,
            ),
            NotFound { code, message } => (StatusCode::NOT_FOUND, *code, message.clone(), None),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                self.to_string(),
                None,
            ),
            Conflict { code, message } => (StatusCode::CONFLICT, *code, message.clone(), None),
            Overloaded(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                message.clone(),
                None,
            ),
            Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message.clone(),
                None,
            ),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                self.to_string(),
                None,
            ),
            Store(err) => store_parts(err),
            Engine(EngineError::Invalid {
                kind,
                field,
                message,
            }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                kind.as_code(),
                message.clone(),
                Some(field.clone()),
            ),
            Engine(EngineError::Cancelled) => (
                StatusCode::CONFLICT,
                "cancelled",
                "the computation was cancelled".into(),
                None,
            ),
            Engine(_) | Settings(_) | Internal(_) => internal(),
        }
    }
}

fn store_parts(err: &StoreError) -> (StatusCode, &'static str, String, Option<String>) {
    if err.is_unavailable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unreachable; try again shortly".into(),
            None,
        );
    }
    match err {
        StoreError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what.clone(), None),
        StoreError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message.clone(), None),
        StoreError::HeadMoved { .. } => (StatusCode::CONFLICT, "head_moved", err.to_string(), None),
        StoreError::Invalid { field, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            message.clone(),
            Some(field.to_string()),
        ),
        _ => internal(),
    }
}

fn internal() -> (StatusCode, &'static str, String, Option<String>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error (details are in the server log)".into(),
        None,
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = self.parts();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                field,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Overloaded(_) | ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Store(err) if err.is_unavailable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_engine::InvalidKind;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_database_is_503_with_retry_after_not_500() {
        for cause in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let response = ApiError::Store(StoreError::Database(cause)).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "2");
            let (_, body) = body_of(ApiError::Store(StoreError::Database(
                sqlx::Error::PoolTimedOut,
            )))
            .await;
            assert_eq!(body["error"]["code"], "unavailable");
        }
        // A database error that is not about reaching it stays an internal error.
        let (status, _) = body_of(ApiError::Store(StoreError::Database(
            sqlx::Error::RowNotFound,
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn engine_validation_errors_become_422_with_the_kind_code() {
        let err = EngineError::invalid(InvalidKind::SubjectNotInPrompt, "subject", "not there");
        let (status, body) = body_of(err.into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "subject_not_in_prompt");
        assert_eq!(body["error"]["field"], "subject");
        assert_eq!(body["error"]["message"], "not there");
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_details() {
        let (status, body) = body_of(ApiError::Internal("secret path /x".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("secret path"));
        assert!(body["error"]["field"].is_null());
    }
}
