//! A delta as a file: safetensors with tensors `u` and `v` (f32) and metadata `layer`
//! and `encoder` (`text` when absent, as in files written before SDXL).
//! This is what `refact edit --out` writes and `--deltas` reads.

use crate::deltas::{Delta, TextEncoderId};
use crate::error::{EngineError, InvalidKind, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Writes `delta` to `path`, with any extra metadata (e.g. the edit request).
pub fn save_delta(path: &Path, delta: &Delta, extra: &[(&str, String)]) -> Result<()> {
    let u: Vec<u8> = delta.u.iter().flat_map(|x| x.to_le_bytes()).collect();
    let v: Vec<u8> = delta.v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut metadata: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    metadata.insert("layer".into(), delta.layer.to_string());
    metadata.insert("encoder".into(), delta.encoder.as_str().into());
    metadata.insert("format".into(), "refact-delta/1".into());
    let views = [
        (
            "u",
            TensorView::new(Dtype::F32, vec![delta.u.len()], &u)
                .map_err(|e| EngineError::Weights(e.to_string()))?,
        ),
        (
            "v",
            TensorView::new(Dtype::F32, vec![delta.v.len()], &v)
                .map_err(|e| EngineError::Weights(e.to_string()))?,
        ),
    ];
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| EngineError::Weights(format!("{}: {e}", path.display())))
}

/// Where an edit of several text encoders keeps one of its deltas, next to `path`:
/// `edit.safetensors` → `edit.text_2.safetensors`.
pub fn encoder_sibling(path: &Path, encoder: TextEncoderId) -> std::path::PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("delta");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{encoder}.{ext}"),
        None => format!("{stem}.{encoder}"),
    };
    path.with_file_name(name)
}

/// Reads a delta written by [`save_delta`].
pub fn load_delta(path: &Path) -> Result<Delta> {
    let bad = |msg: String| {
        EngineError::invalid(
            InvalidKind::BadShape,
            "deltas",
            format!("{}: {msg}", path.display()),
        )
    };
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let layer = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("layer"))
        .and_then(|l| l.parse::<usize>().ok())
        .ok_or_else(|| bad("no `layer` in the metadata".into()))?;
    let encoder = match header.metadata().as_ref().and_then(|m| m.get("encoder")) {
        None => TextEncoderId::Text,
        Some(name) => TextEncoderId::parse(name)
            .ok_or_else(|| bad(format!("unknown `encoder` {name:?} (text or text_2)")))?,
    };
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |name: &str| -> Result<Vec<f32>> {
        let view = tensors.tensor(name).map_err(|e| bad(e.to_string()))?;
        if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
            return Err(bad(format!("`{name}` must be a 1-D f32 tensor")));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    };
    Ok(Delta {
        encoder,
        layer,
        rank: 1,
        u: read("u")?,
        v: read("v")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        let delta = Delta {
            encoder: TextEncoderId::Text2,
            layer: 9,
            rank: 1,
            u: vec![0.25, -1.5, 3.0e-7],
            v: vec![1.0, f32::MIN_POSITIVE],
        };
        save_delta(&path, &delta, &[("prompt", "x".into())]).unwrap();
        assert_eq!(load_delta(&path).unwrap(), delta);
    }

    #[test]
    fn a_file_without_layer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        let data = vec![0u8; 8];
        let view = TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        safetensors::serialize_to_file([("u", view.clone()), ("v", view)], None, &path).unwrap();
        assert!(load_delta(&path).is_err());
    }
}
