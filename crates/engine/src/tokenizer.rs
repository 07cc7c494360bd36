//! CLIP's byte-level BPE tokenizer, as Stable Diffusion v1.x uses it.
//!
//! Real SD v1.x snapshots ship only `vocab.json` + `merges.txt` (no `tokenizer.json`),
//! so the tokenizer is assembled here from those two files with the same normaliser,
//! pre-tokeniser and special tokens that transformers' CLIP tokenizer uses. A
//! `tokenizer.json`, when present, is used as is.

use crate::error::{EngineError, Result};
use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's split pattern: contractions, runs of letters, single digits, runs of other
/// non-space characters. Whitespace between them is dropped.
const CLIP_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// CLIP's context length; every SD v1.x text encoder has 77 positions.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// A CLIP tokenizer: text → ids with BOS/EOS, truncated and padded to the context length.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    /// Fills the context after EOS: `<|endoftext|>` in SD v1.x, `!` (id 0) in SD 2.x
    /// and SDXL's second tokenizer. The UNet attends to every position, so it matters.
    pad_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads the tokenizer folder of a diffusers snapshot (or a CLIP model folder):
    /// `tokenizer.json` if present, else `vocab.json` + `merges.txt`. The context length
    /// comes from `tokenizer_config.json`'s `model_max_length` when it is sensible.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let config = read_json_object(&dir.join("tokenizer_config.json"));
        let max_length = max_length_of(config.as_ref());
        let tokenizer_json = dir.join("tokenizer.json");
        let mut tokenizer = if tokenizer_json.is_file() {
            let inner = Tokenizer::from_file(&tokenizer_json).map_err(|e| {
                EngineError::Tokenizer(format!("{}: {e}", tokenizer_json.display()))
            })?;
            Self::from_tokenizer(inner, max_length)?
        } else {
            Self::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"), max_length)?
        };
        let pad = pad_token_of(config.as_ref()).or_else(|| {
            pad_token_of(read_json_object(&dir.join("special_tokens_map.json")).as_ref())
        });
        if let Some(pad) = pad.filter(|pad| pad != EOS) {
            // transformers registers the pad token as a special token, which is never
            // merged with its neighbours: with SD 2.x's and SDXL's `!`, every `!` of a
            // prompt becomes id 0 ("speech!" is "speech</w>" + "!", not "speech</w>" +
            // "!</w>"). Do the same, or prompts with `!` would encode differently.
            let _ = tokenizer
                .inner
                .add_special_tokens(vec![AddedToken::from(pad.clone(), true)]);
            tokenizer.pad_id = token_id(&tokenizer.inner, &pad)?;
        }
        Ok(tokenizer)
    }

    /// Builds the tokenizer from CLIP's `vocab.json` and `merges.txt`.
    pub fn from_files(vocab: &Path, merges: &Path, max_length: usize) -> Result<Self> {
        for path in [vocab, merges] {
            if !path.is_file() {
                return Err(EngineError::Tokenizer(format!(
                    "missing tokenizer file {}",
                    path.display()
                )));
            }
        }
        let bpe = BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .end_of_word_suffix("</w>".to_string())
            .unk_token(EOS.to_string())
            .build()
            .map_err(|e| EngineError::Tokenizer(format!("building BPE: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let whitespace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        // Setters return the tokenizer for chaining; nothing to check.
        let _ = inner.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(
            vec![NFC.into(), whitespace.into(), Lowercase.into()],
        ))));
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let _ = inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(
            PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()]),
        )));
        let _ = inner.add_special_tokens(vec![
            AddedToken::from(BOS, true),
            AddedToken::from(EOS, true),
        ]);
        Self::from_tokenizer(inner, max_length)
    }

    /// BOS/EOS are added here rather than by a post-processor, so that truncation keeps
    /// the first `max_length - 2` tokens exactly as transformers does.
    fn from_tokenizer(mut inner: Tokenizer, max_length: usize) -> Result<Self> {
        let bos_id = token_id(&inner, BOS)?;
        let eos_id = token_id(&inner, EOS)?;
        inner
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id: eos_id,
            max_length,
        })
    }

    /// Ids of `text` with BOS and EOS, truncated to the context length (BOS, the first
    /// `max_length - 2` tokens, EOS), unpadded.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut tokens = self.tokens(text)?;
        tokens.truncate(self.max_length - 2);
        let mut ids = Vec::with_capacity(tokens.len() + 2);
        ids.push(self.bos_id);
        ids.extend(tokens);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// The BPE ids of `text` alone: no BOS/EOS, no truncation.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Whether `text` fits the context with BOS and EOS, i.e. would not be truncated.
    pub fn fits(&self, text: &str) -> Result<bool> {
        Ok(self.tokens(text)?.len() + 2 <= self.max_length)
    }

    /// Ids of `text` padded with the pad token to exactly the context length.
    pub fn encode_padded(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }

    /// Writes the assembled tokenizer as a `tokenizer.json`.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// Id of `<|startoftext|>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<|endoftext|>`.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id of the padding token (the folder's `pad_token`, else `<|endoftext|>`).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The context length (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

fn token_id(tokenizer: &Tokenizer, token: &str) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| EngineError::Tokenizer(format!("vocabulary has no `{token}`")))
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| EngineError::Tokenizer(format!("non-UTF-8 path {}", path.display())))
}

/// A JSON file of the tokenizer folder, if it exists and parses.
fn read_json_object(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// `pad_token` as transformers writes it: a string, or an object with its `content`.
fn pad_token_of(config: Option<&serde_json::Value>) -> Option<String> {
    let pad = config?.get("pad_token")?;
    pad.as_str()
        .or_else(|| pad.get("content").and_then(|c| c.as_str()))
        .map(str::to_owned)
}

/// `model_max_length` from tokenizer_config.json; transformers writes a huge sentinel
/// when the length is unknown, so anything above CLIP's 77 falls back to 77.
fn max_length_of(config: Option<&serde_json::Value>) -> usize {
    config
        .and_then(|json| json.get("model_max_length").and_then(|v| v.as_u64()))
        .map(|n| n as usize)
        .filter(|&n| (2..=DEFAULT_MAX_LENGTH).contains(&n))
        .unwrap_or(DEFAULT_MAX_LENGTH)
}
