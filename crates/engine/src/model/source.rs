//! Where a model comes from: a local diffusers folder, a Hugging Face hub id, or the
//! built-in demo model. Every source ends as a folder in the diffusers layout.

use crate::error::{EngineError, Result};
use std::path::{Path, PathBuf};

/// The files of a diffusers SD v1.x snapshot that the engine reads.
pub const PIPELINE_FILES: [&str; 12] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The files an SDXL snapshot adds: its second text encoder and tokenizer.
pub const SDXL_FILES: [&str; 6] = [
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/special_tokens_map.json",
];

/// Files a tokenizer folder may lack (the defaults apply).
fn is_optional(file: &str) -> bool {
    file.ends_with("special_tokens_map.json") || file.ends_with("tokenizer_config.json")
}

/// Every file the pipeline needs after model_index.json, for the class it names.
fn pipeline_files(sdxl: bool) -> Vec<&'static str> {
    let mut files = PIPELINE_FILES.to_vec();
    if sdxl {
        files.extend(SDXL_FILES);
    }
    files
}

/// Whether a model_index.json names the SDXL pipeline; an unreadable file is left to
/// the loader to report.
fn names_sdxl(model_index: &Path) -> bool {
    super::family::ModelIndex::read_file(model_index).is_ok_and(|index| index.is_sdxl())
}

/// A model as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The small random-weight model created under the data directory.
    Demo,
    /// A local folder in the diffusers layout.
    Folder(PathBuf),
    /// A hub id such as `stable-diffusion-v1-5/stable-diffusion-v1-5`.
    Hub(String),
}

impl ModelSource {
    /// `demo` (or empty) → the demo model; an existing path → that folder; `owner/name`
    /// that is not a local path → a hub id; anything else → a folder (reported missing
    /// when loaded).
    pub fn parse(spec: &str) -> Self {
        let spec = spec.trim();
        if spec.is_empty() || spec == "demo" {
            return ModelSource::Demo;
        }
        let path = Path::new(spec);
        if path.exists() {
            return ModelSource::Folder(path.to_path_buf());
        }
        let looks_like_hub_id = !spec.starts_with('.')
            && !spec.starts_with('/')
            && spec.split('/').count() == 2
            && spec.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if looks_like_hub_id {
            ModelSource::Hub(spec.to_string())
        } else {
            ModelSource::Folder(path.to_path_buf())
        }
    }

    /// A short name for logs and the API.
    pub fn display_name(&self) -> String {
        match self {
            ModelSource::Demo => "demo (random weights)".into(),
            ModelSource::Folder(path) => path.display().to_string(),
            ModelSource::Hub(id) => id.clone(),
        }
    }
}

/// Checks that `dir` holds a diffusers pipeline the engine can read; names what is missing.
pub fn check_folder(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(EngineError::ModelNotFound(format!(
            "{} is not a folder, a hub id (owner/name) or `demo`",
            dir.display()
        )));
    }
    let files = pipeline_files(names_sdxl(&dir.join("model_index.json")));
    let missing: Vec<&str> = files
        .into_iter()
        .filter(|f| !is_optional(f) && !has_file(dir, f))
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::ModelNotFound(format!(
            "{} is not a complete diffusers SD folder; missing: {}",
            dir.display(),
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Whether `relative` exists in `dir`; the tokenizer may be a `tokenizer.json` instead of
/// vocab/merges.
fn has_file(dir: &Path, relative: &str) -> bool {
    for tokenizer in ["tokenizer/", "tokenizer_2/"] {
        if relative.starts_with(tokenizer) && dir.join(tokenizer).join("tokenizer.json").is_file() {
            return true;
        }
    }
    dir.join(relative).is_file()
}

/// Downloads (or finds in the local hub cache) the pipeline files of `repo_id` and
/// returns the snapshot folder. With `offline` (or `HF_HUB_OFFLINE=1`) only the cache
/// is read.
pub fn resolve_hub(repo_id: &str, offline: bool) -> Result<PathBuf> {
    let offline = offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    resolve_hub_in(repo_id, offline, hf_hub::Cache::from_env())
}

fn resolve_hub_in(repo_id: &str, offline: bool, cache: hf_hub::Cache) -> Result<PathBuf> {
    let mut first: Option<PathBuf> = None;
    // model_index.json comes first; the class it names decides the other files.
    let mut files = vec![PIPELINE_FILES[0]];
    let mut index = 0;
    while index < files.len() {
        let file = files[index];
        index += 1;
        let optional = is_optional(file);
        let path = if offline {
            cache.model(repo_id.to_string()).get(file)
        } else {
            let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .map_err(|e| EngineError::ModelNotFound(format!("hub client: {e}")))?;
            match api.model(repo_id.to_string()).get(file) {
                Ok(path) => Some(path),
                Err(e) if optional => {
                    tracing::debug!(file, error = %e, "optional file not on the hub");
                    None
                }
                Err(e) => {
                    return Err(EngineError::ModelNotFound(format!(
                        "{repo_id}: could not fetch {file} from the hub ({e}); pass a local folder, or set \
                         HF_HUB_OFFLINE=1 to use the local cache"
                    )))
                }
            }
        };
        match path {
            Some(path) if first.is_none() => {
                files = pipeline_files(names_sdxl(&path));
                first = Some(path);
            }
            Some(_) => {}
            None if optional => {}
            None => {
                return Err(EngineError::ModelNotFound(format!(
                    "{repo_id}: {file} is not in the local hub cache (offline mode)"
                )))
            }
        }
    }
    // Every file of a snapshot sits under the same `snapshots/<revision>/` folder, so the
    // folder of model_index.json is the pipeline's root.
    let index = first.expect("model_index.json is required");
    Ok(index.parent().expect("a file has a parent").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_sources() {
        assert_eq!(ModelSource::parse(""), ModelSource::Demo);
        assert_eq!(ModelSource::parse("demo"), ModelSource::Demo);
        assert_eq!(
            ModelSource::parse("stable-diffusion-v1-5/stable-diffusion-v1-5"),
            ModelSource::Hub("stable-diffusion-v1-5/stable-diffusion-v1-5".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSource::parse(spec),
            ModelSource::Folder(dir.path().to_path_buf())
        );
        assert_eq!(
            ModelSource::parse("./missing/model"),
            ModelSource::Folder("./missing/model".into())
        );
    }

    #[test]
    fn an_incomplete_folder_names_the_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model_index.json"), "{}").unwrap();
        let err = check_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unet/config.json"), "{err}");
        assert!(check_folder(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn an_uncached_hub_id_fails_clearly_offline() {
        let cache = tempfile::tempdir().unwrap();
        let cache = hf_hub::Cache::new(cache.path().to_path_buf());
        let err = resolve_hub_in("nobody/no-such-model", true, cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in the local hub cache"), "{err}");
    }
}
