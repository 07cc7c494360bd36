//! API tokens: random secrets shown once; only their sha256 is stored.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::rngs::SysRng;
use rand::TryRng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db_types::{now, DbId, DbTime};
use crate::error::{Result, StoreError};
use crate::store::Store;

/// Every token starts with this, so leaked ones are easy to recognise (and grep for).
pub const TOKEN_PREFIX: &str = "rfs_";

/// Random bytes per token, from the operating system's generator.
const TOKEN_BYTES: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read edits, versions, aliases.
    Read,
    /// Generate images.
    Generate,
    /// Submit and cancel edits.
    Edit,
    /// Manage aliases, reverts and tokens.
    Admin,
}

impl Scope {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Generate => "generate",
            Self::Edit => "edit",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "read" => Ok(Self::Read),
            "generate" => Ok(Self::Generate),
            "edit" => Ok(Self::Edit),
            "admin" => Ok(Self::Admin),
            other => Err(StoreError::invalid(
                "scope",
                format!("unknown scope {other:?}"),
            )),
        }
    }
}

/// A token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Identifier (for listing and revoking).
    pub id: Uuid,
    /// Who or what holds it; recorded as `created_by` on edits.
    pub name: String,
    /// What it may do, sorted, without repeats.
    pub scopes: Vec<Scope>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: DbId,
    name: String,
    scopes: String,
    created_at: DbTime,
    revoked_at: Option<DbTime>,
}

impl TryFrom<TokenRow> for TokenInfo {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self> {
        let scopes = row
            .scopes
            .split(',')
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError::Corrupt(format!("token scope {s:?}")))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            id: row.id.0,
            name: row.name,
            scopes,
            created_at: row.created_at.0,
            revoked_at: row.revoked_at.map(|t| t.0),
        })
    }
}

/// Hex sha256 of a plaintext token: the form stored and looked up.
pub fn token_hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

const TOKEN_COLUMNS: &str = "id, name, scopes, created_at, revoked_at";

impl Store {
    /// Creates a token named `name` with `scopes`. Returns the plaintext (`rfs_` +
    /// 64 hex digits), which is not stored and cannot be shown again, and its info.
    pub async fn create_token(&self, name: &str, scopes: &[Scope]) -> Result<(String, TokenInfo)> {
        if name.trim().is_empty() {
            return Err(StoreError::invalid("name", "must not be empty"));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(StoreError::invalid(
                "scopes",
                "at least one scope is needed",
            ));
        }
        let plaintext = generate_token()?;
        let info = TokenInfo {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            scopes,
            created_at: now(),
            revoked_at: None,
        };
        let scopes_text = info
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(DbId(info.id))
            .bind(&info.name)
            .bind(token_hash(&plaintext))
            .bind(&scopes_text)
            .bind(DbTime(info.created_at))
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok((plaintext, info))
    }

    /// The live (not revoked) token whose plaintext this is.
    pub async fn authenticate(&self, plaintext: &str) -> Result<Option<TokenInfo>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        let row: Option<TokenRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(token_hash(plaintext))
                .fetch_optional(pool)
                .await
        })?;
        row.map(TokenInfo::try_from).transpose()
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id");
        let rows: Vec<TokenRow> =
            on_pool!(self, pool => sqlx::query_as(&sql).fetch_all(pool).await)?;
        rows.into_iter().map(TokenInfo::try_from).collect()
    }

    /// Revokes token `id` (keeping the first revocation time). False if there is no
    /// such token.
    pub async fn revoke_token(&self, id: Uuid) -> Result<bool> {
        let found = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            )
            .bind(DbId(id))
            .bind(DbTime(now()))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(found > 0)
    }
}

fn generate_token() -> Result<String> {
    let mut secret = [0u8; TOKEN_BYTES];
    SysRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_hex_of_32_random_bytes_and_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        let hex_part = a.strip_prefix(TOKEN_PREFIX).unwrap();
        assert_eq!(hex::decode(hex_part).unwrap().len(), TOKEN_BYTES);
    }

    #[test]
    fn scopes_parse_back_from_their_spelling() {
        for scope in [Scope::Read, Scope::Generate, Scope::Edit, Scope::Admin] {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("root".parse::<Scope>().is_err());
    }
}
