//! Bearer-token authentication and scopes.
//!
//! Handlers declare the scope they need in their signature (`Authorized<Edit>`), so the
//! check runs before the body is read: a caller without the scope gets 403 whatever it
//! sent. `admin` implies every other scope. With `auth.enabled = false` every caller is
//! an anonymous admin. Through a database outage, tokens confirmed lately still work
//! (see [`TokenCache`]).

use crate::backend::ModelBackend;
use crate::error::ApiError;
use crate::state::AppState;
use crate::token_cache::TokenCache;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use refact_store::Scope;
use std::marker::PhantomData;

/// The caller behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (recorded as `created_by` on edits), or `anonymous`.
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Caller {
            name: "anonymous".into(),
            scopes: vec![Scope::Admin],
        }
    }

    /// True when the caller holds `scope` or `admin`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|&s| s == scope || s == Scope::Admin)
    }
}

/// A scope an endpoint requires, as a type (see [`Authorized`]).
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
    const NAME: &'static str;
}

macro_rules! scope_marker {
    ($name:ident, $scope:expr, $text:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = $scope;
            const NAME: &'static str = $text;
        }
    };
}

scope_marker!(
    Read,
    Scope::Read,
    "read",
    "Reading edits, versions, aliases."
);
scope_marker!(Generate, Scope::Generate, "generate", "Generating images.");
scope_marker!(
    Edit,
    Scope::Edit,
    "edit",
    "Submitting and cancelling edits, reverts, aliases."
);
scope_marker!(Admin, Scope::Admin, "admin", "Everything.");

/// An authenticated caller that holds scope `S`.
#[derive(Debug)]
pub struct Authorized<S: RequiredScope> {
    pub caller: Caller,
    _scope: PhantomData<S>,
}

impl<B: ModelBackend, S: RequiredScope> FromRequestParts<AppState<B>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<B>) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        if !caller.has(S::SCOPE) {
            return Err(ApiError::Forbidden { scope: S::NAME });
        }
        Ok(Authorized {
            caller,
            _scope: PhantomData,
        })
    }
}

/// A caller holding scope `S`, or `None` for one without (valid) credentials. Never
/// refuses: for endpoints open to all that show more to authenticated callers.
#[derive(Debug)]
pub struct MaybeAuthorized<S: RequiredScope>(pub Option<Authorized<S>>);

impl<B: ModelBackend, S: RequiredScope> FromRequestParts<AppState<B>> for MaybeAuthorized<S> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<B>,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuthorized(
            Authorized::from_request_parts(parts, state).await.ok(),
        ))
    }
}

async fn authenticate<B: ModelBackend>(
    parts: &Parts,
    state: &AppState<B>,
) -> Result<Caller, ApiError> {
    if !state.settings.auth.enabled {
        return Ok(Caller::anonymous());
    }
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized {
            code: "unauthorized",
            message: "this endpoint needs an `Authorization: Bearer <token>` header".into(),
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized {
            code: "invalid_token",
            message: "the Authorization header is not `Bearer <token>`".into(),
        })?;
    let cache = &state.tokens;
    let key = TokenCache::key(token);
    if cache.store_recently_failed() {
        if let Some(caller) = cache.recent(&key) {
            return Ok(caller);
        }
    }
    // With a fallback at hand, a slow database costs a request little: past the budget
    // the lookup counts as failed.
    let lookup = state.store.authenticate(token);
    let answer = match cache.recent(&key) {
        Some(_) => match tokio::time::timeout(CACHED_LOOKUP_BUDGET, lookup).await {
            Ok(answer) => answer,
            Err(_) => Err(refact_store::StoreError::timed_out()),
        },
        None => lookup.await,
    };
    match answer {
        Ok(Some(info)) => {
            let caller = Caller {
                name: info.name,
                scopes: info.scopes,
            };
            cache.confirmed(key, Some(&caller));
            Ok(caller)
        }
        Ok(None) => {
            cache.confirmed(key, None);
            Err(ApiError::Unauthorized {
                code: "invalid_token",
                message: "unknown or revoked token".into(),
            })
        }
        // The database is gone: a token it confirmed lately still holds its scopes.
        Err(err) if err.is_unavailable() => {
            cache.store_failed();
            cache.recent(&key).ok_or(ApiError::Store(err))
        }
        Err(err) => Err(err.into()),
    }
}

/// How long a lookup of a token the cache could vouch for may take.
const CACHED_LOOKUP_BUDGET: std::time::Duration = std::time::Duration::from_millis(200);

/// The token of a `Bearer <token>` header value (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token("Bearer rfs_abc"), Some("rfs_abc"));
        assert_eq!(bearer_token("bearer  rfs_abc "), Some("rfs_abc"));
        assert_eq!(bearer_token("Basic dXNlcg=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("rfs_abc"), None);
    }

    #[test]
    fn admin_implies_every_scope() {
        let admin = Caller {
            name: "ops".into(),
            scopes: vec![Scope::Admin],
        };
        let reader = Caller {
            name: "viewer".into(),
            scopes: vec![Scope::Read],
        };
        for scope in [Scope::Read, Scope::Generate, Scope::Edit, Scope::Admin] {
            assert!(admin.has(scope));
        }
        assert!(reader.has(Scope::Read));
        assert!(!reader.has(Scope::Edit));
        assert!(!reader.has(Scope::Admin));
    }
}
