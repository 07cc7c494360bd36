//! Loading models: diffusers folders, hub ids, the demo model.

pub mod demo;
pub mod family;
pub mod fingerprint;
pub mod random_weights;
pub mod source;
pub mod stable_diffusion;
pub mod text;

use crate::error::Result;
pub use family::ModelFamily;
pub use source::ModelSource;
pub use stable_diffusion::{ModelInfo, ModelSpec, StableDiffusion};
use std::path::{Path, PathBuf};
pub use text::TextModel;

/// The diffusers folder for `source`: a checked local folder, a hub snapshot, or the demo
/// model created under `data_dir`.
pub fn resolve_folder(source: &ModelSource, data_dir: &Path, offline: bool) -> Result<PathBuf> {
    match source {
        ModelSource::Folder(dir) => {
            source::check_folder(dir)?;
            Ok(dir.clone())
        }
        ModelSource::Hub(id) => source::resolve_hub(id, offline),
        ModelSource::Demo => demo::ensure_demo_model(data_dir),
    }
}
