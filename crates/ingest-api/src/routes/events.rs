//! `POST /v1/events` (one event or a batch) and the compatibility alias `POST /api/event`.

use super::{Accepts, guard_write, read_body, traceparent};
use crate::admission::{Dropped, admit};
use crate::error::ApiError;
use crate::pusher::EventPusher;
use crate::startup::AppState;
use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use domain::event::{QueuedEvent, parse_event_body, parse_single_event};
use serde_json::json;

/// Accepts one event or a batch and queues them; 202 once they are in Redis.
#[utoipa::path(
    tag = "events",
    request_body(content = inline(super::docs::EventBatch), description = "One event (see `Event`), or `{\"events\": [...]}` with up to 1000", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued in Redis (`dropped` counts bot events left out, by reason)", body = super::docs::EventsAccepted),
        (status = 400, description = "Invalid JSON or validation failed; every problem listed", body = super::docs::ValidationFailed),
        (status = 403, description = "A browser event from a host that is not one of the site's domains", body = super::docs::CodedError),
        (status = 404, description = "SITES_MODE=registered and the site is not registered", body = super::docs::CodedError),
        (status = 413, description = "Body (decompressed, for gzip) over BODY_LIMIT_BYTES"),
        (status = 415, description = "Content-Type is neither JSON nor text/plain, or an encoding other than gzip"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Queue over EVENT_QUEUE_HIGH_WATER, Redis unavailable, or the site registry being restored (Retry-After)"),
    )
)]
#[post("/v1/events")]
#[tracing::instrument(name = "post_events", skip_all, fields(events = tracing::field::Empty))]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    pusher: web::Data<EventPusher>,
) -> Result<HttpResponse, ApiError> {
    guard_write(&req, &state)?;
    let body = read_body(
        &req,
        payload,
        state.settings.body_limit_bytes,
        Accepts::JsonOrText,
    )
    .await?;
    let trace = traceparent(&req);
    let mut events = parse_event_body(&body, Utc::now(), trace.as_deref())?;
    let dropped = admit(&req, &state, &mut events)?;
    tracing::Span::current().record("events", events.len());
    enqueue(&state, &pusher, &events).await?;
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let mut answer = json!({
        "success": true,
        "accepted": events.len(),
        "event_ids": ids,
    });
    add_dropped(&mut answer, &dropped);
    Ok(HttpResponse::Accepted().json(answer))
}

fn add_dropped(answer: &mut serde_json::Value, dropped: &Dropped) {
    if dropped.total() > 0 {
        answer["dropped"] = json!(dropped.0);
    }
}

/// The analytics design's `POST /api/event`: one event, its exact response shapes.
#[utoipa::path(
    tag = "compatibility",
    request_body(content = super::docs::Event, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued in Redis", body = super::docs::EventReceived),
        (status = 400, description = "Validation failed; every problem listed", body = super::docs::ValidationFailed),
        (status = 403, description = "A browser event from a host that is not one of the site's domains", body = super::docs::CodedError),
        (status = 404, description = "SITES_MODE=registered and the site is not registered", body = super::docs::CodedError),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Content-Type is neither JSON nor text/plain"),
        (status = 429, description = "Rate limited (Retry-After)"),
        (status = 503, description = "Overloaded or Redis unavailable (Retry-After)"),
    )
)]
#[post("/api/event")]
#[tracing::instrument(name = "post_event_compat", skip_all)]
pub async fn post_event_compat(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    pusher: web::Data<EventPusher>,
) -> Result<HttpResponse, ApiError> {
    guard_write(&req, &state)?;
    let body = read_body(
        &req,
        payload,
        state.settings.body_limit_bytes,
        Accepts::JsonOrText,
    )
    .await?;
    let trace = traceparent(&req);
    let mut events = vec![parse_single_event(&body, Utc::now(), trace.as_deref())?];
    let dropped = admit(&req, &state, &mut events)?;
    enqueue(&state, &pusher, &events).await?;
    let mut answer = json!({
        "success": true,
        "message": if events.is_empty() {
            "Event ignored: bot traffic"
        } else {
            "Event received and queued for processing"
        },
    });
    add_dropped(&mut answer, &dropped);
    Ok(HttpResponse::Accepted().json(answer))
}

/// One `LPUSH` for the whole batch: all of it is queued, or none.
async fn enqueue(
    state: &AppState,
    pusher: &EventPusher,
    events: &[QueuedEvent<'_>],
) -> Result<(), ApiError> {
    if events.is_empty() {
        return Ok(());
    }
    let items = events
        .iter()
        .map(QueuedEvent::to_message)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let len = pusher.push(items).await?;
    // One shard's length stands for every shard's (they take pushes in turn).
    state
        .queue_depth
        .pushed(len * state.events_queues.len() as u64);
    metrics::counter!("ingest_api_events_accepted_total").increment(events.len() as u64);
    Ok(())
}
