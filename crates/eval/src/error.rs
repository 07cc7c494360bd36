//! The evaluation crate's one error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while scoring, parsing a dataset or running an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A config file (`config.json`, `preprocessor_config.json`) is missing a key or has
    /// an unsupported value.
    #[error("bad config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A weight file lacks a tensor or has one of the wrong shape.
    #[error("bad weights: {0}")]
    Weights(String),
    /// The vocabulary or merges could not be loaded, or a text could not be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A dataset file is malformed. `row` counts data rows from 1 (0 is the header);
    /// `column` is the column's name as the file spells it (or `#N` for an unnamed one).
    #[error("{path}: {}, column `{column}`: {message}", row_label(*.row))]
    Dataset {
        path: PathBuf,
        row: usize,
        column: String,
        message: String,
    },
    /// A caller's argument is out of range (empty text list, bad image size, unknown mode).
    #[error("{0}")]
    Invalid(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] refact_engine::error::EngineError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn row_label(row: usize) -> String {
    if row == 0 {
        "header".to_string()
    } else {
        format!("row {row}")
    }
}

impl EvalError {
    /// An I/O error that names the file.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A config error that names the file.
    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        EvalError::Config {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
