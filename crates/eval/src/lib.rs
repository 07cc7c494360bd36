//! refact-eval: scoring ReFACT edits the way the paper does. A CLIP scorer, the paper's
//! metrics (efficacy, generality, specificity, F1), RoAD/TIMED parsers, a text-space
//! pre-check, and the evaluation runner with its reports.

pub mod dataset;
pub mod error;
pub mod image_check;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod scorer;
pub mod text_check;

pub use error::{EvalError, Result};
pub use scorer::{PixelScores, Scorer, Scores};
