//! Bad requests, table-driven: each gets its status and error code, and none stores
//! anything.

use crate::helpers::{edit_body, generate_body, spawn_app, Db};
use refact_store::{EditFilter, Scope};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

on_both_databases!(bad_requests_get_their_status_and_code_and_store_nothing);

/// Which credentials a case sends.
#[derive(Clone, Copy)]
enum Token {
    Admin,
    None,
    Unknown,
    Malformed,
    ReadOnly,
    EditOnly,
}

/// What a case sends as its body.
enum Body {
    None,
    Json(Value),
    /// Raw bytes sent as `application/json`.
    Raw(String),
    /// JSON without a Content-Type header.
    NoContentType(Value),
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Token,
    body: Body,
    header: Option<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: Body,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        token: Token::Admin,
        body,
        header: None,
        status: StatusCode::from_u16(status).unwrap(),
        code,
    }
}

fn with(mut value: Value, key: &str, field: Value) -> Value {
    value[key] = field;
    value
}

fn cases() -> Vec<Case> {
    let edit = edit_body("Prince William");
    let image = generate_body(1);
    let unknown_id = uuid::Uuid::new_v4();
    let long_prompt = "a very long prompt ".repeat(40);
    let mut missing_target = edit.clone();
    missing_target.as_object_mut().unwrap().remove("target");
    let mut cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            "/edits",
            Body::Raw(r#"{"prompt": "The"#.into()),
            400,
            "malformed_json",
        ),
        case(
            "trailing garbage",
            Method::POST,
            "/edits",
            Body::Raw(format!("{edit} x")),
            400,
            "malformed_json",
        ),
        case(
            "wrong type",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "prompt", json!(5))),
            422,
            "invalid_body",
        ),
        case(
            "missing field",
            Method::POST,
            "/edits",
            Body::Json(missing_target),
            422,
            "invalid_body",
        ),
        case(
            "NUL character in a prompt (PostgreSQL cannot store it)",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "source", json!("Prince\u{0}Charles"))),
            422,
            "invalid_character",
        ),
        case(
            "more contrastive texts than allowed",
            Method::POST,
            "/edits",
            Body::Json(with(
                edit.clone(),
                "contrastive",
                json!(vec!["a cat"; refact_engine::refact::MAX_CONTRASTIVE + 1]),
            )),
            422,
            "too_many",
        ),
        case(
            "JSON array body",
            Method::POST,
            "/edits",
            Body::Json(json!([1, 2])),
            422,
            "invalid_body",
        ),
        case(
            "empty prompt",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "prompt", json!(""))),
            422,
            "empty",
        ),
        case(
            "subject not in prompt",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "subject", json!("The Queen"))),
            422,
            "subject_not_in_prompt",
        ),
        case(
            "layer out of range",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "layer", json!(99))),
            422,
            "layer_out_of_range",
        ),
        case(
            "a text encoder the model lacks (SD v1.x has only `text`)",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "encoder", json!("text_2"))),
            422,
            "unknown_name",
        ),
        case(
            "oversized prompt",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "target", json!(long_prompt))),
            422,
            "too_long",
        ),
        case(
            "source equals target",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "target", json!("Prince Charles"))),
            422,
            "source_equals_target",
        ),
        case(
            "negative max_steps",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "hparams", json!({"max_steps": -3}))),
            422,
            "invalid_body",
        ),
        case(
            "max_steps beyond the limit",
            Method::POST,
            "/edits",
            Body::Json(with(
                edit.clone(),
                "hparams",
                json!({"max_steps": 1_000_000}),
            )),
            422,
            "bad_hyper_parameter",
        ),
        case(
            "unknown hyper-parameter",
            Method::POST,
            "/edits",
            Body::Json(with(edit.clone(), "hparams", json!({"learning_rate": 0.1}))),
            422,
            "invalid_body",
        ),
        case(
            "no content type",
            Method::POST,
            "/edits",
            Body::NoContentType(edit.clone()),
            415,
            "unsupported_media_type",
        ),
        case(
            "body too large",
            Method::POST,
            "/edits",
            Body::Raw(format!(r#"{{"prompt": "{}"}}"#, "x".repeat(70_000))),
            413,
            "payload_too_large",
        ),
        Case {
            token: Token::None,
            ..case(
                "no token",
                Method::POST,
                "/edits",
                Body::Json(edit.clone()),
                401,
                "unauthorized",
            )
        },
        Case {
            token: Token::Unknown,
            ..case(
                "unknown token",
                Method::POST,
                "/edits",
                Body::Json(edit.clone()),
                401,
                "invalid_token",
            )
        },
        Case {
            token: Token::Malformed,
            ..case(
                "not a bearer token",
                Method::GET,
                "/edits",
                Body::None,
                401,
                "invalid_token",
            )
        },
        Case {
            token: Token::ReadOnly,
            ..case(
                "read token cannot edit",
                Method::POST,
                "/edits",
                Body::Json(edit.clone()),
                403,
                "missing_scope",
            )
        },
        Case {
            token: Token::ReadOnly,
            ..case(
                "scope is checked before the body",
                Method::POST,
                "/edits",
                Body::Raw("{".into()),
                403,
                "missing_scope",
            )
        },
        Case {
            token: Token::EditOnly,
            ..case(
                "edit token cannot generate",
                Method::POST,
                "/generate",
                Body::Json(image.clone()),
                403,
                "missing_scope",
            )
        },
        Case {
            token: Token::EditOnly,
            ..case(
                "edit token cannot read",
                Method::GET,
                "/versions",
                Body::None,
                403,
                "missing_scope",
            )
        },
        Case {
            header: Some(("Idempotency-Key", "k".repeat(300))),
            ..case(
                "idempotency key too long",
                Method::POST,
                "/edits",
                Body::Json(edit.clone()),
                422,
                "invalid_idempotency_key",
            )
        },
        Case {
            header: Some(("Idempotency-Key", "push\tkey".into())),
            ..case(
                "tab in an idempotency key",
                Method::POST,
                "/edits",
                Body::Json(edit.clone()),
                422,
                "invalid_idempotency_key",
            )
        },
        case(
            "huge width",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "width", json!(100_000))),
            422,
            "bad_generation_setting",
        ),
        case(
            "width not a multiple of 8",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "width", json!(65))),
            422,
            "bad_generation_setting",
        ),
        case(
            "steps 0",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "steps", json!(0))),
            422,
            "bad_generation_setting",
        ),
        case(
            "steps 10000",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "steps", json!(10_000))),
            422,
            "bad_generation_setting",
        ),
        case(
            "unknown scheduler",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "scheduler", json!("warp_drive"))),
            422,
            "unknown_name",
        ),
        case(
            "width of the wrong type",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "width", json!("big"))),
            422,
            "invalid_body",
        ),
        case(
            "unknown generate field",
            Method::POST,
            "/generate",
            Body::Json(with(image.clone(), "stepz", json!(3))),
            422,
            "invalid_body",
        ),
        case(
            "unknown version number",
            Method::POST,
            "/generate?version=99",
            Body::Json(image.clone()),
            404,
            "version_not_found",
        ),
        case(
            "unknown alias",
            Method::POST,
            "/generate?version=staging",
            Body::Json(image.clone()),
            404,
            "version_not_found",
        ),
        case(
            "unknown edit id",
            Method::GET,
            &format!("/edits/{unknown_id}"),
            Body::None,
            404,
            "edit_not_found",
        ),
        case(
            "cancel unknown edit",
            Method::DELETE,
            &format!("/edits/{unknown_id}"),
            Body::None,
            404,
            "edit_not_found",
        ),
        case(
            "edit id not a uuid",
            Method::GET,
            "/edits/not-a-uuid",
            Body::None,
            400,
            "invalid_path",
        ),
        case(
            "unknown status filter",
            Method::GET,
            "/edits?status=done",
            Body::None,
            400,
            "invalid_query",
        ),
        case(
            "page size 0",
            Method::GET,
            "/versions?limit=0",
            Body::None,
            400,
            "invalid_query",
        ),
        case(
            "unknown version",
            Method::GET,
            "/versions/42",
            Body::None,
            404,
            "version_not_found",
        ),
        case(
            "revert the base",
            Method::POST,
            "/versions/0/revert",
            Body::None,
            409,
            "revert_conflict",
        ),
        case(
            "revert unknown version",
            Method::POST,
            "/versions/5/revert",
            Body::None,
            404,
            "version_not_found",
        ),
        case(
            "alias to unknown version",
            Method::PUT,
            "/aliases/production",
            Body::Json(json!({"version": 42})),
            404,
            "version_not_found",
        ),
        case(
            "numeric alias name",
            Method::PUT,
            "/aliases/7",
            Body::Json(json!({"version": 0})),
            422,
            "invalid_alias_name",
        ),
        case(
            "delete unknown alias",
            Method::DELETE,
            "/aliases/staging",
            Body::None,
            404,
            "alias_not_found",
        ),
        case(
            "unknown route",
            Method::GET,
            "/nope",
            Body::None,
            404,
            "not_found",
        ),
        case(
            "wrong method",
            Method::PUT,
            "/edits",
            Body::None,
            405,
            "method_not_allowed",
        ),
    ];
    // A prompt over the configured character limit, for generation.
    cases.push(case(
        "generate prompt too long",
        Method::POST,
        "/generate",
        Body::Json(with(image, "prompt", json!("x".repeat(2000)))),
        422,
        "too_long",
    ));
    cases
}

