//! What the server needs from a text-to-image model, as one small trait.
//!
//! The HTTP layer, the generation thread and the edit worker only see this trait; the
//! implementation over `refact_engine` lives in [`engine`]. Every method is blocking and
//! may run tensor code: callers run it on a dedicated thread, never on the async runtime.

pub mod engine;
mod engine_gate;

use crate::gate::{GateMeasurement, GateRequest};
use refact_engine::EngineError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use utoipa::ToSchema;

/// A loaded model: immutable weights, plus the means to build versions on top of them.
pub trait ModelBackend: Send + Sync + 'static {
    /// One applied delta, in the form the model applies (built once, shared by every
    /// version that contains it).
    type Delta: Clone + Send + Sync + 'static;
    /// A whole version: the ordered deltas over the base weights. Cheap to clone.
    type Deltas: Clone + Send + Sync + 'static;
    /// An edit request as the model defines it (prompts, layer, hyper-parameters with
    /// their defaults); its JSON form is what the API accepts and the store keeps.
    type EditRequest: DeserializeOwned + Serialize + Clone + Send + Sync + 'static;

    /// Identity and shape of the loaded model.
    fn summary(&self) -> &ModelSummary;

    /// The state of the model's text-embedding cache (zeros where it has none).
    fn text_cache(&self) -> TextCacheGauges {
        Default::default()
    }

    /// Builds one delta from its stored vectors (`fc2.weight += v uᵀ` at `layer`).
    fn delta(&self, stored: refact_store::StoredDelta) -> Result<Self::Delta, EngineError>;

    /// A version made of these deltas, in order (empty: the base model).
    fn compose(&self, deltas: &[Self::Delta]) -> Result<Self::Deltas, EngineError>;

    /// Checks an edit request against the model (prompt lengths, subject, layer, ranges).
    fn validate_edit(&self, request: &Self::EditRequest) -> Result<(), EngineError>;

    /// Fills in the defaults the model decides (e.g. the layer), so that a request
    /// that leaves them out and one that spells them are stored, and compared for
    /// idempotency, alike.
    fn normalise_edit(&self, _request: &mut Self::EditRequest) {}

    /// True when the request edits a batch of facts (`{"facts": [...]}`).
    fn is_batch(&self, _request: &Self::EditRequest) -> bool {
        false
    }

    /// Computes the edit on top of `parent`. `observer` sees every iteration and stops the
    /// computation (with `EngineError::Cancelled`) by returning `Break`; `stopped` is
    /// polled during the work before the first iteration (layer statistics).
    fn compute_edit(
        &self,
        request: &Self::EditRequest,
        parent: &Self::Deltas,
        observer: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
        stopped: &dyn Fn() -> bool,
    ) -> Result<ComputedEdit, EngineError>;

    /// Measures a quality gate on an edit computed on `parent`: the text-space tests of
    /// the edit (edit prompt, the gate's positives and negatives) and, when the gate asks,
    /// the image tests scored by the configured CLIP model. `stopped` is polled between
    /// images.
    fn measure_gate(
        &self,
        request: &Self::EditRequest,
        gate: &GateRequest,
        parent: &Self::Deltas,
        edit: &ComputedEdit,
        stopped: &dyn Fn() -> bool,
        render: &RenderImage<'_, Self::Deltas>,
    ) -> Result<GateMeasurement, EngineError>;

    /// Checks generation settings that only the model can judge (scheduler names,
    /// sizes it cannot render, prompt length in tokens).
    fn validate_generate(&self, params: &GenerateParams) -> Result<(), EngineError>;

    /// Renders one image at the version `deltas` and returns it encoded as PNG.
    /// `stopped` is polled at every denoising step; once true, the render ends with
    /// `EngineError::Cancelled`.
    fn generate(
        &self,
        params: &GenerateParams,
        deltas: &Self::Deltas,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, EngineError>;

    /// Renders several images, one per row, each at its own version, and returns them
    /// as PNG in row order. The rows share [`BatchKey`]. A model that cannot batch
    /// renders them one after the other (this default).
    fn generate_batch(
        &self,
        rows: &[(&GenerateParams, &Self::Deltas)],
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        rows.iter()
            .map(|(params, deltas)| self.generate(params, deltas, stopped))
            .collect()
    }
}

