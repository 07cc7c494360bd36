//! Aliases: names (`production`, `staging`) that point at versions.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db_types::{now, DbTime};
use crate::error::{Result, StoreError};
use crate::store::Store;

/// Longest alias name accepted.
const MAX_ALIAS_LEN: usize = 64;

/// A name pointing at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alias {
    /// The name.
    pub name: String,
    /// The version it points at.
    pub version: i64,
    /// When it was last pointed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AliasRow {
    name: String,
    version: i64,
    updated_at: DbTime,
}

impl From<AliasRow> for Alias {
    fn from(row: AliasRow) -> Self {
        Self {
            name: row.name,
            version: row.version,
            updated_at: row.updated_at.0,
        }
    }
}

// Inserts or repoints, only if the version exists (no row back otherwise). The WHERE
// also tells SQLite's parser that ON CONFLICT belongs to the INSERT.
const UPSERT_ALIAS: &str = "\
    INSERT INTO aliases (name, version, updated_at) \
    SELECT $1, number, $3 FROM versions WHERE number = $2 \
    ON CONFLICT (name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at \
    RETURNING *";

impl Store {
    /// Points alias `name` at `version`, creating it if needed. Names are 1 to 64
    /// characters of `A-Z a-z 0-9 - _ .`, not all digits (a number means a version).
    /// `NotFound` if the version does not exist.
    pub async fn set_alias(&self, name: &str, version: i64) -> Result<Alias> {
        check_alias_name(name)?;
        let row: Option<AliasRow> = on_pool!(self, pool => {
            sqlx::query_as(UPSERT_ALIAS)
                .bind(name)
                .bind(version)
                .bind(DbTime(now()))
                .fetch_optional(pool)
                .await
        })?;
        row.map(Alias::from)
            .ok_or_else(|| StoreError::NotFound(format!("version {version}")))
    }

    /// The alias `name`.
    pub async fn get_alias(&self, name: &str) -> Result<Option<Alias>> {
        let row: Option<AliasRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM aliases WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Alias::from))
    }

    /// Every alias, by name.
    pub async fn list_aliases(&self) -> Result<Vec<Alias>> {
        let rows: Vec<AliasRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM aliases ORDER BY name")
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(Alias::from).collect())
    }

    /// Deletes alias `name`; false if there was none.
    pub async fn delete_alias(&self, name: &str) -> Result<bool> {
        let done = on_pool!(self, pool => {
            sqlx::query("DELETE FROM aliases WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(done > 0)
    }
}

fn check_alias_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_ALIAS_LEN || !name.chars().all(allowed) {
        return Err(StoreError::invalid(
            "alias",
            format!("must be 1 to {MAX_ALIAS_LEN} characters of A-Z a-z 0-9 - _ ."),
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(StoreError::invalid(
            "alias",
            "must not be all digits: that would read as a version number",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_alias_name;

    #[test]
    fn alias_names_are_checked() {
        for good in ["production", "staging-2", "v1.2_rc"] {
            assert!(check_alias_name(good).is_ok(), "{good}");
        }
        for bad in ["", "12", "has space", "slash/name", &"x".repeat(65)] {
            assert!(check_alias_name(bad).is_err(), "{bad:?}");
        }
    }
}
