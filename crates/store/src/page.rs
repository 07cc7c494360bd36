//! One page of a listing.

use serde::Serialize;

use crate::error::{Result, StoreError};

/// The most rows one listing call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of a listing, with the total number of matching rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// How many rows match, over all pages.
    pub total: i64,
    /// The page size asked for.
    pub limit: u32,
    /// How many matching rows come before this page.
    pub offset: u64,
}

/// Checks a page request and converts it to SQL `LIMIT`/`OFFSET` values.
pub(crate) fn sql_limits(limit: u32, offset: u64) -> Result<(i64, i64)> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(StoreError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let offset = i64::try_from(offset).map_err(|_| StoreError::invalid("offset", "too large"))?;
    Ok((i64::from(limit), offset))
}
