//! Tokens the store confirmed recently, to authenticate through a database outage.
//!
//! While the database answers, every request asks it (a revoked token stops working at
//! once). When it does not, a token the store confirmed within `auth.outage_cache_secs`
//! is accepted with the scopes it had, so that renders of versions already in memory go
//! on. After one failure the store is not asked again for a moment (`PROBE_PAUSE`):
//! requests during an outage do not each wait for the pool's timeout. Keys are sha256
//! digests; the plaintext is never kept.

use crate::auth::Caller;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a failed lookup requests go straight to the cache.
const PROBE_PAUSE: Duration = Duration::from_secs(1);
/// Entries kept at most; past it the oldest half is dropped (tokens are few in practice).
const MAX_ENTRIES: usize = 10_000;

type Key = [u8; 32];

#[derive(Debug)]
pub struct TokenCache {
    max_age: Duration,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    confirmed: HashMap<Key, (Caller, Instant)>,
    store_failed_at: Option<Instant>,
}

impl TokenCache {
    /// A cache whose entries serve for `max_age` after the store last confirmed them.
    pub fn new(max_age: Duration) -> Self {
        TokenCache {
            max_age,
            state: Mutex::new(CacheState::default()),
        }
    }

    /// The digest a token is kept under.
    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// True while the store failed less than `PROBE_PAUSE` ago: skip asking it.
    pub fn store_recently_failed(&self) -> bool {
        self.lock()
            .store_failed_at
            .is_some_and(|at| at.elapsed() < PROBE_PAUSE)
    }

    /// The store answered: remember the caller (or forget a token it no longer knows).
    pub fn confirmed(&self, key: Key, caller: Option<&Caller>) {
        let mut state = self.lock();
        state.store_failed_at = None;
        match caller {
            Some(caller) => {
                if state.confirmed.len() >= MAX_ENTRIES {
                    let mut ages: Vec<Instant> =
                        state.confirmed.values().map(|(_, at)| *at).collect();
                    ages.sort();
                    let cutoff = ages[ages.len() / 2];
                    state.confirmed.retain(|_, (_, at)| *at > cutoff);
                }
                state
                    .confirmed
                    .insert(key, (caller.clone(), Instant::now()));
            }
            None => {
                state.confirmed.remove(&key);
            }
        }
    }

    /// The store could not be reached.
    pub fn store_failed(&self) {
        self.lock().store_failed_at = Some(Instant::now());
    }

    /// The caller behind `key` if the store confirmed it within `max_age`.
    pub fn recent(&self, key: &Key) -> Option<Caller> {
        let state = self.lock();
        let (caller, at) = state.confirmed.get(key)?;
        (at.elapsed() <= self.max_age).then(|| caller.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().expect("token cache poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refact_store::Scope;

    fn caller() -> Caller {
        Caller {
            name: "ci".into(),
            scopes: vec![Scope::Generate],
        }
    }

    #[test]
    fn a_confirmed_token_serves_until_it_is_too_old_or_unknown() {
        let cache = TokenCache::new(Duration::from_millis(50));
        let key = TokenCache::key("rfs_secret");
        assert_eq!(cache.recent(&key), None);
        cache.confirmed(key, Some(&caller()));
        assert_eq!(cache.recent(&key), Some(caller()));
        assert_eq!(cache.recent(&TokenCache::key("rfs_other")), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.recent(&key), None, "too old");
        cache.confirmed(key, Some(&caller()));
        cache.confirmed(key, None);
        assert_eq!(cache.recent(&key), None, "revoked while the store answered");
    }

    #[test]
    fn after_a_failure_the_store_is_skipped_for_a_moment() {
        let cache = TokenCache::new(Duration::from_secs(60));
        assert!(!cache.store_recently_failed());
        cache.store_failed();
        assert!(cache.store_recently_failed());
        cache.confirmed(TokenCache::key("t"), Some(&caller()));
        assert!(!cache.store_recently_failed(), "an answer ends the pause");
    }
}
