//! CLIP's BPE tokenizer for the scorer, built from `vocab.json` + `merges.txt` with the
//! `tokenizers` crate the way transformers' CLIPTokenizerFast is: NFC, whitespace runs
//! folded to one space, lowercase; split on CLIP's word pattern; byte-level BPE with the
//! `</w>` end-of-word suffix; BOS .. EOS, truncated to the context, padded with EOS.
//!
//! The engine's `ClipTokenizer` has the same `encode` / `encode_padded` shape; the scorer
//! can switch to it without touching its callers.

use crate::error::{EvalError, Result};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    replace::ReplacePattern, Lowercase, Replace, Sequence as Normalizers, NFC,
};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

/// CLIP's pre-tokenization pattern (the words BPE runs on), as in the original CLIP code.
const CLIP_WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Turns texts into CLIP token ids.
pub struct ScorerTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    context: usize,
}

impl ScorerTokenizer {
    /// Loads the vocabulary and merges; `context` is the model's position count (77).
    pub fn from_files(vocab: &Path, merges: &Path, context: usize) -> Result<Self> {
        let err = |e: tokenizers::Error| EvalError::Tokenizer(e.to_string());
        for path in [vocab, merges] {
            if !path.is_file() {
                return Err(EvalError::Tokenizer(format!(
                    "{} not found",
                    path.display()
                )));
            }
        }
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .end_of_word_suffix("</w>".to_string())
            .unk_token("<|endoftext|>".to_string())
            .build()
            .map_err(err)?;
        let mut inner = Tokenizer::new(bpe);
        let normalizer = Normalizers::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(err)?
                .into(),
            Lowercase.into(),
        ]);
        inner.with_normalizer(Some(normalizer)).map_err(err)?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_WORD_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(err)?;
        inner.with_pre_tokenizer(Some(PreTokenizers::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])));
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| EvalError::Tokenizer(format!("vocabulary has no `{token}`")))
        };
        let (bos, eos) = (id("<|startoftext|>")?, id("<|endoftext|>")?);
        if context < 2 {
            return Err(EvalError::Tokenizer(format!(
                "context {context} is too short"
            )));
        }
        Ok(Self {
            inner,
            bos,
            eos,
            context,
        })
    }

    /// The end-of-text id, where the text tower pools.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// BOS, the text's tokens, EOS; truncated so the whole fits the context (EOS kept).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        let body = encoding.get_ids();
        let keep = body.len().min(self.context - 2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.bos);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.eos);
        Ok(ids)
    }

    /// `encode`, padded with EOS to exactly the context length.
    pub fn encode_padded(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.resize(self.context, self.eos);
        Ok(ids)
    }
}
