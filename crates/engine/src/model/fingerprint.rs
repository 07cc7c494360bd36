//! A model's fingerprint: what layer statistics and stored versions are tied to.
//!
//! Edits change only the text encoder, and statistics depend only on the text encoder and
//! tokenizer, so the fingerprint hashes exactly those files. Another UNet with the same
//! text encoder keeps the same fingerprint (and can reuse the same deltas).

use crate::error::{EngineError, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Files that make up the text side of a diffusers folder, in hashing order; the
/// tokenizer is either vocab + merges or a tokenizer.json. SDXL's second encoder and
/// tokenizer come last, so a folder without them keeps the fingerprint it always had.
const TEXT_FILES: [&str; 10] = [
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer_2/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/tokenizer.json",
];

/// sha256 (hex) over the text encoder and tokenizer files of a diffusers folder.
pub fn text_fingerprint(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut hashed_any = false;
    for relative in TEXT_FILES {
        let path = dir.join(relative);
        if !path.is_file() {
            continue;
        }
        hasher.update(relative.as_bytes());
        hash_file(&path, &mut hasher)?;
        hashed_any = true;
    }
    if !hashed_any {
        return Err(EngineError::ModelNotFound(format!(
            "{} has no text encoder",
            dir.display()
        )));
    }
    Ok(hex::encode(hasher.finalize()))
}

fn hash_file(path: &Path, hasher: &mut Sha256) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..n]);
    }
}
