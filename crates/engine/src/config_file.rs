//! Reading the JSON config files of a diffusers folder.

use crate::error::{EngineError, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads and parses one JSON file, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::config(path, e.to_string()))
}
