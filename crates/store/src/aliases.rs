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
    /// Moving it needs the `admin` scope or a version whose gates all passed.
    pub protected: bool,
}

#[derive(sqlx::FromRow)]
struct AliasRow {
    name: String,
    version: i64,
    updated_at: DbTime,
    protected: bool,
}

impl From<AliasRow> for Alias {
    fn from(row: AliasRow) -> Self {
        Self {
            name: row.name,
            version: row.version,
            updated_at: row.updated_at.0,
            protected: row.protected,
        }
    }
}

/// Who changes an alias and how, as recorded in its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasChange<'a> {
    /// The token's name (`anonymous` with auth off).
    pub actor: &'a str,
    /// Moved past a failed gate or a protection.
    pub forced: bool,
    /// Marks the alias protected or not; `None` keeps what it was (new aliases: not).
    pub protected: Option<bool>,
}

/// One entry of an alias's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AliasEvent {
    /// Increasing over all aliases: the order things happened in.
    pub id: i64,
    pub alias: String,
    /// `moved` (also the first pointing) or `removed`.
    pub action: String,
    /// The version before; `None` when the alias was created.
    pub from_version: Option<i64>,
    /// The version after; `None` when removed.
    pub to_version: Option<i64>,
    pub actor: String,
    pub forced: bool,
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AliasEventRow {
    id: i64,
    alias: String,
    action: String,
    from_version: Option<i64>,
    to_version: Option<i64>,
    actor: String,
    forced: bool,
    at: DbTime,
}

impl From<AliasEventRow> for AliasEvent {
    fn from(row: AliasEventRow) -> Self {
        Self {
            id: row.id,
            alias: row.alias,
            action: row.action,
            from_version: row.from_version,
            to_version: row.to_version,
            actor: row.actor,
            forced: row.forced,
            at: row.at.0,
        }
    }
}

// Inserts or repoints, only if the version exists (no row back otherwise). The WHERE
// also tells SQLite's parser that ON CONFLICT belongs to the INSERT.
const UPSERT_ALIAS: &str = "\
    INSERT INTO aliases (name, version, updated_at, protected) \
    SELECT $1, number, $3, $4 FROM versions WHERE number = $2 \
    ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
        updated_at = excluded.updated_at, protected = excluded.protected \
    RETURNING *";

const INSERT_EVENT: &str = "\
    INSERT INTO alias_events (alias, action, from_version, to_version, actor, forced, at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The most history entries one call returns.
pub const MAX_ALIAS_HISTORY: u32 = 500;

impl Store {
    /// Points alias `name` at `version`, creating it if needed, and records the move in
    /// its history (in the same transaction). Names are 1 to 64 characters of
    /// `A-Z a-z 0-9 - _ .`, not all digits (a number means a version). `NotFound` if the
    /// version does not exist.
    pub async fn set_alias(
        &self,
        name: &str,
        version: i64,
        change: &AliasChange<'_>,
    ) -> Result<Alias> {
        check_alias_name(name)?;
        let row: Option<AliasRow> = in_version_transaction!(self, tx => {
            let before: Option<AliasRow> = sqlx::query_as("SELECT * FROM aliases WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            let protected = change
                .protected
                .or(before.as_ref().map(|b| b.protected))
                .unwrap_or(false);
            let at = DbTime(now());
            let row: Option<AliasRow> = sqlx::query_as(UPSERT_ALIAS)
                .bind(name)
                .bind(version)
                .bind(at)
                .bind(protected)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                sqlx::query(INSERT_EVENT)
                    .bind(name)
                    .bind("moved")
                    .bind(before.map(|b| b.version))
                    .bind(Some(version))
                    .bind(change.actor)
                    .bind(change.forced)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            row
        });
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

    /// Deletes alias `name` and records the removal; false if there was none.
    pub async fn delete_alias(&self, name: &str, actor: &str) -> Result<bool> {
        let removed = in_version_transaction!(self, tx => {
            let before: Option<AliasRow> =
                sqlx::query_as("DELETE FROM aliases WHERE name = $1 RETURNING *")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(before) = &before {
                sqlx::query(INSERT_EVENT)
                    .bind(name)
                    .bind("removed")
                    .bind(Some(before.version))
                    .bind(None::<i64>)
                    .bind(actor)
                    .bind(false)
                    .bind(DbTime(now()))
                    .execute(&mut *tx)
                    .await?;
            }
            before.is_some()
        });
        Ok(removed)
    }

    /// The history of alias `name` (also after its removal), newest first, at most
    /// `limit` entries (capped at [`MAX_ALIAS_HISTORY`]).
    pub async fn alias_history(&self, name: &str, limit: u32) -> Result<Vec<AliasEvent>> {
        let limit = i64::from(limit.min(MAX_ALIAS_HISTORY));
        let rows: Vec<AliasEventRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM alias_events WHERE alias = $1 ORDER BY id DESC LIMIT $2")
                .bind(name)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(AliasEvent::from).collect())
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
