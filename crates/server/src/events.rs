//! Live edit events: one broadcast channel per edit that someone listens to.
//!
//! The worker publishes status changes and every optimisation iteration; the SSE
//! endpoint subscribes. Events are best effort (a slow subscriber skips iterations); the
//! store stays the source of truth for status.

use crate::backend::EditProgress;
use refact_store::{Edit, EditStatus};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
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
    /// queued, running, applied, failed or cancelled.
    #[schema(value_type = String)]
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
    /// so nothing falls between the two).
    pub fn subscribe(&self, id: Uuid) -> broadcast::Receiver<EditEvent> {
        let mut channels = self.channels.lock().expect("event hub poisoned");
        channels
            .entry(id)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
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
