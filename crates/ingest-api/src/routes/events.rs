//! `POST /v1/events` (one event or a batch) and the compatibility alias `POST /api/event`.

use super::{guard_write, read_json_body, traceparent};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use domain::event::{QueuedEvent, parse_event_body, parse_single_event};
use serde_json::json;

/// Accepts one event or a batch and queues them; 202 once they are in Redis.
#[utoipa::path(
    tag = "events",
    request_body(content = inline(super::docs::EventBatch), description = "One event (see `Event`), or `{\"events\": [...]}` with up to 1000", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued in Redis", body = super::docs::EventsAccepted),
        (status = 400, description = "Invalid JSON or validation failed; every problem listed", body = super::docs::ValidationFailed),
        (status = 413, description = "Body over BODY_LIMIT_BYTES"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Queue over EVENT_QUEUE_HIGH_WATER, or Redis unavailable (Retry-After)"),
    )
)]
#[post("/v1/events")]
#[tracing::instrument(name = "post_events", skip_all, fields(events = tracing::field::Empty))]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    guard_write(&req, &state)?;
    let body = read_json_body(&req, payload, state.settings.body_limit_bytes).await?;
    let trace = traceparent(&req);
    let events = parse_event_body(&body, Utc::now(), trace.as_deref())?;
    tracing::Span::current().record("events", events.len());
    enqueue(&state, &redis, &events).await?;
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    Ok(HttpResponse::Accepted().json(json!({
        "success": true,
        "accepted": events.len(),
        "event_ids": ids,
    })))
}

/// The analytics design's `POST /api/event`: one event, its exact response shapes.
#[utoipa::path(
    tag = "compatibility",
    request_body(content = super::docs::Event, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued in Redis", body = super::docs::EventReceived),
        (status = 400, description = "Validation failed; every problem listed", body = super::docs::ValidationFailed),
        (status = 413, description = "Body too large"),
        (status = 415, description = "Content-Type is not JSON"),
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
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    guard_write(&req, &state)?;
    let body = read_json_body(&req, payload, state.settings.body_limit_bytes).await?;
    let trace = traceparent(&req);
    let event = parse_single_event(&body, Utc::now(), trace.as_deref())?;
    enqueue(&state, &redis, std::slice::from_ref(&event)).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "success": true,
        "message": "Event received and queued for processing",
    })))
}

/// One `LPUSH` for the whole batch: all of it is queued, or none.
async fn enqueue(
    state: &AppState,
    redis: &WorkerRedis,
    events: &[QueuedEvent<'_>],
) -> Result<(), ApiError> {
    let items = events
        .iter()
        .map(QueuedEvent::to_message)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let mut conn = redis.0.clone();
    let len = domain::queue::push(&mut conn, &state.events_queue, &items)
        .await
        .map_err(|e| {
            ApiError::QueueUnavailable(anyhow::Error::new(e).context("LPUSH of events"))
        })?;
    state.queue_depth.pushed(len);
    metrics::counter!("ingest_api_events_accepted_total").increment(events.len() as u64);
    Ok(())
}
