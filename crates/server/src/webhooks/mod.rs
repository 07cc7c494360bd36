//! Webhooks: `edit.applied`, `edit.failed` and `alias.moved` POSTed as JSON to the
//! receivers in the settings.
//!
//! [`Webhooks::emit`] writes one delivery row per receiver into the store's outbox;
//! [`dispatch::run`] (one per replica) sends due rows, signs each body with the
//! receiver's secret (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`, GitHub's scheme,
//! so existing verifiers work) and retries failures with doubling waits. Because the
//! outbox is in the database, a delivery outlives the replica that wrote it.

pub mod dispatch;
mod signature;

pub use signature::{sign, SIGNATURE_HEADER};

use crate::settings::WebhookSettings;
use chrono::Utc;
use refact_store::Store;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Notify;

/// Every event a receiver can subscribe to.
pub const EVENTS: &[&str] = &[EDIT_APPLIED, EDIT_FAILED, ALIAS_MOVED];
pub const EDIT_APPLIED: &str = "edit.applied";
pub const EDIT_FAILED: &str = "edit.failed";
pub const ALIAS_MOVED: &str = "alias.moved";

/// Queues events for delivery and wakes this replica's dispatcher.
pub struct Webhooks {
    settings: WebhookSettings,
    store: Arc<Store>,
    wake: Notify,
}

impl Webhooks {
    pub fn new(settings: WebhookSettings, store: Arc<Store>) -> Self {
        Webhooks {
            settings,
            store,
            wake: Notify::new(),
        }
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Queues `event` with `data` for every receiver subscribed to it. The body is
    /// `{"event": ..., "sent_at": ..., "data": {...}}`. A store failure is logged, not
    /// returned: the change the event reports has happened and must not be undone.
    pub async fn emit(&self, event: &'static str, data: Value) {
        let urls = self.settings.receivers_of(event);
        if urls.is_empty() {
            return;
        }
        let payload = json!({"event": event, "sent_at": Utc::now(), "data": data});
        match self
            .store
            .queue_webhook_deliveries(&urls, event, &payload)
            .await
        {
            Ok(_) => self.wake.notify_one(),
            Err(err) => tracing::error!(event, error = %err, "webhook delivery not queued"),
        }
    }

    /// Resolves when an event was queued here since the last call.
    pub async fn queued(&self) {
        self.wake.notified().await
    }
}
