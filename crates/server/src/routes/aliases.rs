//! `/aliases`: named pointers at versions (`production`, `staging`, ...).

use super::generate::version_not_found;
use crate::auth::{self, Authorized};
use crate::backend::ModelBackend;
use crate::error::responses::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use refact_store::{Alias, AliasChange, AliasEvent, GateStatus, Scope};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// Longest alias name.
const MAX_NAME_LEN: usize = 64;

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new()
        .route("/aliases", get(list_aliases::<B>))
        .route("/aliases/{name}/history", get(alias_history::<B>))
        .route(
            "/aliases/{name}",
            get(get_alias::<B>)
                .put(set_alias::<B>)
                .delete(delete_alias::<B>),
        )
}

/// An alias and the version it points at.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasView {
    #[schema(example = "production")]
    pub name: String,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// Moving it needs the `admin` scope or a version whose own gate passed.
    pub protected: bool,
}

impl From<Alias> for AliasView {
    fn from(alias: Alias) -> Self {
        AliasView {
            name: alias.name,
            version: alias.version,
            updated_at: alias.updated_at,
            protected: alias.protected,
        }
    }
}

/// One move or removal of an alias.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasEventView {
    /// Increasing over all aliases.
    pub id: i64,
    /// `moved` (also its creation) or `removed`.
    #[schema(example = "moved")]
    pub action: String,
    /// The version before; null when the alias was created.
    pub from_version: Option<i64>,
    /// The version after; null when it was removed.
    pub to_version: Option<i64>,
    /// The name of the token that did it (`anonymous` with auth off).
    pub actor: String,
    /// Moved past a failed gate with `force`.
    pub forced: bool,
    pub at: DateTime<Utc>,
}

impl From<AliasEvent> for AliasEventView {
    fn from(event: AliasEvent) -> Self {
        AliasEventView {
            id: event.id,
            action: event.action,
            from_version: event.from_version,
            to_version: event.to_version,
            actor: event.actor,
            forced: event.forced,
            at: event.at,
        }
    }
}

/// `GET /aliases/{name}/history?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Most entries returned, newest first (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The body of `PUT /aliases/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAliasRequest {
    pub version: i64,
    /// Point at the version even though it contains an edit whose quality gate failed.
    #[serde(default)]
    pub force: bool,
    /// Mark the alias protected (or not); absent keeps what it was. Removing the
    /// protection needs the `admin` scope.
    #[serde(default)]
    pub protected: Option<bool>,
}

/// Alias names: 1–64 of `a-z 0-9 - _ .`, starting with a letter (so that a name is
/// never mistaken for a version number in `?version=`).
pub fn check_alias_name(name: &str) -> Result<(), ApiError> {
    let valid = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_alias_name",
            "name",
            "an alias is 1 to 64 characters of a-z, 0-9, '-', '_', '.', starting with a letter",
        ))
    }
}

