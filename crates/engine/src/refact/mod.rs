//! ReFACT (Arad, Orgad & Belinkov): edit a fact in the text encoder by a rank-one update
//! of one layer's `fc2`, found by a short optimisation. DESIGN.md §1 is the method; the
//! reference implementation is `make_fixture.py`'s `refact`.
//!
//! Flow: [`EditRequest::validate`] → [`StatsCache::load_or_compute`] (C for the layer,
//! cached) → [`compute_edit`] on the current version's [`DeltaSet`] → a [`Delta`] to store.
//! [`Editor`] runs that flow; every caller (the server, the evaluation runner, `refact
//! edit`) goes through it.
//!
//! [`DeltaSet`]: crate::deltas::DeltaSet
//! [`Delta`]: crate::deltas::Delta

mod adam;
pub mod batch_request;
pub mod corpus;
pub mod edit;
pub mod editor;
mod insert;
pub mod optimize;
pub mod request;
pub mod spread;
pub mod statistics;
pub mod stats_cache;
pub mod templates;
mod upper_layers;

pub use batch_request::{check_batch_size, BatchRequest, EditJob, Fact, MAX_FACTS};
pub use corpus::Corpus;
pub use edit::{
    compute_batch_edit, compute_edit, BatchOutcome, EditMetrics, EditOutcome, EditVectors,
    FactOutcome, TextCheck, FACTS_PER_PASS,
};
pub use editor::Editor;
pub use optimize::IterationReport;
pub use request::{
    default_layer, EditRequest, EncoderTarget, HyperParams, ValidatedEdit, MAX_CONTRASTIVE,
};
pub use spread::{compute_spread_edit, SpreadOutcome};
pub use statistics::LayerStatistics;
pub use stats_cache::{StatsCache, StatsKey, StatsOrigin};
