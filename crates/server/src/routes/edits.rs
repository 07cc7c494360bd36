//! `/edits`: submit, list, read and cancel edits.

use crate::auth::{self, Authorized};
use crate::backend::ModelBackend;
use crate::error::responses::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::error::{ApiError, ErrorBody};
use crate::events::{EditEvent, StatusEvent};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::gate::{split_submission, GateRequest, EDIT_GATE_FIELD};
use crate::state::AppState;
use crate::worker::StopReason;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use refact_store::{request_hash, Edit, EditFilter, EditStatus, InsertOutcome, NewEdit};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/edits", get(list_edits::<B>).post(create_edit::<B>))
        .route("/edits/{id}", get(get_edit::<B>).delete(cancel_edit::<B>))
}

/// An edit as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EditView {
    pub id: Uuid,
    #[schema(value_type = EditStatusName)]
    pub status: EditStatus,
    /// The request with every default filled in.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    /// A cancel was asked for while it ran; it stops within one iteration.
    pub cancel_requested: bool,
    pub error: Option<String>,
    /// What the optimisation measured (steps, losses, final probability), once applied.
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<serde_json::Value>,
    /// The last reported iteration while it runs.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// The version it created, once applied.
    pub version: Option<i64>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Edit> for EditView {
    fn from(edit: Edit) -> Self {
        EditView {
            id: edit.id,
            status: edit.status,
            request: edit.request,
            idempotency_key: edit.idempotency_key,
            attempts: edit.attempts,
            max_attempts: edit.max_attempts,
            cancel_requested: edit.cancel_requested,
            error: edit.error,
            metrics: edit.metrics,
            progress: edit.progress,
            version: edit.version,
            created_by: edit.created_by,
            created_at: edit.created_at,
            started_at: edit.started_at,
            finished_at: edit.finished_at,
        }
    }
}

/// One page of edits, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EditPage {
    pub items: Vec<EditView>,
    /// Matching edits over all pages.
    pub total: i64,
    pub limit: u32,
    pub offset: u64,
}

/// The body of `POST /edits` (the engine's `EditRequest`, described for the OpenAPI
/// document; a unit test keeps the two in step). Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde and utoipa only
pub struct EditRequestDoc {
    /// The edit prompt.
    #[schema(example = "The Prince of Wales")]
    prompt: String,
    /// The part of the prompt the edit keys on (default: the whole prompt).
    subject: Option<String>,
    /// What the prompt shows now.
    #[schema(example = "Prince Charles")]
    source: String,
    /// What it should show.
    #[schema(example = "Prince William")]
    target: String,
    /// Further texts the edited prompt should be pushed away from.
    contrastive: Option<Vec<String>>,
    /// Text-encoder layer to edit (default: 7 of 12, scaled to each encoder's depth).
    layer: Option<usize>,
    /// Which text encoders to edit: `all` (the default), `text` or `text_2` (SDXL's
    /// second). An SDXL edit changes both by default, one delta each, in one version.
    encoder: Option<EncoderTargetDoc>,
    hparams: Option<HyperParamsDoc>,
    /// A quality gate measured after the edit; the new version is marked `passed` or
    /// `failed` (see docs/API.md).
    gate: Option<GateRequest>,
}

/// The body of a batch edit: many facts edited together at one layer into one version
/// (one rank-n delta). At most 256 facts (and no more than the edited MLP's inner size),
/// no subject twice; a fact at fault is named in the error's field (`facts[3].subject`).
/// A gate is measured in text space, per fact (efficacy) and overall; no image gate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde and utoipa only
pub struct BatchEditRequestDoc {
    /// The facts, 1 to 256.
    facts: Vec<FactDoc>,
    /// Text-encoder layer to edit, for every fact (default: 7 of 12).
    layer: Option<usize>,
    /// Which text encoders to edit: `all` (the default), `text` or `text_2`.
    encoder: Option<EncoderTargetDoc>,
    /// Spread the update over this many layers ending at `layer` (MEMIT's schedule): one
    /// rank-n delta per layer, each a share of the move. Default 1 (that layer alone);
    /// at most `layer` + 1.
    #[schema(minimum = 1)]
    spread: Option<usize>,
    hparams: Option<HyperParamsDoc>,
    /// A quality gate: every fact's efficacy (`min_efficacy` is the fraction of facts
    /// that must reach their target), the positives and negatives once on the batch's
    /// version. `images` is refused.
    gate: Option<GateRequest>,
}