/// All aliases.
#[utoipa::path(
    get, path = "/aliases", tag = "aliases", operation_id = "listAliases",
    responses(
        (status = 200, description = "Every alias", body = Vec<AliasView>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list_aliases<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
) -> Result<Json<Vec<AliasView>>, ApiError> {
    let aliases = state.store.list_aliases().await?;
    Ok(Json(aliases.into_iter().map(AliasView::from).collect()))
}

/// One alias.
#[utoipa::path(
    get, path = "/aliases/{name}", tag = "aliases", operation_id = "getAlias",
    params(("name" = String, Path, description = "The alias", pattern = r"^[a-z][a-z0-9._-]{0,63}$")),
    responses(
        (status = 200, description = "The alias", body = AliasView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such alias (`alias_not_found`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get_alias<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AliasView>, ApiError> {
    let alias = state
        .store
        .get_alias(&name)
        .await?
        .ok_or_else(|| alias_not_found(&name))?;
    Ok(Json(alias.into()))
}

/// Point an alias at a version (creating it if needed), recorded in the alias's history
/// and sent to webhooks as `alias.moved`. A version that contains an edit whose quality
/// gate failed (applied and not reverted by then) is refused unless `force` is set. A
/// protected alias moves only for an admin or onto a version whose own gate passed.
#[utoipa::path(
    put, path = "/aliases/{name}", tag = "aliases", operation_id = "setAlias",
    params(("name" = String, Path, description = "The alias: 1 to 64 of a-z, 0-9, '-', '_', '.', starting with a letter", pattern = r"^[a-z][a-z0-9._-]{0,63}$")),
    request_body = SetAliasRequest,
    responses(
        (status = 200, description = "The alias, now pointing at the version", body = AliasView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown version (`version_not_found`)", body = ErrorBody),
        (status = 409, description = "The version contains a failed gate (`gate_failed`), or the alias is protected and neither is the caller an admin nor did the version's gate pass (`alias_protected`)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "Bad alias name (`invalid_alias_name`) or body (`invalid_body`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["edit"]))
)]
pub async fn set_alias<B: ModelBackend>(
    State(state): State<AppState<B>>,
    auth: Authorized<auth::Edit>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SetAliasRequest>,
) -> Result<Json<AliasView>, ApiError> {
    check_alias_name(&name)?;
    let Some(version) = state.store.get_version(body.version).await? else {
        return Err(version_not_found(&body.version.to_string()));
    };
    let caller = &auth.caller;
    let before = state.store.get_alias(&name).await?;
    if let Some(before) = before.as_ref().filter(|a| a.protected) {
        check_protected_move(caller, before, body.version, version.gate_status)?;
        if body.protected == Some(false) && !caller.has(Scope::Admin) {
            return Err(ApiError::conflict(
                "alias_protected",
                format!("removing the protection of alias {name} needs the admin scope"),
            ));
        }
    }
    let failed = state.store.failed_gates_in(body.version).await?;
    if !failed.is_empty() {
        if !body.force {
            let list: Vec<String> = failed.iter().map(i64::to_string).collect();
            return Err(ApiError::conflict(
                "gate_failed",
                format!(
                    "version {} contains edits whose quality gate failed (versions {}); \
                     revert them, or set `force: true`",
                    body.version,
                    list.join(", ")
                ),
            ));
        }
        tracing::warn!(alias = %name, version = body.version, ?failed, "alias forced onto a version with failed gates");
    }
    let change = AliasChange {
        actor: &caller.name,
        forced: !failed.is_empty(),
        protected: body.protected,
    };
    let alias = state.store.set_alias(&name, body.version, &change).await?;
    let from = before.map(|b| b.version);
    if from != Some(alias.version) {
        state
            .webhooks
            .emit(
                crate::webhooks::ALIAS_MOVED,
                json!({
                    "alias": alias.name,
                    "from_version": from,
                    "to_version": alias.version,
                    "actor": caller.name,
                    "forced": change.forced,
                    "protected": alias.protected,
                }),
            )
            .await;
    }
    Ok(Json(alias.into()))
}

/// A protected alias moves only for an admin, or onto a version whose own quality gate
/// passed (the version of a gated edit). Staying where it is is always allowed.
fn check_protected_move(
    caller: &crate::auth::Caller,
    alias: &Alias,
    target: i64,
    target_gate: Option<GateStatus>,
) -> Result<(), ApiError> {
    if caller.has(Scope::Admin)
        || alias.version == target
        || target_gate == Some(GateStatus::Passed)
    {
        return Ok(());
    }
    Err(ApiError::conflict(
        "alias_protected",
        format!(
            "alias {} is protected: moving it needs the admin scope, or a version whose \
             quality gate passed (version {target} has {})",
            alias.name,
            match target_gate {
                Some(GateStatus::Failed) => "a failed gate",
                _ => "no gate",
            }
        ),
    ))
}

/// The moves and removals of an alias, newest first (also after it was removed): who
/// (the token's name), when, from which version to which, forced past a failed gate.
#[utoipa::path(
    get, path = "/aliases/{name}/history", tag = "aliases", operation_id = "getAliasHistory",
    params(
        ("name" = String, Path, description = "The alias", pattern = r"^[a-z][a-z0-9._-]{0,63}$"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "Its history, newest first", body = Vec<AliasEventView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such alias, now or ever (`alias_not_found`)", body = ErrorBody),
        (status = 422, description = "Bad alias name (`invalid_alias_name`) or limit (`invalid_query`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn alias_history<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<AliasEventView>>, ApiError> {
    check_alias_name(&name)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=refact_store::MAX_ALIAS_HISTORY).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_query",
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let events = state.store.alias_history(&name, limit).await?;
    if events.is_empty() && state.store.get_alias(&name).await?.is_none() {
        return Err(alias_not_found(&name));
    }
    Ok(Json(events.into_iter().map(AliasEventView::from).collect()))
}

/// Remove an alias.
#[utoipa::path(
    delete, path = "/aliases/{name}", tag = "aliases", operation_id = "deleteAlias",
    params(("name" = String, Path, description = "The alias", pattern = r"^[a-z][a-z0-9._-]{0,63}$")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such alias (`alias_not_found`)", body = ErrorBody),
        (status = 409, description = "The alias is protected and the caller no admin (`alias_protected`)", body = ErrorBody),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["edit"]))
)]
pub async fn delete_alias<B: ModelBackend>(
    State(state): State<AppState<B>>,
    auth: Authorized<auth::Edit>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let protected = state
        .store
        .get_alias(&name)
        .await?
        .is_some_and(|a| a.protected);
    if protected && !auth.caller.has(Scope::Admin) {
        return Err(ApiError::conflict(
            "alias_protected",
            format!("alias {name} is protected: removing it needs the admin scope"),
        ));
    }
    if state.store.delete_alias(&name, &auth.caller.name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(alias_not_found(&name))
    }
}

fn alias_not_found(name: &str) -> ApiError {
    ApiError::not_found("alias_not_found", format!("no alias `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_are_checked() {
        for good in ["production", "staging", "a", "canary-2", "v1.2_rc"] {
            assert!(check_alias_name(good).is_ok(), "{good}");
        }
        for bad in ["", "7", "Production", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }
}
