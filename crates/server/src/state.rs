//! What every handler and the worker share.

use crate::backend::ModelBackend;
use crate::events::EventHub;
use crate::generation::Generator;
use crate::replicas::ReplicaIdentity;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::token_cache::TokenCache;
use crate::versions::VersionRegistry;
use crate::webhooks::Webhooks;
use crate::worker::RunningEdits;
use metrics_exporter_prometheus::PrometheusHandle;
use refact_store::Store;
use std::sync::Arc;

/// The application's shared state; cloning copies handles, not data.
pub struct AppState<B: ModelBackend> {
    pub settings: Arc<Settings>,
    pub store: Arc<Store>,
    pub backend: Arc<B>,
    pub versions: Arc<VersionRegistry<B>>,
    pub generator: Generator<B>,
    pub events: Arc<EventHub>,
    pub running: Arc<RunningEdits>,
    pub shutdown: Arc<Shutdown>,
    pub tokens: Arc<TokenCache>,
    pub metrics: PrometheusHandle,
    pub webhooks: Arc<Webhooks>,
    pub replica: Arc<ReplicaIdentity>,
}

// Not derived: a derive would demand `B: Clone`, but only handles are cloned.
impl<B: ModelBackend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            settings: self.settings.clone(),
            store: self.store.clone(),
            backend: self.backend.clone(),
            versions: self.versions.clone(),
            generator: self.generator.clone(),
            events: self.events.clone(),
            running: self.running.clone(),
            shutdown: self.shutdown.clone(),
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            webhooks: self.webhooks.clone(),
            replica: self.replica.clone(),
        }
    }
}

impl<B: ModelBackend> AppState<B> {
    /// The composed deltas of version `n`, loading it from the store if another replica
    /// committed it; `None` if no such version exists.
    pub async fn version_deltas(
        &self,
        n: i64,
    ) -> Result<Option<B::Deltas>, crate::error::ApiError> {
        self.versions.ensure(&self.backend, &self.store, n).await
    }
}
