//! Quality gates: what an edit request may ask to be measured after its edit, and the
//! verdict that marks the new version `passed` or `failed`.
//!
//! A gate always runs the text-space check (seconds: the paper's three metrics on the
//! text encoder's pooled outputs) and, when it asks for `images`, the paper's image
//! metrics scored by the configured CLIP model over the given seeds. Each metric that has
//! tests must reach its threshold in every kind of check that ran. A failed gate still
//! commits the version (its metrics are the record of why); it only stops aliases from
//! pointing at it unless forced.

mod request;
mod verdict;

pub use request::{
    split_submission, GateNegative, GatePositive, GateRequest, ImageGate, EDIT_GATE_FIELD,
};
pub use verdict::{verdict, GateMeasurement};
