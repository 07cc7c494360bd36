//! refact-server: the HTTP service around the engine and the store.
//!
//! One model in memory (immutable weights; each version is a set of low-rank deltas),
//! a generation thread fed by a bounded queue, an edit worker that claims edits from the
//! store's queue and commits each as a new version, and an axum API with bearer-token
//! scopes, Prometheus metrics, an OpenAPI document and a small dashboard.

pub mod activity;
pub mod auth;
pub mod backend;
pub mod error;
pub mod events;
pub mod extract;
pub mod gate;
pub mod generation;
pub mod metrics;
pub mod openapi;
pub mod replicas;
pub mod routes;
#[cfg(test)]
pub(crate) mod scripted;
pub mod secret;
mod serve;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod token_cache;
pub mod versions;
pub mod webhooks;
pub mod worker;

pub use error::ApiError;
pub use routes::app;
pub use settings::Settings;
pub use startup::Application;
