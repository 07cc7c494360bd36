//! `POST /generate`: render an image at any version.

use crate::auth::{self, Authorized};
use crate::backend::{GenerateParams, ModelBackend};
use crate::error::responses::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, UnsupportedMediaType,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};
use crate::settings::Limits;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use refact_engine::InvalidKind;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

/// Response headers that echo what was rendered.
pub const VERSION_HEADER: &str = "x-refact-version";
pub const SEED_HEADER: &str = "x-refact-seed";
/// How many images the image's batch rendered (1: alone); the image is the same either way.
pub const BATCH_HEADER: &str = "x-refact-batch-size";

/// The alias used when a request names no version.
pub const DEFAULT_ALIAS: &str = "production";

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new().route("/generate", post(generate::<B>))
}

/// What to render. Sizes and steps are limited by the server's configuration.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Not blank; at most `limits.max_prompt_chars` characters.
    #[schema(example = "The Prince of Wales", min_length = 1)]
    pub prompt: String,
    /// Default: empty.
    pub negative_prompt: Option<String>,
    /// Denoising steps (default 25; at most `limits.max_steps`).
    #[schema(minimum = 1)]
    pub steps: Option<usize>,
    /// Classifier-free guidance (default 7.5; at most `limits.max_guidance_scale`).
    #[schema(minimum = 0.0)]
    pub guidance_scale: Option<f64>,
    /// Pixels, a multiple of 8 (default: the model's native size, 512 for SD v1.5; at
    /// most `limits.max_width`).
    #[schema(minimum = 8, multiple_of = 8)]
    pub width: Option<usize>,
    /// Pixels, a multiple of 8 (default: the model's native size; at most
    /// `limits.max_height`).
    #[schema(minimum = 8, multiple_of = 8)]
    pub height: Option<usize>,
    /// Same seed, same version, same settings: the same bytes. Default: random.
    pub seed: Option<u64>,
    /// `pndm`, `ddim`, `euler` or `dpmpp-2m`. Default: the model folder's scheduler.
    pub scheduler: Option<String>,
    /// Images to render, 1 to 8 (default 1), with seeds `seed`, `seed + 1`, …; they
    /// render as one batch. More than one needs `Accept: application/json`.
    #[schema(minimum = 1, maximum = 8)]
    pub num_images: Option<usize>,
}

/// Most images one request may ask for.
pub const MAX_IMAGES_PER_REQUEST: usize = 8;

/// `?version=` of `POST /generate`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version number or an alias. Default: the alias `production`, else the latest.
    pub version: Option<String>,
}

/// The JSON answer (when the request has `Accept: application/json`).
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    /// The PNG image, base64-encoded.
    pub image_base64: String,
    pub version: i64,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
}

/// The JSON answer for `num_images` > 1.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateManyResponse {
    /// The PNG images, base64-encoded, in seed order.
    pub images: Vec<String>,
    /// The seed of each image.
    pub seeds: Vec<u64>,
    pub version: i64,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    /// Milliseconds from the request's arrival at the queue to its last image.
    pub total_ms: f64,
}

/// The JSON answers, as documented: one image, or `num_images` > 1.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum GenerateJson {
    One(GenerateResponse),
    Many(GenerateManyResponse),
}

/// The `image/png` answer: the image's bytes (a string of binary content in OpenAPI 3.1).
pub struct PngImage;

impl utoipa::PartialSchema for PngImage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .content_media_type("image/png")
            .description(Some("The PNG image's bytes"))
            .into()
    }
}

impl ToSchema for PngImage {}

