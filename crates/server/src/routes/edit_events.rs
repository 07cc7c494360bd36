//! `GET /edits/{id}/events`: Server-Sent Events for one edit.
//!
//! First a `status` event with the current state, then `progress` events (iteration,
//! loss, probability) while it runs, then the terminal `status` event, after which the
//! stream ends. When the server shuts down first, the last event is `shutdown` (data:
//! `{"code": "shutting_down", "message": …}`, with an SSE `retry` hint): reconnect,
//! to another replica or to this one restarted, to follow the edit on. Live events come from this process's worker; the store is also polled, so
//! an edit run by another replica still reaches its terminal event.

use super::edits::edit_not_found;
use crate::auth::{self, Authorized};
use crate::backend::ModelBackend;
use crate::error::responses::{BadRequest, Forbidden, Unauthorized};
use crate::error::{ApiError, ErrorBody};
use crate::events::{EditEvent, StatusEvent};
use crate::extract::ApiPath;
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

/// How often the store is asked for the status while streaming.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub fn router<B: ModelBackend>() -> Router<AppState<B>> {
    Router::new().route("/edits/{id}/events", get(edit_events::<B>))
}

/// One Server-Sent Event of the stream, as OpenAPI 3.1 describes an event of a
/// `text/event-stream` (the `schema` of such a response covers one event): its `event`
/// name and its `data`, a JSON [`EditEvent`].
pub struct EditEventStream;

impl utoipa::PartialSchema for EditEventStream {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::extensions::Extensions;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // `contentSchema` has no builder method; `Extensions` built from an iterator keeps
        // the key as given.
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The event as JSON: an EditEvent; for `shutdown`, an ErrorBody (code `shutting_down`)",
            ))
            .content_media_type("application/json")
            .extensions(Some(Extensions::from_iter([(
                "contentSchema",
                serde_json::json!({"$ref": "#/components/schemas/EditEvent"}),
            )])));
        ObjectBuilder::new()
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["status", "progress", "shutdown"])),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for EditEventStream {}

/// Stream an edit's progress and status as Server-Sent Events (`status`, `progress`,
/// and `shutdown` when the server stops first).
#[utoipa::path(
    get, path = "/edits/{id}/events", tag = "edits", operation_id = "streamEditEvents",
    params(("id" = Uuid, Path, description = "The edit's id")),
    responses(
        (status = 200, description = "`text/event-stream` of `status` and `progress` events (data: EditEvent JSON), ending with a `shutdown` event (data: ErrorBody JSON) if the server stops first", body = EditEventStream, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No such edit (`edit_not_found`)", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn edit_events<B: ModelBackend>(
    State(state): State<AppState<B>>,
    _auth: Authorized<auth::Read>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the state so that no event falls in between.
    let mut receiver = state.events.subscribe(id);
    let edit = state
        .store
        .get_edit(id)
        .await?
        .ok_or_else(|| edit_not_found(id))?;
    let store = state.store.clone();
    let shutdown = state.shutdown.clone();
    let mut last = StatusEvent::of(&edit);
    let stream = async_stream::stream! {
        yield Ok(to_sse(&EditEvent::Status(last.clone())));
        if last.is_terminal() {
            return;
        }
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.tick().await;
        loop {
            tokio::select! {
                // Live events first: what is buffered is older than what the store says.
                biased;
                _ = shutdown.draining() => {
                    yield Ok(shutdown_event());
                    return;
                }
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if let EditEvent::Status(status) = &event {
                            if *status == last {
                                continue; // already sent (seen by polling first)
                            }
                            last = status.clone();
                        }
                        yield Ok(to_sse(&event));
                        if event.is_terminal() {
                            return;
                        }
                    }
                    // A slow client skipped some iterations; carry on with the next.
                    Err(RecvError::Lagged(_)) => {}
                    // The channel closed without a terminal event reaching us: ask the store.
                    Err(RecvError::Closed) => {
                        receiver = state.events.subscribe(id);
                    }
                },
                _ = poll.tick() => {
                    if let Ok(Some(edit)) = store.get_edit(id).await {
                        let current = StatusEvent::of(&edit);
                        if current != last {
                            last = current.clone();
                            yield Ok(to_sse(&EditEvent::Status(current)));
                            if last.is_terminal() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The last event of a stream cut short by a shutdown.
fn shutdown_event() -> Event {
    let error = crate::error::ApiError::ShuttingDown;
    Event::default()
        .event("shutdown")
        .retry(Duration::from_secs(1))
        .json_data(serde_json::json!({"code": "shutting_down", "message": error.to_string()}))
        .unwrap_or_else(|_| Event::default().event("shutdown"))
}

fn to_sse(event: &EditEvent) -> Event {
    Event::default()
        .event(event.name())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("error").data("unserialisable event"))
}