async fn bad_requests_get_their_status_and_code_and_store_nothing(db: Db) {
    let app = spawn_app(db, |s| s.worker.enabled = false).await;
    let (reader, _) = app
        .store
        .create_token("reader", &[Scope::Read])
        .await
        .unwrap();
    let (editor, _) = app
        .store
        .create_token("editor", &[Scope::Edit])
        .await
        .unwrap();
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let mut request = app.client.request(case.method.clone(), app.url(&case.path));
        request = match case.token {
            Token::Admin => request.bearer_auth(&app.token),
            Token::None => request,
            Token::Unknown => request.bearer_auth(
                "rfs_0000000000000000000000000000000000000000000000000000000000000000",
            ),
            Token::Malformed => request.header("Authorization", format!("Basic {}", app.token)),
            Token::ReadOnly => request.bearer_auth(&reader),
            Token::EditOnly => request.bearer_auth(&editor),
        };
        if let Some((name, value)) = &case.header {
            request = request.header(*name, value);
        }
        request = match case.body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(text) => request.header(CONTENT_TYPE, "application/json").body(text),
            Body::NoContentType(value) => request.body(value.to_string()),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("<no error body>");
        let message_ok =
            body["error"]["message"].is_string() && body["error"].get("field").is_some();
        if status != case.status || code != case.code || !message_ok {
            failures.push(format!(
                "{}: expected {} {}, got {status} {text}",
                case.name, case.status, case.code
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing was stored.
    let edits = app
        .store
        .list_edits(EditFilter {
            status: None,
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(edits.total, 0);
    assert_eq!(app.store.head().await.unwrap().number, 0);
    assert!(app.store.list_aliases().await.unwrap().is_empty());
}
