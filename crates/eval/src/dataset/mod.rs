//! RoAD and TIMED files, parsed into one [`EvalCase`] shape.

pub mod case;
pub mod road;
pub mod table;
pub mod timed;

pub use case::{EvalCase, Negative, Positive};

use crate::error::{EvalError, Result};
use std::path::Path;
use std::str::FromStr;

/// Which layout a dataset file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetFormat {
    Road,
    Timed,
}

impl FromStr for DatasetFormat {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "road" => Ok(DatasetFormat::Road),
            "timed" | "time" => Ok(DatasetFormat::Timed),
            other => Err(EvalError::Invalid(format!(
                "unknown dataset format `{other}` (expected road or timed)"
            ))),
        }
    }
}

/// Reads a dataset file. Every cell is trimmed and lowercased; a malformed file is refused
/// with the row and column named.
pub fn load(path: &Path, format: DatasetFormat) -> Result<Vec<EvalCase>> {
    let table = table::Table::read(path)?;
    let cases = match format {
        DatasetFormat::Road => road::parse(&table)?,
        DatasetFormat::Timed => timed::parse(&table)?,
    };
    if cases.is_empty() {
        return Err(table.error(1, "-", "the file has a header but no rows"));
    }
    Ok(cases)
}
