//! Live edit events: one broadcast channel per edit that someone listens to.
//!
//! The worker publishes status changes and every optimisation iteration; the SSE
//! endpoint subscribes. Events are best effort (a slow subscriber skips iterations); the
//! store stays the source of truth for status.

use crate::backend::EditProgress;
use refact_store::{Edit, EditStatus};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

/// How many events a subscriber may fall behind before it skips some.
const CHANNEL_CAPACITY: usize = 256;

/// What a subscriber to `/edits/{id}/events` receives.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EditEvent {
    /// The edit's status changed (also sent first, with the current status).
    Status(StatusEvent),
    /// One optimisation iteration.
    Progress(EditProgress),
}

/// An edit's status at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatusEvent {
    pub id: Uuid,
    #[schema(value_type = crate::routes::edits::EditStatusName)]
    pub status: EditStatus,
    pub attempts: i32,
    /// The version the edit created, once applied.
    pub version: Option<i64>,
    pub error: Option<String>,
}

impl StatusEvent {
    /// The status part of a stored edit.
    pub fn of(edit: &Edit) -> Self {
        StatusEvent {
            id: edit.id,
            status: edit.status,
            attempts: edit.attempts,
            version: edit.version,
            error: edit.error.clone(),
        }
    }

    /// True for applied, failed and cancelled: nothing follows.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

impl EditEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EditEvent::Status(_) => "status",
            EditEvent::Progress(_) => "progress",
        }
    }

    /// True when this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, EditEvent::Status(status) if status.is_terminal())
    }
}

/// Broadcast channels by edit id.
#[derive(Default)]
pub struct EventHub {
    channels: Mutex<HashMap<Uuid, broadcast::Sender<EditEvent>>>,
}

impl EventHub {
    /// Starts listening to an edit's events (subscribe before reading its current state,
    /// so nothing falls between the two). The channel goes when its last subscription
    /// is dropped.
    pub fn subscribe(self: &Arc<Self>, id: Uuid) -> Subscription {
        let mut channels = self.channels.lock().expect("event hub poisoned");
        let receiver = channels
            .entry(id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver: Some(receiver),
            hub: self.clone(),
            id,
        }
    }

    /// Drops the edit's channel if nobody listens to it any more.
    fn forget_if_idle(&self, id: Uuid) {
        let mut channels = self.channels.lock().expect("event hub poisoned");
        if channels.get(&id).is_some_and(|s| s.receiver_count() == 0) {
            channels.remove(&id);
        }
    }

    /// Sends an event to the edit's subscribers, if any. A terminal event closes the
    /// channel; a channel nobody listens to any more is dropped.
    pub fn publish(&self, id: Uuid, event: EditEvent) {
        let mut channels = self.channels.lock().expect("event hub poisoned");
        let Some(sender) = channels.get(&id) else {
            return;
        };
        let terminal = event.is_terminal();
        let delivered = sender.send(event).is_ok();
        if terminal || !delivered {
            channels.remove(&id);
        }
    }

    /// Number of edits with live subscribers (for tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.channels.lock().expect("event hub poisoned").len()
    }
}

/// A listener to one edit's events.
pub struct Subscription {
    receiver: Option<broadcast::Receiver<EditEvent>>,
    hub: Arc<EventHub>,
    id: Uuid,
}

impl Subscription {
    /// The next event; `Lagged` when this listener fell behind, `Closed` when the channel
    /// ended (after a terminal event).
    pub async fn recv(&mut self) -> Result<EditEvent, broadcast::error::RecvError> {
        self.receiver
            .as_mut()
            .expect("receiver lives until drop")
            .recv()
            .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.receiver.take();
        self.hub.forget_if_idle(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: Uuid, status: EditStatus) -> EditEvent {
        EditEvent::Status(StatusEvent {
            id,
            status,
            attempts: 1,
            version: None,
            error: None,
        })
    }

    #[tokio::test]
    async fn channels_live_only_while_someone_listens_and_until_the_end() {
        let hub = Arc::new(EventHub::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = hub.subscribe(a);
        let mut second = hub.subscribe(a);
        drop(first);
        assert_eq!(hub.channel_count(), 1, "one listener is left");
        hub.publish(a, status(a, EditStatus::Running));
        assert_eq!(second.recv().await.unwrap(), status(a, EditStatus::Running));
        hub.publish(a, status(a, EditStatus::Applied));
        assert_eq!(
            hub.channel_count(),
            0,
            "a terminal event closes the channel"
        );
        assert_eq!(second.recv().await.unwrap(), status(a, EditStatus::Applied));

        drop(hub.subscribe(b));
        assert_eq!(
            hub.channel_count(),
            0,
            "an abandoned subscription leaves nothing"
        );
        hub.publish(b, status(b, EditStatus::Running));
        assert_eq!(hub.channel_count(), 0);
    }
}
