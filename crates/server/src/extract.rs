//! Extractors whose rejections use the API's error shape instead of axum's plain text.
//!
//! Status codes (documented in docs/API.md): syntax errors in JSON → 400 `malformed_json`;
//! a body that is valid JSON but has wrong types, missing or unknown fields → 422
//! `invalid_body` (with the field's JSON path); no JSON content type → 415
//! `unsupported_media_type`; a body over the limit → 413 `payload_too_large`; an
//! unparsable path segment or query string → 400 `invalid_path` / `invalid_query`.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// A JSON body, parsed with the field at fault reported on errors.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::BadRequest {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                message: "expected a `Content-Type: application/json` body".into(),
                field: None,
            });
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON document, classifying failures as syntax (400) or content (422) errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    refuse_nul_characters(bytes)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        classify(err.into_inner(), &path)
    })?;
    // Trailing characters after the document are a syntax error too.
    deserializer.end().map_err(|err| classify(err, "."))?;
    Ok(value)
}

/// PostgreSQL stores no NUL character in text or JSON values (SQLite would, and the two
/// databases must accept the same requests), so a body with one in any string is refused
/// before anything is stored: 422 `invalid_character`, naming the field. Inside JSON a
/// NUL can only be the escape `\u0000`, so bodies without it are not parsed twice.
fn refuse_nul_characters(bytes: &[u8]) -> Result<(), ApiError> {
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    // A syntax error is reported by the typed parse that follows.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match path_of_nul(&value, "") {
        None => Ok(()),
        Some(field) => Err(ApiError::Invalid {
            code: "invalid_character",
            message: format!("{field} contains a NUL character (\\u0000), which cannot be stored"),
            field: Some(field),
        }),
    }
}

/// The JSON path (`gate.negatives[0].new`) of the first string holding a NUL.
fn path_of_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let named = |path: &str| {
        if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        }
    };
    match value {
        Value::String(text) => text.contains('\0').then(|| named(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| path_of_nul(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some(named(path));
            }
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            path_of_nul(item, &inner)
        }),
        _ => None,
    }
}

/// Deserializes part of a parsed body; a bad field is reported (422 `invalid_body`) by its
/// JSON path below `prefix` (`""` for the whole body).
pub fn parse_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let path = match (prefix, inner.as_str()) {
            ("", inner) => inner.to_string(),
            (prefix, ".") => prefix.to_string(),
            (prefix, inner) => format!("{prefix}.{inner}"),
        };
        classify(err.into_inner(), &path)
    })
}

fn classify(err: serde_json::Error, path: &str) -> ApiError {
    match err.classify() {
        serde_json::error::Category::Data => ApiError::Invalid {
            code: "invalid_body",
            field: field_name(path, &err.to_string()),
            message: err.to_string(),
        },
        _ => ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
            message: format!("the body is not valid JSON: {err}"),
            field: None,
        },
    }
}

/// The field a serde error is about: its JSON path, or for a missing field the name
/// serde quotes (the path then points at the enclosing object).
fn field_name(path: &str, message: &str) -> Option<String> {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let prefix = if path == "." { "" } else { path };
    match missing {
        Some(name) if prefix.is_empty() => Some(name.to_string()),
        Some(name) => Some(format!("{prefix}.{name}")),
        None if prefix.is_empty() => None,
        None => Some(prefix.to_string()),
    }
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BadRequest {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: "the request body is larger than the server accepts".into(),
            field: None,
        }
    } else {
        ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "unreadable_body",
            message: rejection.body_text(),
            field: None,
        }
    }
}

/// Path parameters; a segment of the wrong type is a 400 `invalid_path`.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| ApiError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_path",
                message: rejection.body_text(),
                field: None,
            })
    }
}

/// A query string; a parameter of the wrong type is a 400 `invalid_query`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| ApiError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: rejection.body_text(),
                field: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        prompt: String,
        steps: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        scale: f64,
    }

    fn code_and_field(err: ApiError) -> (&'static str, Option<String>) {
        match err {
            ApiError::Invalid { code, field, .. } => (code, field),
            ApiError::BadRequest { code, field, .. } => (code, field),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let err = parse_json::<Body>(br#"{"prompt": "a", "#).unwrap_err();
        assert_eq!(code_and_field(err), ("malformed_json", None));
        let err = parse_json::<Body>(br#"{"prompt": "a", "steps": 1} trailing"#).unwrap_err();
        assert_eq!(code_and_field(err).0, "malformed_json");
    }

    #[test]
    fn content_errors_name_the_field() {
        let err = parse_json::<Body>(br#"{"prompt": "a", "steps": "ten"}"#).unwrap_err();
        assert_eq!(code_and_field(err), ("invalid_body", Some("steps".into())));
        let err = parse_json::<Body>(br#"{"steps": 1}"#).unwrap_err();
        assert_eq!(code_and_field(err), ("invalid_body", Some("prompt".into())));
        let err = parse_json::<Body>(br#"{"prompt": "a", "steps": 1, "inner": {}}"#).unwrap_err();
        assert_eq!(
            code_and_field(err),
            ("invalid_body", Some("inner.scale".into()))
        );
        let err = parse_json::<Body>(br#"{"prompt": "a", "steps": 1, "stepz": 2}"#).unwrap_err();
        assert_eq!(code_and_field(err).0, "invalid_body");
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_naming_the_field() {
        let err = parse_json::<Body>(br#"{"prompt": "a\u0000b", "steps": 1}"#).unwrap_err();
        assert_eq!(
            code_and_field(err),
            ("invalid_character", Some("prompt".into()))
        );
        let nested = br#"{"gate": {"negatives": [{"new": "x"}, {"new": "\u0000"}]}}"#;
        let err = parse_json::<serde_json::Value>(nested).unwrap_err();
        assert_eq!(
            code_and_field(err),
            ("invalid_character", Some("gate.negatives[1].new".into()))
        );
        // An escaped backslash followed by "u0000" is not a NUL.
        let text = parse_json::<Body>(br#"{"prompt": "a\\u0000", "steps": 1}"#).unwrap();
        assert_eq!(text.prompt, "a\\u0000");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!has_json_content_type(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(has_json_content_type(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(has_json_content_type(&headers));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!has_json_content_type(&headers));
    }
}
