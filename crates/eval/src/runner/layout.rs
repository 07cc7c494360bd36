//! Where a run keeps its files under `--out`. Row files are what make a run resumable:
//! a row with a result file is done.

use super::plan::Slot;
use std::path::{Path, PathBuf};

/// The paths of one run's output folder.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Which model made an image: the unedited one (`before`) or the mode's (`after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Before,
    After,
}

impl Side {
    fn dir(self) -> &'static str {
        match self {
            Side::Before => "before",
            Side::After => "after",
        }
    }
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The output folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The settings of the run, checked on a rerun.
    pub fn settings(&self) -> PathBuf {
        self.root.join("run.json")
    }

    fn row_name(row: usize) -> String {
        format!("row-{row:03}")
    }

    /// One row's scored result.
    pub fn row_result(&self, row: usize) -> PathBuf {
        self.root
            .join("rows")
            .join(format!("{}.json", Self::row_name(row)))
    }

    /// One row's edit (the rank-one delta), kept so a sequential rerun need not recompute it.
    pub fn delta(&self, row: usize) -> PathBuf {
        self.root
            .join("deltas")
            .join(format!("{}.safetensors", Self::row_name(row)))
    }

    /// What the edit of one row reported (steps, probability, time).
    pub fn delta_info(&self, row: usize) -> PathBuf {
        self.root
            .join("deltas")
            .join(format!("{}.json", Self::row_name(row)))
    }

    /// An image, relative to the output folder (as the HTML report links it).
    pub fn image_relative(row: usize, side: Side, slot: Slot, seed: u64) -> PathBuf {
        PathBuf::from("images")
            .join(Self::row_name(row))
            .join(side.dir())
            .join(format!("{}_s{seed}.png", slot.name()))
    }

    /// An image's full path.
    pub fn image(&self, row: usize, side: Side, slot: Slot, seed: u64) -> PathBuf {
        self.root.join(Self::image_relative(row, side, slot, seed))
    }

    pub fn results_json(&self) -> PathBuf {
        self.root.join("results.json")
    }

    pub fn results_markdown(&self) -> PathBuf {
        self.root.join("results.md")
    }

    pub fn report_html(&self) -> PathBuf {
        self.root.join("report.html")
    }
}
