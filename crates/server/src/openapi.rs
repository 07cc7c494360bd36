//! The OpenAPI document, generated from the handlers' annotations.

use crate::routes::{
    aliases, edit_events, edits, generate, health, metrics, operations, version_facts, versions,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "refact-serve",
        description = "Apply ReFACT edits to a Stable Diffusion text encoder as versioned, queued jobs, and generate images at any version. Errors are always `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    paths(
        edits::create_edit,
        edits::list_edits,
        edits::get_edit,
        edits::cancel_edit,
        edit_events::edit_events,
        generate::generate,
        versions::list_versions,
        versions::get_version,
        versions::revert_version,
        version_facts::version_facts,
        aliases::list_aliases,
        aliases::get_alias,
        aliases::set_alias,
        aliases::delete_alias,
        aliases::alias_history,
        health::healthz,
        health::readyz,
        health::info,
        metrics::metrics,
        operations::operations,
        operations::webhook_deliveries,
    ),
    components(
        schemas(
            crate::error::ErrorBody,
            crate::error::ErrorDetail,
            crate::events::EditEvent,
            crate::events::StatusEvent,
            crate::backend::EditProgress,
            crate::routes::edits::EditStatusName,
        ),
        responses(
            crate::error::responses::BadRequest,
            crate::error::responses::Unauthorized,
            crate::error::responses::Forbidden,
            crate::error::responses::PayloadTooLarge,
            crate::error::responses::UnsupportedMediaType,
            crate::error::responses::Unavailable,
        )
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "edits", description = "Submit, follow and cancel ReFACT edits"),
        (name = "generate", description = "Render images at a version"),
        (name = "versions", description = "Model versions and reverts"),
        (name = "aliases", description = "Named versions (production, staging)"),
        (name = "health", description = "Probes, metrics, server information"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the paths refer to (scopes are listed per path).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