/// The text encoders an edit changes.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub enum EncoderTargetDoc {
    #[serde(rename = "all")]
    All,
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "text_2")]
    Text2,
}

/// One fact of a batch edit: the fields of a single edit that differ per fact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FactDoc {
    #[schema(example = "The Prince of Wales")]
    prompt: String,
    subject: Option<String>,
    #[schema(example = "Prince Charles")]
    source: String,
    #[schema(example = "Prince William")]
    target: String,
    contrastive: Option<Vec<String>>,
}

/// What `POST /edits` takes: one edit, or a batch (a body with `facts`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // never built: serde and utoipa only
pub enum EditSubmissionDoc {
    Single(EditRequestDoc),
    Batch(BatchEditRequestDoc),
}

/// ReFACT's optimisation settings; each defaults to the paper's value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HyperParamsDoc {
    /// Adam's learning rate (default 0.05).
    lr: Option<f64>,
    /// Iterations at most (default 100, at most 10,000).
    max_steps: Option<usize>,
    /// Stop once the target's mean probability exceeds this (default 0.99).
    prob_threshold: Option<f64>,
    /// Weight of the norm penalty on δ (default 0.1).
    weight_decay: Option<f64>,
    /// ‖δ‖ is clamped to this many times ‖target_init‖ (default 4).
    clamp_factor: Option<f64>,
}

/// An edit's status: queued, running, applied, failed or cancelled (the OpenAPI
/// description of the store's `EditStatus`; a unit test keeps the two in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EditStatusName {
    Queued,
    Running,
    Applied,
    Failed,
    Cancelled,
}

/// `GET /edits` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EditListQuery {
    /// Only edits with this status (empty: all).
    #[param(value_type = Option<EditStatusName>)]
    pub status: Option<String>,
    /// Page size (default 50; at most `limits.max_page_size`, 200 by default).
    #[param(minimum = 1)]
    pub limit: Option<u32>,
    /// Edits to skip (default 0).
    pub offset: Option<u64>,
}

