//! The dispatcher: sends due deliveries from the outbox, one at a time, until shutdown.

use super::{sign, Webhooks, SIGNATURE_HEADER};
use refact_store::{AttemptResult, Store, WebhookDelivery};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the outbox is looked at when nothing was queued here (retries come due,
/// other replicas queue events).
const POLL: Duration = Duration::from_millis(500);

/// Sends deliveries until `shutdown` turns true.
pub async fn run(webhooks: Arc<Webhooks>, store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    let timeout = Duration::from_secs_f64(webhooks.settings().timeout_secs);
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhook client not built; no webhooks will be sent");
            return;
        }
    };
    // A claim holds a delivery for longer than one attempt can take.
    let lease = timeout + Duration::from_secs(30);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match store.claim_due_delivery(lease).await {
            Ok(Some(delivery)) => {
                let result = attempt(&client, &webhooks, &delivery).await;
                if let Err(err) = store.record_delivery_attempt(delivery.id, &result).await {
                    // The lease lapses and the delivery is sent again: at least once.
                    tracing::warn!(delivery = %delivery.id, error = %err, "webhook attempt not recorded");
                }
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "webhook outbox unreachable"),
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = webhooks.queued() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// One POST of `delivery`; what to record about it.
async fn attempt(
    client: &reqwest::Client,
    webhooks: &Webhooks,
    delivery: &WebhookDelivery,
) -> AttemptResult {
    let settings = webhooks.settings();
    let attempt = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
    let retry_after = (attempt < settings.max_attempts).then(|| settings.backoff(attempt));
    // The receiver may have been removed from the settings since the event was queued.
    let Some(receiver) = settings.receivers.iter().find(|r| r.url == delivery.url) else {
        return AttemptResult::Failed {
            code: None,
            error: "receiver no longer configured".into(),
            retry_after: None,
        };
    };
    let body = delivery.payload.to_string().into_bytes();
    let signature = sign(receiver.secret.expose(), &body);
    let sent = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header("X-Refact-Event", &delivery.event)
        .header("X-Refact-Delivery", delivery.id.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => AttemptResult::Delivered {
            code: i32::from(response.status().as_u16()),
        },
        Ok(response) => {
            let status = response.status();
            tracing::info!(delivery = %delivery.id, %status, attempt, "webhook refused");
            AttemptResult::Failed {
                code: Some(i32::from(status.as_u16())),
                error: format!("HTTP {status}"),
                retry_after,
            }
        }
        Err(err) => {
            tracing::info!(delivery = %delivery.id, error = %err, attempt, "webhook not delivered");
            AttemptResult::Failed {
                code: None,
                error: err.without_url().to_string(),
                retry_after,
            }
        }
    }
}
