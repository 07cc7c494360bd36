//! On-disk cache of layer statistics, keyed by (model fingerprint, layer, corpus hash,
//! sample count). A file that is corrupt or describes something else is detected,
//! reported, and recomputed: never silently used.

use super::corpus::Corpus;
use super::statistics::LayerStatistics;
use crate::error::{EngineError, Result};
use crate::text_encoder::ClipTextEncoder;
use crate::tokenizer::ClipTokenizer;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "refact-layer-stats/1";

/// What a cached C must describe to be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsKey {
    pub model_fingerprint: String,
    pub layer: usize,
    pub corpus_hash: String,
    pub samples: usize,
}

impl StatsKey {
    fn file_name(&self) -> String {
        let fp: String = self.model_fingerprint.chars().take(16).collect();
        let corpus: String = self.corpus_hash.chars().take(16).collect();
        format!(
            "{fp}-layer{}-{corpus}-{}.safetensors",
            self.layer, self.samples
        )
    }
}

/// Where statistics files live, e.g. `<data dir>/stats`.
#[derive(Debug, Clone)]
pub struct StatsCache {
    dir: PathBuf,
}

/// What the caller learns about how the statistics were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsOrigin {
    /// Read from a valid cache file.
    Cached,
    /// Computed now (no file, or the file was unusable) and written to the cache.
    Computed,
}

impl StatsCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache file for `key`.
    pub fn path(&self, key: &StatsKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// Reads the statistics for `layer` over the first `limit` captions of `corpus`, or
    /// computes and stores them.
    #[allow(clippy::too_many_arguments)]
    pub fn load_or_compute(
        &self,
        encoder: &ClipTextEncoder,
        tokenizer: &ClipTokenizer,
        model_fingerprint: &str,
        layer: usize,
        corpus: &Corpus,
        limit: usize,
        progress: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(LayerStatistics, StatsOrigin)> {
        let sample = corpus.captions(limit)?;
        let key = StatsKey {
            model_fingerprint: model_fingerprint.to_string(),
            layer,
            corpus_hash: sample.hash.clone(),
            samples: sample.captions.len(),
        };
        let path = self.path(&key);
        if path.exists() {
            match read(&path, &key, encoder.config().intermediate_size) {
                Ok(stats) => return Ok((stats, StatsOrigin::Cached)),
                Err(err) => tracing::warn!(
                    path = %path.display(),
                    error = %err,
                    "statistics cache unusable; recomputing"
                ),
            }
        }
        let stats = LayerStatistics::compute(
            encoder,
            tokenizer,
            layer,
            &sample,
            model_fingerprint,
            progress,
        )?;
        write(&path, &key, &stats)?;
        Ok((stats, StatsOrigin::Computed))
    }
}

fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes atomically (temp file + rename) so a crash never leaves a half file in place.
fn write(path: &Path, key: &StatsKey, stats: &LayerStatistics) -> Result<()> {
    let dir = path.parent().expect("cache files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let bytes: Vec<u8> = stats.mom2.iter().flat_map(|x| x.to_le_bytes()).collect();
    let metadata: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("model_fingerprint", key.model_fingerprint.clone()),
        ("layer", key.layer.to_string()),
        ("corpus_hash", key.corpus_hash.clone()),
        ("samples", key.samples.to_string()),
        ("tokens", stats.tokens.to_string()),
        ("sha256", checksum(&bytes)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let view = TensorView::new(Dtype::F64, vec![stats.dim, stats.dim], &bytes)
        .map_err(|e| EngineError::Cache(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file([("mom2", view)], Some(metadata), &tmp)
        .map_err(|e| EngineError::Cache(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

fn read(path: &Path, key: &StatsKey, dim: usize) -> Result<LayerStatistics> {
    let bad = |msg: String| EngineError::Cache(format!("{}: {msg}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| bad("no metadata".into()))?;
    let field = |name: &str| meta.get(name).cloned().unwrap_or_default();
    let expected = [
        ("format", FORMAT.to_string()),
        ("model_fingerprint", key.model_fingerprint.clone()),
        ("layer", key.layer.to_string()),
        ("corpus_hash", key.corpus_hash.clone()),
        ("samples", key.samples.to_string()),
    ];
    for (name, value) in expected {
        if field(name) != value {
            return Err(bad(format!(
                "{name} is {:?}, expected {value:?}",
                field(name)
            )));
        }
    }
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mom2 = tensors.tensor("mom2").map_err(|e| bad(e.to_string()))?;
    if mom2.dtype() != Dtype::F64 || mom2.shape() != [dim, dim] {
        return Err(bad(format!(
            "mom2 is {:?} {:?}, expected F64 [{dim}, {dim}]",
            mom2.dtype(),
            mom2.shape()
        )));
    }
    if checksum(mom2.data()) != field("sha256") {
        return Err(bad("checksum mismatch (corrupt file)".into()));
    }
    let values: Vec<f64> = mom2
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let tokens = field("tokens")
        .parse()
        .map_err(|_| bad("bad token count".into()))?;
    LayerStatistics::from_moment(
        key.layer,
        dim,
        values,
        key.samples,
        tokens,
        &key.corpus_hash,
        &key.model_fingerprint,
    )
}
