//! The text encoder's outputs per (version, prompt), kept for the next image.
//!
//! A served image encodes its prompt and its negative prompt at its version. Requests
//! repeat both: a CI pipeline renders the same prompts at every new version, and every
//! unguided-negative request encodes the empty prompt. The cache keeps the encodings (the
//! UNet's context, and SDXL's pooled embedding) of the most recently used (version,
//! prompt) pairs, at most `capacity`,
//! evicting the least recently used. A version is identified by its [`DeltaSet`] (the
//! set and its clones, not equal contents), which each entry holds so that the identity
//! cannot be reused while the entry lives.

use super::PromptEncoding;
use crate::deltas::DeltaSet;
use crate::error::Result;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Entries kept by default: 256 prompts, about 60 MiB of f32 hidden states at SD v1.x
/// sizes (77 × 768 values each).
pub const DEFAULT_CAPACITY: usize = 256;

#[derive(Debug)]
pub struct TextEmbeddingCache {
    capacity: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Increases on every use; the entry with the smallest `last_used` goes first.
    clock: u64,
    entries: HashMap<(usize, String), Entry>,
}

#[derive(Debug)]
struct Entry {
    /// One prompt's encoding on the text encoder's device, f32.
    hidden: PromptEncoding,
    /// Keeps the version's identity alive while the entry exists.
    _version: DeltaSet,
    last_used: u64,
}

impl Default for TextEmbeddingCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl TextEmbeddingCache {
    /// A cache of at most `capacity` prompts; 0 turns it off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The encoding (one row) of each prompt at `version`, in order: from the cache
    /// where present, the others from one call of `encode` (which gets the missing
    /// prompts and returns their encodings, one row each).
    pub fn encodings(
        &self,
        version: &DeltaSet,
        prompts: &[&str],
        encode: impl FnOnce(&[&str]) -> Result<PromptEncoding>,
    ) -> Result<Vec<PromptEncoding>> {
        let identity = version.identity();
        let mut found: Vec<Option<PromptEncoding>> = {
            let mut state = self.lock();
            prompts
                .iter()
                .map(|prompt| state.touch(&(identity, prompt.to_string())))
                .collect()
        };
        let missing: Vec<&str> = prompts
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(prompt, _)| *prompt)
            .collect();
        self.hits
            .fetch_add((prompts.len() - missing.len()) as u64, Ordering::Relaxed);
        self.misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if !missing.is_empty() {
            let encoded = encode(&missing)?;
            let mut state = self.lock();
            let misses = found
                .iter_mut()
                .zip(prompts)
                .filter(|(slot, _)| slot.is_none());
            for (row, (slot, prompt)) in misses.enumerate() {
                let hidden = encoded.row(row)?;
                if self.capacity > 0 {
                    let key = (identity, prompt.to_string());
                    state.insert(key, hidden.clone(), version, self.capacity);
                }
                *slot = Some(hidden);
            }
        }
        Ok(found
            .into_iter()
            .map(|t| t.expect("every slot is filled"))
            .collect())
    }

    /// Prompts answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Prompts that had to be encoded so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Prompts held at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Prompts held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn touch(&mut self, key: &(usize, String)) -> Option<PromptEncoding> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|entry| {
            entry.last_used = clock;
            entry.hidden.clone()
        })
    }

    fn insert(
        &mut self,
        key: (usize, String),
        hidden: PromptEncoding,
        version: &DeltaSet,
        capacity: usize,
    ) {
        self.clock += 1;
        let entry = Entry {
            hidden,
            _version: version.clone(),
            last_used: self.clock,
        };
        self.entries.insert(key, entry);
        while self.entries.len() > capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
                .expect("over capacity means not empty");
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// An "encoder" that gives each prompt a context of its length and a pooled value
    /// of twice that, and counts its calls.
    fn encode_counting<'a>(
        calls: &'a mut Vec<Vec<String>>,
    ) -> impl FnOnce(&[&str]) -> Result<PromptEncoding> + 'a {
        move |prompts: &[&str]| {
            calls.push(prompts.iter().map(|p| p.to_string()).collect());
            let values: Vec<f32> = prompts.iter().map(|p| p.len() as f32).collect();
            let context = Tensor::from_vec(values, (prompts.len(), 1, 1), &Device::Cpu)?;
            Ok(PromptEncoding {
                pooled: Some((context.squeeze(2)? * 2.0)?),
                context,
            })
        }
    }

    fn value(e: &PromptEncoding) -> f32 {
        let context = e.context.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let pooled = e.pooled.as_ref().unwrap().flatten_all().unwrap();
        assert_eq!(
            pooled.to_vec1::<f32>().unwrap(),
            [2.0 * context],
            "pooled row kept with its context"
        );
        context
    }

    #[test]
    fn only_missing_prompts_are_encoded_and_rows_keep_their_order() {
        let cache = TextEmbeddingCache::new(8);
        let version = DeltaSet::empty();
        let mut calls = Vec::new();
        let first = cache
            .encodings(&version, &["", "a cat"], encode_counting(&mut calls))
            .unwrap();
        let second = cache
            .encodings(&version, &["a dog!", ""], encode_counting(&mut calls))
            .unwrap();
        assert_eq!(
            calls,
            vec![vec!["".to_string(), "a cat".into()], vec!["a dog!".into()]]
        );
        assert_eq!(first.iter().map(value).collect::<Vec<_>>(), [0.0, 5.0]);
        assert_eq!(second.iter().map(value).collect::<Vec<_>>(), [6.0, 0.0]);
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
    }

    #[test]
    fn versions_do_not_share_entries_but_clones_of_one_do() {
        let cache = TextEmbeddingCache::new(8);
        let (one, other) = (DeltaSet::empty(), DeltaSet::empty());
        let mut calls = Vec::new();
        cache
            .encodings(&one, &["x"], encode_counting(&mut calls))
            .unwrap();
        cache
            .encodings(&one.clone(), &["x"], encode_counting(&mut calls))
            .unwrap();
        cache
            .encodings(&other, &["x"], encode_counting(&mut calls))
            .unwrap();
        assert_eq!(calls.len(), 2, "the clone hits, the other version misses");
    }

    #[test]
    fn the_least_recently_used_prompt_goes_first() {
        let cache = TextEmbeddingCache::new(2);
        let version = DeltaSet::empty();
        let mut calls = Vec::new();
        for prompts in [["a"], ["b"], ["a"], ["c"], ["a"], ["b"]] {
            cache
                .encodings(&version, &prompts, encode_counting(&mut calls))
                .unwrap();
        }
        // "c" evicted "b" (a was used after b); "b" then comes back as a miss.
        let encoded: Vec<String> = calls.into_iter().flatten().collect();
        assert_eq!(encoded, ["a", "b", "c", "b"]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = TextEmbeddingCache::new(0);
        let version = DeltaSet::empty();
        let mut calls = Vec::new();
        cache
            .encodings(&version, &["a"], encode_counting(&mut calls))
            .unwrap();
        cache
            .encodings(&version, &["a"], encode_counting(&mut calls))
            .unwrap();
        assert_eq!(calls.len(), 2);
        assert!(cache.is_empty());
    }
}