/// What the images of one batch must share: everything but the prompt, negative
/// prompt, seed, guidance scale and version. (Guidance itself, on or off, changes the
/// UNet's inputs, so it is part of the key; its scale is per row.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub scheduler: Option<String>,
    pub guided: bool,
}

impl BatchKey {
    pub fn of(params: &GenerateParams) -> Self {
        BatchKey {
            width: params.width,
            height: params.height,
            steps: params.steps,
            scheduler: params.scheduler.clone(),
            guided: params.guidance_scale > 1.0,
        }
    }
}

/// Identity and shape of the loaded model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelSummary {
    /// What was asked for: `demo`, a folder or a hub id.
    pub source: String,
    /// Hash of the weights that matter for edits; versions are only valid for it.
    pub fingerprint: String,
    /// True for the built-in random-weight model: its images are noise.
    pub is_demo: bool,
    /// `sd1`, `sd2` or `sdxl` (two text encoders: edits change both by default).
    #[schema(example = "sd1")]
    pub family: String,
    /// The text encoders an edit can name (`text`; SDXL adds `text_2`).
    #[schema(example = json!(["text"]))]
    pub text_encoders: Vec<String>,
    /// Number of layers of the (first) text encoder: edits go at layers 0..num_layers
    /// (SDXL: 0..num_layers − 1, as its pipeline reads the penultimate states).
    pub num_layers: usize,
    /// Each text encoder's layers, in the order of `text_encoders`.
    pub encoder_layers: Vec<EncoderLayers>,
    /// Where the model runs, e.g. `Cpu` or `Cuda(0)`.
    pub device: String,
    /// The image size (width, height) a request gets when it names none.
    pub default_size: (usize, usize),
    /// The scheduler a request gets when it names none.
    pub default_scheduler: String,
}

/// Where an edit of one text encoder may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EncoderLayers {
    /// `text` or `text_2`.
    #[schema(example = "text")]
    pub encoder: String,
    pub num_layers: usize,
    /// The layer an edit of this encoder gets when it names none (the paper's 7 of 12,
    /// scaled to the encoder's depth).
    #[schema(example = 7)]
    pub default_layer: usize,
    /// The highest layer an edit may name: `num_layers − 1`, or `num_layers − 2` where the
    /// pipeline reads the penultimate states (SDXL).
    #[schema(example = 11)]
    pub max_layer: usize,
}

/// One optimisation step of an edit, as streamed to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EditProgress {
    /// 0-based iteration.
    pub iteration: usize,
    /// The loss before this iteration's step.
    pub loss: f64,
    /// Mean probability of the target over the rewriting prompts.
    pub probability: f64,
    /// Which fact of a batch edit (0-based, in request order); absent for a single edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact: Option<usize>,
    /// Which text encoder (`text`, `text_2`) when an edit changes several (SDXL): each
    /// runs its own iterations, one encoder after the other. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "text_2")]
    pub encoder: Option<refact_engine::deltas::TextEncoderId>,
}

/// The result of an edit: its deltas (one rank-one delta for a single fact, one rank-n
/// delta for a batch of n) and what the optimisation measured.
#[derive(Debug, Clone)]
pub struct ComputedEdit {
    pub deltas: Vec<refact_store::StoredDelta>,
    pub metrics: serde_json::Value,
}

/// (version, prompt) text-encoder outputs kept for the next image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TextCacheGauges {
    /// Prompts held now, and at most.
    pub prompts: usize,
    pub capacity: usize,
    /// Prompts answered from the cache, and encoded, since the process started.
    pub hits: u64,
    pub misses: u64,
}

/// Renders one image (PNG bytes) at a version through the server's generation queue, as
/// every other image: a gate's images batch with the users' and never run beside them.
pub type RenderImage<'a, D> = dyn Fn(GenerateParams, &D) -> Result<Vec<u8>, EngineError> + 'a;

/// Fully resolved generation settings (defaults filled in, seed chosen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// `None`: the scheduler the model folder configures.
    pub scheduler: Option<String>,
}
