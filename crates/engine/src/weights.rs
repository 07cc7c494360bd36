//! Reading safetensors files: headers without loading tensors, and a weight file
//! memory mapped for a model part to build from.

use crate::error::{EngineError, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::io::Read;
use std::path::Path;

/// A model part's weight file, memory mapped read-only, with tensors cast to `dtype` on
/// `device` as they are read. A missing file is `ModelNotFound`, naming it.
pub fn mapped(weights: &Path, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    if !weights.is_file() {
        return Err(EngineError::ModelNotFound(format!(
            "{} is missing",
            weights.display()
        )));
    }
    // SAFETY: the file is memory mapped read-only; like every loader of safetensors
    // files we rely on nobody truncating it while the model is alive.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, device)? })
}

/// The JSON header of a safetensors file: tensor names → dtype, shape, offsets.
pub fn read_header(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| EngineError::io(path, e))?;
    let len = u64::from_le_bytes(len);
    if len > 100 * 1024 * 1024 {
        return Err(EngineError::Weights(format!(
            "{}: header of {len} bytes is not a safetensors file",
            path.display()
        )));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| EngineError::io(path, e))?;
    serde_json::from_slice(&header).map_err(|e| {
        EngineError::Weights(format!("{}: bad safetensors header: {e}", path.display()))
    })
}

/// Names of the tensors in a safetensors file.
pub fn tensor_names(path: &Path) -> Result<Vec<String>> {
    Ok(read_header(path)?
        .keys()
        .filter(|k| k.as_str() != "__metadata__")
        .cloned()
        .collect())
}
