//! The model backend over `refact_engine`. Not wired yet: the engine's model, ReFACT and
//! pipeline APIs are not on `main`; until they are, loading refuses with an error, so
//! no value below can be reached.

use super::*;
use crate::error::ApiError;
use crate::settings::Settings;

/// The real model (to be wired to `refact_engine`).
pub struct EngineBackend {
    summary: ModelSummary,
}

impl EngineBackend {
    /// Loads the model named by the settings.
    pub fn load(_settings: &Settings) -> Result<Self, ApiError> {
        Err(ApiError::Internal(
            "the engine is not wired into the server yet".into(),
        ))
    }
}

const UNREACHABLE: &str = "EngineBackend cannot be constructed before it is wired";

impl ModelBackend for EngineBackend {
    type Delta = ();
    type Deltas = ();
    type EditRequest = serde_json::Value;
    fn summary(&self) -> &ModelSummary {
        &self.summary
    }
    fn delta(&self, _: usize, _: Vec<f32>, _: Vec<f32>) -> Result<(), EngineError> {
        unreachable!("{UNREACHABLE}")
    }
    fn compose(&self, _: &[()]) -> Result<(), EngineError> {
        unreachable!("{UNREACHABLE}")
    }
    fn validate_edit(&self, _: &serde_json::Value) -> Result<(), EngineError> {
        unreachable!("{UNREACHABLE}")
    }
    fn compute_edit(
        &self,
        _: &serde_json::Value,
        _: &(),
        _: &mut dyn FnMut(EditProgress) -> ControlFlow<()>,
    ) -> Result<ComputedEdit, EngineError> {
        unreachable!("{UNREACHABLE}")
    }
    fn validate_generate(&self, _: &GenerateParams) -> Result<(), EngineError> {
        unreachable!("{UNREACHABLE}")
    }
    fn generate(&self, _: &GenerateParams, _: &()) -> Result<Vec<u8>, EngineError> {
        unreachable!("{UNREACHABLE}")
    }
}
