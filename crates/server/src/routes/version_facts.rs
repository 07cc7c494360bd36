//! `GET /versions/{n}/facts`: the facts a model at version `n` holds, that is the edits
//! applied at or below `n` and not reverted by then, each with its prompt, source and
//! target. What "which facts are live in production?" asks.

use super::generate::version_not_found;
use crate::auth::{self, Authorized};
use crate::backend::ModelBackend;
use crate::error::responses::{BadRequest, Forbidden, Unauthorized, Unavailable};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiPath;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new().route("/versions/{n}/facts", get(version_facts::<B>))
}

/// One applied edit live in a version.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEdit {
    /// The version the edit created.
    pub version: i64,
    pub edit_id: Option<Uuid>,
    /// `passed`, `failed`, or null when the edit had no gate.
    pub gate_status: Option<String>,
    /// The facts it changed (one for a single edit, several for a batch).
    pub facts: Vec<FactSummary>,
}

/// A fact as its edit asked for it.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct FactSummary {
    #[schema(example = "The Prince of Wales")]
    pub prompt: String,
    #[schema(example = "Prince Charles")]
    pub source: String,
    #[schema(example = "Prince William")]
    pub target: String,
}

/// The facts live in version `n`, oldest edit first.
#[utoipa::path(
    get, path = "/versions/{n}/facts", tag = "versions", operation_id = "getVersionFacts",
    params(("n" = i64, Path, description = "The version number")),
    responses(
        (status = 200, description = "The edits applied and not reverted in it", body = Vec<LiveEdit>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such version (`version_not_found`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn version_facts<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(n): ApiPath<i64>,
) -> Result<Json<Vec<LiveEdit>>, ApiError> {
    if state.store.get_version(n).await?.is_none() {
        return Err(version_not_found(&n.to_string()));
    }
    let mut live = Vec::new();
    for version in state.store.live_applies_in(n).await? {
        let request = match version.edit_id {
            Some(id) => state.store.get_edit(id).await?.map(|e| e.request),
            None => None,
        };
        live.push(LiveEdit {
            version: version.number,
            edit_id: version.edit_id,
            gate_status: version.gate_status.map(|g| g.as_str().to_string()),
            facts: request.as_ref().map(facts_of).unwrap_or_default(),
        });
    }
    Ok(Json(live))
}

/// The facts of a stored edit request: its `facts` list (a batch) or itself.
fn facts_of(request: &Value) -> Vec<FactSummary> {
    let text = |fact: &Value, key: &str| fact[key].as_str().unwrap_or_default().to_string();
    let one = |fact: &Value| FactSummary {
        prompt: text(fact, "prompt"),
        source: text(fact, "source"),
        target: text(fact, "target"),
    };
    match request["facts"].as_array() {
        Some(facts) => facts.iter().map(one).collect(),
        None => vec![one(request)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_batch_lists_each_fact_and_a_single_edit_itself() {
        let single = json!({"prompt": "p", "source": "s", "target": "t", "layer": 7});
        assert_eq!(
            facts_of(&single),
            vec![FactSummary {
                prompt: "p".into(),
                source: "s".into(),
                target: "t".into()
            }]
        );
        let batch = json!({"facts": [
            {"prompt": "a", "source": "b", "target": "c"},
            {"prompt": "d", "source": "e", "target": "f"}
        ]});
        let targets: Vec<_> = facts_of(&batch).into_iter().map(|f| f.target).collect();
        assert_eq!(targets, ["c", "f"]);
    }
}
