//! Versions: the base model (0) and one version per applied edit or revert.

mod commit;
pub(crate) use commit::TURN_AHEAD;
mod queries;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db_types::{DbId, DbTime};
use crate::error::StoreError;

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionKind {
    /// Version 0, the unedited model.
    Base,
    /// Adds the delta of one applied edit.
    Apply,
    /// Removes the delta of an earlier apply version.
    Revert,
}

impl VersionKind {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Apply => "apply",
            Self::Revert => "revert",
        }
    }
}

impl fmt::Display for VersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VersionKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "base" => Ok(Self::Base),
            "apply" => Ok(Self::Apply),
            "revert" => Ok(Self::Revert),
            other => Err(StoreError::invalid(
                "kind",
                format!("unknown version kind {other:?}"),
            )),
        }
    }
}

/// Outcome of the quality gate run on a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateStatus {
    /// The version met the gate's thresholds.
    Passed,
    /// It did not.
    Failed,
}

impl GateStatus {
    /// The stored (and API) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for GateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GateStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passed" => Ok(Self::Passed),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::invalid(
                "gate_status",
                format!("unknown gate status {other:?}"),
            )),
        }
    }
}

/// A stored version. Its text encoder is the base plus the deltas of every apply
/// version up to it, minus those a revert up to it removed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// 0 for the base, then 1, 2, ... with no gaps.
    pub number: i64,
    /// `number - 1`; `None` for the base.
    pub parent: Option<i64>,
    /// Base, apply or revert.
    pub kind: VersionKind,
    /// The applied edit (apply versions).
    pub edit_id: Option<Uuid>,
    /// The apply version whose delta this one removes (revert versions).
    pub reverts_version: Option<i64>,
    /// The edited text-encoder layer (apply versions; the first delta's when it has
    /// several). The factors themselves are read with [`crate::Store::version_deltas`]:
    /// API responses should not carry thousands of floats.
    pub layer: Option<i32>,
    /// Fingerprint of the base model the delta was computed for.
    pub model_fingerprint: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Quality gate outcome, once run.
    pub gate_status: Option<GateStatus>,
    /// Quality gate measurements, once run.
    pub gate_metrics: Option<Value>,
}

/// One delta of an apply version: `fc2.weight[layer] += Vᵀ U` on one text encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDelta {
    /// Which text encoder: `text` (SD v1/v2, SDXL's first) or `text_2` (SDXL's second).
    pub encoder: String,
    /// The edited layer.
    pub layer: i32,
    /// Rows of `U` and `V`: 1 for a single edit, n for a batch of n facts.
    pub rank: i32,
    /// `U`, row-major [rank × inner].
    pub u: Vec<f32>,
    /// `V`, row-major [rank × hidden].
    pub v: Vec<f32>,
}

impl StoredDelta {
    /// The rank-one delta of a single edit on the (first) text encoder.
    pub fn rank_one(layer: i32, u: Vec<f32>, v: Vec<f32>) -> Self {
        Self {
            encoder: "text".into(),
            layer,
            rank: 1,
            u,
            v,
        }
    }
}

/// The result of an edit, as the worker commits it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitDelta {
    /// The head the delta was computed on; the new version is `parent + 1`.
    pub parent: i64,
    /// The version's deltas, at least one, in the order they are applied.
    pub deltas: Vec<StoredDelta>,
    /// Fingerprint of the base model; must match the stored versions'.
    pub model_fingerprint: String,
    /// The edit's final metrics, stored on the edit.
    pub metrics: Value,
    /// The quality gate's verdict and measurements, if it ran before the commit.
    pub gate: Option<(GateStatus, Value)>,
}

/// What [`crate::Store::commit_edit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// The new version; the edit is now applied.
    Committed(Version),
    /// The head is no longer `parent`: nothing was written; recompute on `head`.
    HeadMoved {
        /// The current head.
        head: i64,
    },
    /// The worker no longer holds the edit: nothing was written; stop.
    LeaseLost,
    /// Another edit holds the head's next turn (see [`crate::Store::request_turn`]):
    /// nothing was written; ask for a turn, wait until it comes, then commit again.
    TurnTaken {
        /// The edit whose turn comes first.
        by: Uuid,
    },
}

/// A `versions` row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct VersionRow {
    number: i64,
    parent: Option<i64>,
    kind: String,
    edit_id: Option<DbId>,
    reverts_version: Option<i64>,
    layer: Option<i32>,
    model_fingerprint: String,
    created_at: DbTime,
    gate_status: Option<String>,
    gate_metrics: Option<Json<Value>>,
}

impl TryFrom<VersionRow> for Version {
    type Error = StoreError;

    fn try_from(row: VersionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, value: &str| {
            StoreError::Corrupt(format!("version {}: {what} {value:?}", row.number))
        };
        let kind = row.kind.parse().map_err(|_| corrupt("kind", &row.kind))?;
        let gate_status = match &row.gate_status {
            Some(text) => Some(text.parse().map_err(|_| corrupt("gate status", text))?),
            None => None,
        };
        Ok(Self {
            number: row.number,
            parent: row.parent,
            kind,
            edit_id: row.edit_id.map(|id| id.0),
            reverts_version: row.reverts_version,
            layer: row.layer,
            model_fingerprint: row.model_fingerprint,
            created_at: row.created_at.0,
            gate_status,
            gate_metrics: row.gate_metrics.map(|j| j.0),
        })
    }
}

/// Converts an optional row, the shape most single-version queries return.
pub(crate) fn version_from(row: Option<VersionRow>) -> Result<Option<Version>, StoreError> {
    row.map(Version::try_from).transpose()
}
