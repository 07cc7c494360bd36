//! Building and running the service: store, model, versions, threads, socket.

use crate::backend::engine::EngineBackend;
use crate::backend::ModelBackend;
use crate::error::ApiError;
use crate::events::EventHub;
use crate::generation::Generator;
use crate::replicas::ReplicaIdentity;
use crate::secret::redact_url;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::state::AppState;
use crate::token_cache::TokenCache;
use crate::versions::VersionRegistry;
use crate::webhooks::Webhooks;
use crate::worker::{EditWorker, RunningEdits, StopReason};
use refact_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// After the grace period: how long the 503 answers of stopped renders get to go out.
const ANSWER_FLUSH: Duration = Duration::from_secs(2);

/// A built, bound, not yet running server.
pub struct Application<B: ModelBackend = EngineBackend> {
    listener: TcpListener,
    port: u16,
    state: AppState<B>,
}

impl Application<EngineBackend> {
    /// Connects and migrates the database, loads the model named by the settings,
    /// rebuilds every stored version and binds the socket.
    pub async fn build(settings: Settings) -> Result<Self, ApiError> {
        let engine_settings = settings.clone();
        let backend = tokio::task::spawn_blocking(move || EngineBackend::load(&engine_settings))
            .await
            .map_err(|e| ApiError::Internal(format!("model loading panicked: {e}")))??;
        Self::build_with_backend(settings, backend).await
    }
}

impl<B: ModelBackend> Application<B> {
    /// [`Application::build`] with a model that is already loaded.
    pub async fn build_with_backend(settings: Settings, backend: B) -> Result<Self, ApiError> {
        let metrics = crate::metrics::install();
        let url = settings.database_url.expose().to_string();
        tracing::info!(database = %redact_url(&url), "connecting to the database");
        let store = Store::connect(&url).await?;
        store.migrate().await?;

        let backend = Arc::new(backend);
        let summary = backend.summary().clone();
        let versions = Arc::new(VersionRegistry::default());
        load_versions(&store, backend.as_ref(), &versions).await?;

        let shutdown = Arc::new(Shutdown::default());
        let generator = Generator::spawn(
            backend.clone(),
            settings.limits.generate_queue,
            settings.batching.policy(),
            shutdown.clone(),
        )
        .map_err(|e| ApiError::Internal(format!("cannot start the generation thread: {e}")))?;
        let listener = TcpListener::bind(&settings.bind)
            .await
            .map_err(|e| ApiError::Settings(format!("cannot listen on {}: {e}", settings.bind)))?;
        let port = listener
            .local_addr()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .port();

        if !settings.auth.enabled {
            tracing::warn!("authentication is OFF (auth.enabled = false): anyone who reaches this port is an admin");
        }
        if summary.is_demo {
            tracing::warn!("serving the built-in DEMO model: random weights, every image is noise");
        }
        tracing::info!(
            address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            model = %summary.source,
            fingerprint = %summary.fingerprint,
            versions = versions.len(),
            "refact-serve ready"
        );
        let tokens = Arc::new(TokenCache::new(Duration::from_secs_f64(
            settings.auth.outage_cache_secs,
        )));
        let store = Arc::new(store);
        let webhooks = Arc::new(Webhooks::new(settings.webhooks.clone(), store.clone()));
        let state = AppState {
            settings: Arc::new(settings),
            store,
            backend,
            versions,
            generator,
            events: Arc::new(EventHub::default()),
            running: Arc::new(RunningEdits::default()),
            shutdown,
            tokens,
            metrics,
            webhooks,
            replica: Arc::new(ReplicaIdentity::new()),
        };
        Ok(Application {
            listener,
            port,
            state,
        })
    }

    /// The port the server listens on (useful with `bind = "127.0.0.1:0"`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests inspect the store through it).
    pub fn state(&self) -> &AppState<B> {
        &self.state
    }

    /// A worker on this server's state; tests call `try_execute_one()` on it to drain
    /// the queue without timers (set `worker.enabled = false` to keep the background
    /// worker out of their way).
    pub fn edit_worker(&self) -> EditWorker<B> {
        EditWorker::new(self.state.clone())
    }

    /// Serves until Ctrl-C or SIGTERM, with the edit worker running when enabled. Then
    /// drains (see [`Shutdown`]): stops accepting, hands running edits back to the
    /// queue, ends event streams with a `shutdown` event, and lets queued renders finish
    /// for `shutdown_grace_secs`; what is left then is answered 503 `shutting_down`.
    pub async fn run_until_stopped(self) -> Result<(), ApiError> {
        let (stop_sender, stop) = watch::channel(false);
        let worker = self.state.settings.worker.enabled.then(|| {
            let worker = EditWorker::new(self.state.clone());
            tokio::spawn(worker.run(stop.clone()))
        });
        let dispatcher = tokio::spawn(crate::webhooks::dispatch::run(
            self.state.webhooks.clone(),
            self.state.store.clone(),
            stop.clone(),
        ));
        let heartbeat = tokio::spawn(crate::replicas::report_until_stopped(
            self.state.clone(),
            stop.clone(),
        ));
        let running = self.state.running.clone();
        let shutdown = self.state.shutdown.clone();
        let router = crate::routes::app(self.state.clone());
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                shutdown.begin();
                running.stop_all(StopReason::Shutdown);
                let _ = stop_sender.send(true);
            }
        };
        let grace = Duration::from_secs_f64(self.state.settings.shutdown_grace_secs);
        let header_timeout =
            Duration::from_secs_f64(self.state.settings.limits.header_read_timeout_secs);
        let serve = crate::serve::serve_http1(self.listener, router, header_timeout, signal);
        let mut serve = std::pin::pin!(serve);
        tokio::select! {
            _ = &mut serve => {}
            _ = async {
                shutdown.draining().await;
                tokio::time::sleep(grace).await;
            } => {
                // Renders still running stop at their next step; they and the queued
                // ones answer 503. Give those answers a moment to go out.
                shutdown.expire();
                if tokio::time::timeout(ANSWER_FLUSH, &mut serve).await.is_err() {
                    tracing::warn!("closed lingering connections {grace:?} after the shutdown signal");
                }
            }
        }
        if let Some(worker) = worker {
            // Handing an edit back is one statement; the worker stops within an iteration.
            let _ = tokio::time::timeout(grace.max(ANSWER_FLUSH), worker).await;
        }
        // Both watch the stop channel: the heartbeat removes this replica's row, the
        // dispatcher finishes the attempt under way (what it leaves stays in the outbox).
        let _ = tokio::time::timeout(ANSWER_FLUSH, heartbeat).await;
        let _ = tokio::time::timeout(ANSWER_FLUSH, dispatcher).await;
        self.state.store.close().await;
        Ok(())
    }
}

/// Checks that the database belongs to this model and loads every version into memory.
async fn load_versions<B: ModelBackend>(
    store: &Store,
    backend: &B,
    versions: &VersionRegistry<B>,
) -> Result<(), ApiError> {
    let fingerprint = &backend.summary().fingerprint;
    let base = store.ensure_base(fingerprint).await?;
    if &base.model_fingerprint != fingerprint {
        return Err(ApiError::Settings(format!(
            "the database holds versions of model {} but the loaded model is {fingerprint}; \
             use another database or the model it was made with",
            base.model_fingerprint
        )));
    }
    let head = store.head().await?;
    // Taken out of the map as each version is loaded: the factors are moved, not copied.
    let mut held = store.version_deltas(0, head.number).await?;
    for version in store.versions_up_to(head.number).await? {
        let deltas = held.remove(&version.number).unwrap_or_default();
        versions.insert(backend, &version, deltas)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
