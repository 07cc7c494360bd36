//! refact-store: the database of refact-serve, on Postgres (production) or SQLite (the
//! embedded default), with the same behaviour on both.
//!
//! - **Edits** are the job queue: [`Store::insert_edit`] queues one (idempotently),
//!   workers [`Store::claim_next_edit`] under a lease, [`Store::heartbeat`], and end
//!   with [`Store::commit_edit`], [`Store::fail_attempt`] or [`Store::mark_cancelled`].
//! - **Versions** are the history: 0 is the base model, then one version per applied
//!   edit or revert, committed in order with no gaps. Deltas are `Vec<f32>`, stored
//!   as little-endian f32 bytes; the store never sees tensors.
//! - **Aliases** name versions, with a history of every move; **API tokens** are stored
//!   as sha256 hashes.
//! - **Webhook deliveries** are an outbox any replica sends from; **replicas** report
//!   themselves every few seconds.

#[macro_use]
mod dispatch;

mod aliases;
mod db_types;
mod edits;
mod error;
mod page;
mod replicas;
mod request_hash;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod tokens;
mod versions;
mod wakeup;
mod webhooks;

pub use aliases::{Alias, AliasChange, AliasEvent, MAX_ALIAS_HISTORY};
pub use edits::{Edit, EditFilter, EditStatus, InsertOutcome, LeaseState, NewEdit, QueueDepth};
pub use error::{Result, StoreError};
pub use page::{Page, MAX_PAGE_SIZE};
pub use replicas::{Replica, ReplicaReport};
pub use request_hash::request_hash;
pub use store::Store;
pub use tokens::{token_hash, Scope, TokenInfo, TOKEN_PREFIX};
pub use versions::{CommitDelta, CommitOutcome, GateStatus, StoredDelta, Version, VersionKind};
pub use webhooks::{AttemptResult, WebhookDelivery};
