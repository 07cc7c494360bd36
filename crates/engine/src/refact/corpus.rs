//! The caption corpus that layer statistics are computed over.

use crate::error::{EngineError, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// MS-COCO 2017 validation captions (CC BY 4.0, Lin et al. 2014), shipped in `assets/`.
const BUILTIN_CAPTIONS: &str = include_str!("../../../../assets/coco_val2017_captions.txt");

/// Where captions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corpus {
    /// The COCO captions shipped with the project.
    Builtin,
    /// A user's file, one caption per line.
    File(PathBuf),
}

impl Corpus {
    /// `builtin`/`coco` or a path.
    pub fn parse(spec: &str) -> Self {
        match spec {
            "" | "builtin" | "coco" => Corpus::Builtin,
            path => Corpus::File(PathBuf::from(path)),
        }
    }

    /// The first `limit` non-empty lines, trimmed (as the reference reads its corpus).
    pub fn captions(&self, limit: usize) -> Result<CaptionSample> {
        let text = match self {
            Corpus::Builtin => std::borrow::Cow::Borrowed(BUILTIN_CAPTIONS),
            Corpus::File(path) => std::borrow::Cow::Owned(
                std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?,
            ),
        };
        let captions: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(limit)
            .map(str::to_owned)
            .collect();
        if captions.is_empty() {
            return Err(EngineError::invalid(
                crate::error::InvalidKind::Empty,
                "corpus",
                "the corpus has no captions",
            ));
        }
        let mut hasher = Sha256::new();
        for caption in &captions {
            hasher.update(caption.as_bytes());
            hasher.update(b"\n");
        }
        Ok(CaptionSample {
            hash: hex::encode(hasher.finalize()),
            captions,
        })
    }
}

/// The captions actually used, and a hash that identifies them in the statistics cache.
#[derive(Debug, Clone)]
pub struct CaptionSample {
    pub captions: Vec<String>,
    /// sha256 of the captions, each followed by a newline.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_corpus_has_the_coco_captions() {
        let all = Corpus::Builtin.captions(usize::MAX).unwrap();
        assert_eq!(all.captions.len(), 25_014);
        let first = Corpus::Builtin.captions(2000).unwrap();
        assert_eq!(first.captions.len(), 2000);
        assert_ne!(first.hash, all.hash);
    }

    #[test]
    fn a_file_corpus_skips_blank_lines_and_hashes_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, "a cat\n\n  a dog  \n").unwrap();
        let sample = Corpus::File(path.clone()).captions(10).unwrap();
        assert_eq!(sample.captions, vec!["a cat", "a dog"]);
        std::fs::write(&path, "a cat\na bird\n").unwrap();
        assert_ne!(Corpus::File(path).captions(10).unwrap().hash, sample.hash);
    }
}