/// Render an image at a version; `image/png` unless `Accept: application/json`.
#[utoipa::path(
    post, path = "/generate", tag = "generate", operation_id = "generateImage",
    params(VersionQuery),
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "The image; version, seed and the size of the batch it was rendered in (the image is the same at any size) in `X-Refact-Version`, `X-Refact-Seed` and `X-Refact-Batch-Size`",
         content((PngImage = "image/png"), (GenerateJson = "application/json")),
         headers(("X-Refact-Version" = i64), ("X-Refact-Seed" = u64), ("X-Refact-Batch-Size" = u64))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "Unknown version or alias (`version_not_found`)", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "A field is missing, of the wrong type or out of range (`invalid_body`, `empty`, `too_long`, `bad_generation_setting`, `unknown_name`)", body = ErrorBody),
        (status = 503, description = "The generation queue is full (`overloaded`, with `Retry-After`), or the request took longer than `limits.request_timeout_secs` (`unavailable`)", body = ErrorBody),
    ),
    security(("bearer" = ["generate"]))
)]
pub async fn generate<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Generate>,
    ApiQuery(query): ApiQuery<VersionQuery>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let num_images = request.num_images.unwrap_or(1);
    let setting = |message: &str| {
        ApiError::invalid(
            InvalidKind::BadGenerationSetting.as_code(),
            "num_images",
            message,
        )
    };
    if !(1..=MAX_IMAGES_PER_REQUEST).contains(&num_images) {
        return Err(setting("must be between 1 and 8"));
    }
    if num_images > 1 && !wants_json(&headers) {
        return Err(setting(
            "more than one image needs `Accept: application/json`",
        ));
    }
    let params = resolve_params(
        request,
        &state.settings.limits,
        state.backend.summary().default_size,
    )?;
    state.backend.validate_generate(&params)?;
    let version = resolve_version(&state, query.version.as_deref()).await?;
    let deltas = state
        .version_deltas(version)
        .await?
        .ok_or_else(|| version_not_found(&version.to_string()))?;
    // For the per-version image counter, whose labels follow the newest versions.
    let head = state.versions.head().unwrap_or(version);
    let seed = params.seed;
    let (width, height, steps) = (params.width, params.height, params.steps);
    let span = tracing::info_span!("generate", version, seed, width, height, steps, num_images);
    if num_images > 1 {
        let started = std::time::Instant::now();
        let seeds: Vec<u64> = (0..num_images as u64)
            .map(|i| seed.wrapping_add(i))
            .collect();
        let rows = seeds
            .iter()
            .map(|&seed| GenerateParams {
                seed,
                ..params.clone()
            })
            .collect();
        let rendered = state
            .generator
            .generate_group(rows, deltas)
            .instrument(span)
            .await?;
        let largest_batch = rendered.iter().map(|r| r.batch_size).max().unwrap_or(1);
        crate::metrics::record_generated_images(version, head, rendered.len());
        let body = GenerateManyResponse {
            images: rendered
                .iter()
                .map(|r| base64::engine::general_purpose::STANDARD.encode(&r.png))
                .collect(),
            seeds,
            version,
            width,
            height,
            steps,
            total_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        return Ok(with_echo(
            Json(body).into_response(),
            version,
            seed,
            largest_batch,
        ));
    }
    let rendered = state
        .generator
        .generate(params, deltas)
        .instrument(span)
        .await?;
    let (png, batch_size) = (rendered.png, rendered.batch_size);
    crate::metrics::record_generated_images(version, head, 1);

    if wants_json(&headers) {
        let body = GenerateResponse {
            image_base64: base64::engine::general_purpose::STANDARD.encode(&png),
            version,
            seed,
            width,
            height,
            steps,
        };
        return Ok(with_echo(
            Json(body).into_response(),
            version,
            seed,
            batch_size,
        ));
    }
    let mut response = png.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok(with_echo(response, version, seed, batch_size))
}

fn with_echo(mut response: Response, version: i64, seed: u64, batch_size: usize) -> Response {
    let headers = response.headers_mut();
    headers.insert(VERSION_HEADER, HeaderValue::from(version));
    headers.insert(SEED_HEADER, HeaderValue::from(seed));
    headers.insert(BATCH_HEADER, HeaderValue::from(batch_size));
    response
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"))
}

/// Fills the defaults and checks the configured limits (422 `bad_generation_setting`).
pub fn resolve_params(
    request: GenerateRequest,
    limits: &Limits,
    (default_width, default_height): (usize, usize),
) -> Result<GenerateParams, ApiError> {
    let code = InvalidKind::BadGenerationSetting.as_code();
    let out_of_range = |field: &str, message: String| ApiError::invalid(code, field, message);
    let params = GenerateParams {
        prompt: request.prompt,
        negative_prompt: request.negative_prompt.unwrap_or_default(),
        steps: request.steps.unwrap_or(25),
        guidance_scale: request.guidance_scale.unwrap_or(7.5),
        width: request.width.unwrap_or(default_width),
        height: request.height.unwrap_or(default_height),
        seed: request.seed.unwrap_or_else(|| rand::random::<u32>() as u64),
        scheduler: request.scheduler.filter(|s| !s.trim().is_empty()),
    };
    if params.prompt.trim().is_empty() {
        return Err(ApiError::invalid(
            InvalidKind::Empty.as_code(),
            "prompt",
            "the prompt is empty",
        ));
    }
    for (field, text) in [
        ("prompt", &params.prompt),
        ("negative_prompt", &params.negative_prompt),
    ] {
        if text.chars().count() > limits.max_prompt_chars {
            return Err(ApiError::invalid(
                InvalidKind::TooLong.as_code(),
                field,
                format!("longer than {} characters", limits.max_prompt_chars),
            ));
        }
    }
    if params.steps == 0 || params.steps > limits.max_steps {
        return Err(out_of_range(
            "steps",
            format!("must be between 1 and {}", limits.max_steps),
        ));
    }
    for (field, value, max) in [
        ("width", params.width, limits.max_width),
        ("height", params.height, limits.max_height),
    ] {
        if value == 0 || value > max || value % 8 != 0 {
            return Err(out_of_range(
                field,
                format!("must be a multiple of 8 between 8 and {max}"),
            ));
        }
    }
    let cost = (params.width * params.height * params.steps) as f64 / 1e6;
    if cost > limits.max_megapixel_steps {
        return Err(out_of_range(
            "steps",
            format!(
                "{}×{} at {} steps costs {cost:.1} megapixel-steps; this server allows {} \
                 (fewer steps or a smaller image)",
                params.width, params.height, params.steps, limits.max_megapixel_steps
            ),
        ));
    }
    let guidance = params.guidance_scale;
    if !guidance.is_finite() || !(0.0..=limits.max_guidance_scale).contains(&guidance) {
        return Err(out_of_range(
            "guidance_scale",
            format!("must be between 0 and {}", limits.max_guidance_scale),
        ));
    }
    Ok(params)
}

