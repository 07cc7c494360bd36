//! The engine's one error type. Only the server maps these to HTTP statuses.

use std::path::PathBuf;

/// Why a request was refused before any work was done. Each kind is a distinct,
/// stable code (`as_code`) that the server returns with 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidKind {
    /// A required string is empty or only whitespace.
    Empty,
    /// A prompt tokenizes to more than the model's context (77 tokens for CLIP).
    TooLong,
    /// The subject does not occur in the edit prompt.
    SubjectNotInPrompt,
    /// The edit layer does not exist in the text encoder.
    LayerOutOfRange,
    /// A hyper-parameter is NaN, infinite, or outside its allowed range.
    BadHyperParameter,
    /// Source and target of an edit are the same text.
    SourceEqualsTarget,
    /// Image size, step count, guidance or another generation setting is out of range.
    BadGenerationSetting,
    /// An unknown scheduler, device or dtype name.
    UnknownName,
    /// A tensor given by the caller (initial latents, delta vectors) has the wrong shape.
    BadShape,
    /// A list is longer than allowed (e.g. an edit's contrastive texts).
    TooMany,
    /// Two facts of one batch edit share a subject.
    DuplicateSubject,
}

impl InvalidKind {
    /// The machine-readable code, stable across releases.
    pub fn as_code(self) -> &'static str {
        match self {
            InvalidKind::Empty => "empty",
            InvalidKind::TooLong => "too_long",
            InvalidKind::SubjectNotInPrompt => "subject_not_in_prompt",
            InvalidKind::LayerOutOfRange => "layer_out_of_range",
            InvalidKind::BadHyperParameter => "bad_hyper_parameter",
            InvalidKind::SourceEqualsTarget => "source_equals_target",
            InvalidKind::BadGenerationSetting => "bad_generation_setting",
            InvalidKind::UnknownName => "unknown_name",
            InvalidKind::BadShape => "bad_shape",
            InvalidKind::TooMany => "too_many",
            InvalidKind::DuplicateSubject => "duplicate_subject",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input from the caller; nothing was computed.
    #[error("{field}: {message}")]
    Invalid {
        kind: InvalidKind,
        field: String,
        message: String,
    },
    /// The model folder or hub id could not be resolved or is incomplete.
    #[error("model not found: {0}")]
    ModelNotFound(String),
    /// A config file is missing a key or has an unsupported value.
    #[error("bad config {path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A weight file lacks a tensor or has one of the wrong shape.
    #[error("bad weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A cached file (statistics) is corrupt or does not match what was asked.
    #[error("cache: {0}")]
    Cache(String),
    /// The caller asked the computation to stop.
    #[error("cancelled")]
    Cancelled,
    /// ReFACT's optimisation produced a non-finite value.
    #[error("numerical failure: {0}")]
    Numerical(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl EngineError {
    /// Shorthand for a validation error.
    pub fn invalid(
        kind: InvalidKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        EngineError::Invalid {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a config error.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
