//! Loading models: diffusers folders, hub ids, the demo model.

pub mod fingerprint;
pub mod random_weights;
pub mod source;
pub mod text;

use crate::error::{EngineError, Result};
pub use source::ModelSource;
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
        ModelSource::Demo => Err(EngineError::ModelNotFound(format!(
            "the demo model is not available in this build yet (data dir {})",
            data_dir.display()
        ))),
    }
}