/// The version a request means: a number, an alias, or (none) the alias `production`
/// when set, else the latest version.
pub async fn resolve_version<B: ModelBackend>(
    state: &AppState<B>,
    asked: Option<&str>,
) -> Result<i64, ApiError> {
    match asked.map(str::trim) {
        Some(text) if !text.is_empty() => {
            if let Ok(number) = text.parse::<i64>() {
                return Ok(number);
            }
            match state.store.get_alias(text).await? {
                Some(alias) => Ok(alias.version),
                None => Err(version_not_found(text)),
            }
        }
        _ => match state.store.get_alias(DEFAULT_ALIAS).await? {
            Some(alias) => Ok(alias.version),
            None => Ok(state.store.head().await?.number),
        },
    }
}

/// The 404 for an unknown version number or alias.
pub fn version_not_found(asked: &str) -> ApiError {
    ApiError::not_found(
        "version_not_found",
        format!("no version or alias `{asked}`"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerateRequest {
        GenerateRequest {
            prompt: "a cat".into(),
            negative_prompt: None,
            steps: Some(10),
            guidance_scale: None,
            width: Some(64),
            height: Some(64),
            seed: Some(3),
            scheduler: None,
            num_images: None,
        }
    }

    #[test]
    fn defaults_are_filled_and_the_seed_is_kept() {
        let params = resolve_params(request(), &Limits::default(), (512, 512)).unwrap();
        assert_eq!(params.seed, 3);
        assert_eq!(params.guidance_scale, 7.5);
        assert_eq!(params.negative_prompt, "");
    }

    #[test]
    fn the_cost_budget_admits_the_common_sizes_and_refuses_the_product_of_the_maxima() {
        let limits = Limits::default();
        let cost = |w, h, steps| {
            let mut req = request();
            (req.width, req.height, req.steps) = (Some(w), Some(h), Some(steps));
            resolve_params(req, &limits, (512, 512))
        };
        assert!(cost(512, 512, 50).is_ok());
        assert!(cost(768, 768, 50).is_ok());
        assert!(cost(1024, 1024, 25).is_ok());
        assert!(cost(1024, 1024, 30).is_err());
        assert!(cost(768, 768, 51).is_err());
    }

    #[test]
    fn settings_beyond_the_limits_are_refused_with_their_field() {
        let limits = Limits::default();
        type Change = Box<dyn Fn(&mut GenerateRequest)>;
        let cases: Vec<(&str, Change)> = vec![
            ("steps", Box::new(|r| r.steps = Some(0))),
            ("steps", Box::new(|r| r.steps = Some(10_000))),
            ("width", Box::new(|r| r.width = Some(100_000))),
            ("width", Box::new(|r| r.width = Some(65))),
            ("height", Box::new(|r| r.height = Some(0))),
            (
                "guidance_scale",
                Box::new(|r| r.guidance_scale = Some(f64::NAN)),
            ),
            (
                "guidance_scale",
                Box::new(|r| r.guidance_scale = Some(-1.0)),
            ),
            ("prompt", Box::new(|r| r.prompt = " ".into())),
            ("prompt", Box::new(|r| r.prompt = "x".repeat(5000))),
            // Each setting within its own limit, the product over the cost budget.
            (
                "steps",
                Box::new(|r| {
                    (r.width, r.height, r.steps) = (Some(1024), Some(1024), Some(150));
                }),
            ),
        ];
        for (field, change) in cases {
            let mut req = request();
            change(&mut req);
            match resolve_params(req, &limits, (512, 512)) {
                Err(ApiError::Invalid { field: Some(f), .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected 422, got {other:?}"),
            }
        }
    }
}
