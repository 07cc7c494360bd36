//! The run's reports: `results.md` (the paper's Table 1 layout) and `report.html` (the
//! image grid).

pub mod html;
pub mod markdown;
