//! Every servable version, in memory: version number → the backend's composed deltas.
//!
//! Built at start from the stored deltas (no recomputation) and extended as versions are
//! committed. Each delta is turned into the backend's form once and shared by all the
//! versions that contain it, so holding thousands of versions costs a list of handles each.

use crate::backend::ModelBackend;
use crate::error::ApiError;
use refact_store::{Store, StoredDelta, Version, VersionKind};
use std::collections::HashMap;
use std::sync::RwLock;

/// The in-memory versions of one model.
pub struct VersionRegistry<B: ModelBackend> {
    inner: RwLock<Inner<B>>,
}

struct Inner<B: ModelBackend> {
    /// Apply-version number → its deltas.
    deltas: HashMap<i64, Vec<B::Delta>>,
    versions: HashMap<i64, Entry<B>>,
    /// The highest version loaded; versions are dense from 0 to here.
    head: Option<i64>,
}

struct Entry<B: ModelBackend> {
    /// The apply versions whose deltas make up this version, in order.
    applied: Vec<i64>,
    deltas: B::Deltas,
}

impl<B: ModelBackend> Default for VersionRegistry<B> {
    fn default() -> Self {
        VersionRegistry {
            inner: RwLock::new(Inner {
                deltas: HashMap::new(),
                versions: HashMap::new(),
                head: None,
            }),
        }
    }
}

impl<B: ModelBackend> VersionRegistry<B> {
    /// The composed deltas of version `n`, if it is loaded.
    pub fn get(&self, n: i64) -> Option<B::Deltas> {
        let inner = self.inner.read().expect("version registry poisoned");
        inner.versions.get(&n).map(|entry| entry.deltas.clone())
    }

    /// The highest loaded version.
    pub fn head(&self) -> Option<i64> {
        self.inner.read().expect("version registry poisoned").head
    }

    /// Number of loaded versions.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .expect("version registry poisoned")
            .versions
            .len()
    }

    /// True before version 0 is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a version whose parent is loaded (or version 0), with the deltas it holds
    /// (an apply version's; none for the others). Adding a version twice is a no-op, so
    /// concurrent loaders may race.
    pub fn insert(
        &self,
        backend: &B,
        version: &Version,
        held: Vec<StoredDelta>,
    ) -> Result<(), ApiError> {
        let mut inner = self.inner.write().expect("version registry poisoned");
        if inner.versions.contains_key(&version.number) {
            return Ok(());
        }
        let parent_applied = match version.parent {
            None => Vec::new(),
            Some(parent) => inner
                .versions
                .get(&parent)
                .map(|entry| entry.applied.clone())
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "version {} loaded before its parent {parent}",
                        version.number
                    ))
                })?,
        };
        let applied = match version.kind {
            VersionKind::Base => Vec::new(),
            VersionKind::Apply => {
                if held.is_empty() {
                    return Err(ApiError::Internal(format!(
                        "apply version {} has no delta",
                        version.number
                    )));
                }
                let deltas = held
                    .into_iter()
                    .map(|stored| backend.delta(stored))
                    .collect::<Result<Vec<_>, _>>()?;
                inner.deltas.insert(version.number, deltas);
                let mut applied = parent_applied;
                applied.push(version.number);
                applied
            }
            VersionKind::Revert => {
                let target = version.reverts_version.ok_or_else(|| {
                    ApiError::Internal(format!("revert version {} names no target", version.number))
                })?;
                parent_applied
                    .into_iter()
                    .filter(|&n| n != target)
                    .collect()
            }
        };
        let deltas: Vec<B::Delta> = applied
            .iter()
            .flat_map(|n| inner.deltas[n].iter().cloned())
            .collect();
        let composed = backend.compose(&deltas)?;
        inner.versions.insert(
            version.number,
            Entry {
                applied,
                deltas: composed,
            },
        );
        inner.head = inner.head.max(Some(version.number));
        Ok(())
    }

    /// The composed deltas of version `n`, loading it (and any version before it that is
    /// missing) from the store first: another replica may have committed it. `None` when
    /// the store has no such version.
    pub async fn ensure(
        &self,
        backend: &B,
        store: &Store,
        n: i64,
    ) -> Result<Option<B::Deltas>, ApiError> {
        if let Some(deltas) = self.get(n) {
            return Ok(Some(deltas));
        }
        if n < 0 {
            return Ok(None);
        }
        let from = self.head().map_or(0, |h| h + 1);
        let mut held = store.version_deltas(from, n).await?;
        for number in from..=n {
            match store.get_version(number).await? {
                Some(version) => {
                    let deltas = held.remove(&number).unwrap_or_default();
                    self.insert(backend, &version, deltas)?
                }
                None => return Ok(None),
            }
        }
        Ok(self.get(n))
    }
}