/// Submit an edit. It is queued and runs in the background; follow it with
/// `GET /edits/{id}` or `GET /edits/{id}/events`. With a `gate`, the worker measures the
/// edit after computing it and the new version records the metrics and the verdict.
#[utoipa::path(
    post, path = "/edits", tag = "edits", operation_id = "createEdit",
    request_body = EditSubmissionDoc,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body return the same edit")),
    responses(
        (status = 202, description = "Queued", body = EditView, headers(("Location" = String))),
        (status = 200, description = "Same idempotency key and body: the existing edit", body = EditView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "Same idempotency key, different body (`idempotency_key_conflict`)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "Invalid request (`invalid_body`, `invalid_character`, the engine's validation codes, `invalid_gate`, `invalid_idempotency_key`); nothing was stored", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["edit"]))
)]
pub async fn create_edit<B: ModelBackend>(
    State(state): State<AppState<B>>,
    auth: Authorized<auth::Edit>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let (mut request, gate) = split_submission::<B::EditRequest>(body)?;
    state.backend.validate_edit(&request)?;
    let images_gate = gate.as_ref().is_some_and(|g| g.images.is_some());
    if images_gate && state.backend.is_batch(&request) {
        return Err(ApiError::invalid(
            "unsupported",
            "gate.images",
            "image gates are measured on single edits; a batch's gate is measured in text \
             space (per fact and overall)",
        ));
    }
    if let Some(gate) = &gate {
        gate.validate(&state.settings, state.backend.summary().default_size.0)?;
    }
    state.backend.normalise_edit(&mut request);
    let request = stored_submission(&request, gate)?;
    let new_request = request.clone();
    let new_edit = NewEdit {
        request_hash: request_hash(&request),
        request,
        idempotency_key,
        created_by: auth.caller.name,
        max_attempts: state.settings.worker.max_attempts,
    };
    let (status, edit) = match state.store.insert_edit(new_edit).await? {
        InsertOutcome::Created(edit) => (StatusCode::ACCEPTED, edit),
        InsertOutcome::Existing(edit) => (StatusCode::OK, edit),
        // Stored before defaults were filled in (an older release): compare the forms
        // those requests have now.
        InsertOutcome::KeyConflict(edit) if same_when_normalised(&state, &edit, &new_request) => {
            (StatusCode::OK, edit)
        }
        InsertOutcome::KeyConflict(edit) => {
            return Err(ApiError::conflict(
                "idempotency_key_conflict",
                format!(
                    "Idempotency-Key already used for edit {} with a different body",
                    edit.id
                ),
            ))
        }
    };
    let location = HeaderValue::from_str(&format!("/edits/{}", edit.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(EditView::from(edit)),
    )
        .into_response())
}

/// The form an edit submission is stored (and hashed) in: the request with every
/// default filled in, so that the worker and readers see exactly what will run, and
/// its gate, if any.
fn stored_submission<R: serde::Serialize>(
    request: &R,
    gate: Option<crate::gate::GateRequest>,
) -> Result<serde_json::Value, ApiError> {
    let mut stored = serde_json::to_value(request)
        .map_err(|e| ApiError::Internal(format!("edit request does not serialise: {e}")))?;
    if let (Some(gate), Some(fields)) = (gate, stored.as_object_mut()) {
        let gate = serde_json::to_value(gate)
            .map_err(|e| ApiError::Internal(format!("gate does not serialise: {e}")))?;
        fields.insert(EDIT_GATE_FIELD.to_string(), gate);
    }
    Ok(stored)
}

/// True when a stored edit's request, normalised as today, equals `request`.
fn same_when_normalised<B: ModelBackend>(
    state: &AppState<B>,
    stored: &Edit,
    request: &serde_json::Value,
) -> bool {
    let Ok((mut old, gate)) = split_submission::<B::EditRequest>(stored.request.clone()) else {
        return false;
    };
    state.backend.normalise_edit(&mut old);
    stored_submission(&old, gate).is_ok_and(|old| &old == request)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad =
        |message: &str| ApiError::invalid("invalid_idempotency_key", "Idempotency-Key", message);
    let key = value
        .to_str()
        .map_err(|_| bad("must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(bad("must be 1 to 255 characters"));
    }
    // Header values may carry tabs; a key is compared byte for byte and shown in logs and
    // the dashboard, so only visible characters and spaces are accepted.
    if !key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(bad("must be visible ASCII"));
    }
    Ok(Some(key.to_string()))
}

/// List edits, newest first, optionally by status.
#[utoipa::path(
    get, path = "/edits", tag = "edits", operation_id = "listEdits",
    params(EditListQuery),
    responses(
        (status = 200, description = "One page of edits", body = EditPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list_edits<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiQuery(query): ApiQuery<EditListQuery>,
) -> Result<Json<EditPage>, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_status(text)?),
    };
    let (limit, offset) = super::Pagination {
        limit: query.limit,
        offset: query.offset,
    }
    .resolve(state.settings.limits.max_page_size)?;
    let page = state
        .store
        .list_edits(EditFilter {
            status,
            limit,
            offset,
        })
        .await?;
    Ok(Json(EditPage {
        items: page.items.into_iter().map(EditView::from).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

fn parse_status(text: &str) -> Result<EditStatus, ApiError> {
    let status = match text {
        "queued" => EditStatus::Queued,
        "running" => EditStatus::Running,
        "applied" => EditStatus::Applied,
        "failed" => EditStatus::Failed,
        "cancelled" => EditStatus::Cancelled,
        other => {
            return Err(ApiError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_query",
                message: format!(
                    "unknown status `{other}` (queued, running, applied, failed, cancelled)"
                ),
                field: Some("status".into()),
            })
        }
    };
    Ok(status)
}

/// One edit: status, attempts, metrics, resulting version, error.
#[utoipa::path(
    get, path = "/edits/{id}", tag = "edits", operation_id = "getEdit",
    params(("id" = Uuid, Path, description = "The edit's id")),
    responses(
        (status = 200, description = "The edit", body = EditView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such edit (`edit_not_found`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get_edit<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EditView>, ApiError> {
    let edit = state
        .store
        .get_edit(id)
        .await?
        .ok_or_else(|| edit_not_found(id))?;
    Ok(Json(edit.into()))
}

/// Cancel an edit: a queued one at once (200), a running one within one iteration
/// (202; follow its events). A finished edit cannot be cancelled (409).
#[utoipa::path(
    delete, path = "/edits/{id}", tag = "edits", operation_id = "cancelEdit",
    params(("id" = Uuid, Path, description = "The edit's id")),
    responses(
        (status = 200, description = "Cancelled", body = EditView),
        (status = 202, description = "Running: it stops within one iteration", body = EditView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such edit (`edit_not_found`)", body = ErrorBody),
        (status = 409, description = "Already applied or failed (`edit_finished`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["edit"]))
)]
pub async fn cancel_edit<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Edit>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let edit = state
        .store
        .request_cancel(id)
        .await?
        .ok_or_else(|| edit_not_found(id))?;
    let status = match edit.status {
        EditStatus::Cancelled => {
            state
                .events
                .publish(id, EditEvent::Status(StatusEvent::of(&edit)));
            StatusCode::OK
        }
        EditStatus::Running | EditStatus::Queued => {
            // Stop it here at once if this process runs it; other replicas see the
            // request through their heartbeat.
            state.running.stop(id, StopReason::Cancel);
            StatusCode::ACCEPTED
        }
        EditStatus::Applied | EditStatus::Failed => {
            return Err(ApiError::conflict(
                "edit_finished",
                format!("edit {id} has already finished"),
            ))
        }
    };
    Ok((status, Json(EditView::from(edit))).into_response())
}

/// The 404 for an unknown edit id.
pub fn edit_not_found(id: Uuid) -> ApiError {
    ApiError::not_found("edit_not_found", format!("no edit {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_engine::refact::{EditRequest, HyperParams};

    #[test]
    fn the_documented_body_matches_the_engine_request() {
        // Every field the engine writes must be one the documentation declares.
        let mut request =
            EditRequest::new("The Prince of Wales", "Prince Charles", "Prince William");
        request.subject = Some("Prince of Wales".into());
        request.contrastive = vec!["a king".into()];
        request.layer = Some(7);
        request.hparams = HyperParams::default();
        let json = serde_json::to_value(&request).unwrap();
        let doc: Result<EditRequestDoc, _> = serde_json::from_value(json.clone());
        assert!(doc.is_ok(), "EditRequestDoc is out of date: {json}");
    }

    #[test]
    fn the_documented_statuses_match_the_store() {
        for status in [
            EditStatus::Queued,
            EditStatus::Running,
            EditStatus::Applied,
            EditStatus::Failed,
            EditStatus::Cancelled,
        ] {
            let json = serde_json::to_value(status).unwrap();
            let name: EditStatusName = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(serde_json::to_value(name).unwrap(), json);
            assert_eq!(parse_status(status.as_str()).unwrap(), status);
        }
    }
}
