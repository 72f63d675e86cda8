//! `GET /v1/polls/{poll_id}/stream` (SSE) and `GET /v1/polls/{poll_id}/updates` (long
//! polling fallback).

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::feeds::poll::{PollFeed, position_of, snapshot};
use crate::hub::{Position, Topic};
use crate::startup::AppState;
use actix_web::{HttpRequest, HttpResponse, Responder, get, web};
use chrono::Utc;
use domain::channel::Channel;
use domain::poll::{PollLookup, PollState};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The poll's current state from Redis, or why there is none.
async fn current_state(state: &AppState, poll_id: &str) -> Result<PollState, ApiError> {
    let mut redis = state.redis.clone();
    match domain::poll::lookup(&mut redis, &state.keys, poll_id, Utc::now())
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
    {
        PollLookup::Found(s) => Ok(s),
        PollLookup::NotFound => Err(ApiError::PollNotFound),
        PollLookup::Restoring => Err(ApiError::Restoring),
    }
}

/// The poll's topic on this gateway.
fn poll_topic(state: &AppState, poll_id: &str) -> Arc<Topic> {
    state.hub.topic(
        Channel::Poll(poll_id.to_string()),
        Duration::from_millis(state.settings.poll_coalesce_ms),
        || {
            Arc::new(PollFeed::new(
                poll_id.to_string(),
                state.keys.clone(),
                state.redis.clone(),
            ))
        },
    )
}

/// A poll's live tally: `snapshot` first (or what a reconnecting browser missed), then
/// `tally` events, `id` = the poll's sequence number.
#[utoipa::path(
    tag = "streams",
    params(
        ("poll_id" = String, Path, description = "The poll"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume: replays what was missed, or sends a fresh snapshot"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` then `tally` events; `id` is the poll's position, `seq`, or `epoch.seq` once the poll was restored after Redis lost it (a new epoch comes as a snapshot); keep-alive comments", content_type = "text/event-stream"),
        (status = 404, description = "Unknown poll"),
        (status = 429, description = "Too many streams from this client"),
        (status = 503, description = "Gateway full, poll being restored, or Redis unavailable"),
    )
)]
#[get("/v1/polls/{poll_id}/stream")]
#[tracing::instrument(name = "poll_stream", skip_all, fields(poll_id = %path))]
pub async fn poll_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let slot = acquire(&req, &state)?;
    let poll_id = path.into_inner();
    let topic = poll_topic(&state, &poll_id);
    // Subscribe before reading the state, so nothing published in between is missed;
    // duplicates are filtered by position.
    let rx = topic.subscribe();
    let current = current_state(&state, &poll_id).await?;
    let current_snapshot = snapshot(&current);
    topic.seed(&current_snapshot);
    let now = position_of(&current);
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Position::parse_event_id);
    let (initial, last_sent) = match last_event_id {
        Some(k) if k == now => (Vec::new(), k),
        Some(k) if k.epoch == now.epoch && k.seq < now.seq => match topic.replay_since(k, now) {
            Some(missed) => (missed, k),
            None => (vec![current_snapshot], k),
        },
        // No id, one of another epoch (the poll was restored since), or from the future.
        _ => (vec![current_snapshot], Position::START),
    };
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "poll").increment(1);
    Ok(event_stream(initial, rx, topic, last_sent, slot, &state)
        .customize()
        .insert_header(("x-accel-buffering", "no")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpdatesQuery {
    /// The last sequence number the client has (default 0).
    since_seq: Option<String>,
    /// Seconds to wait for a change (default 0, at most LONG_POLL_MAX_WAIT_S).
    wait: Option<String>,
}

/// Long polling: answers at once when the poll moved past `since_seq`, otherwise waits up
/// to `wait` seconds for it to move. `{"seq", "tally", "total", "closed", "changed"}`.
#[utoipa::path(
    tag = "streams",
    params(("poll_id" = String, Path, description = "The poll"), UpdatesQuery),
    responses(
        (status = 200, description = "`{seq, tally, total, closed, changed}`"),
        (status = 400, description = "since_seq or wait is not a number"),
        (status = 404, description = "Unknown poll"),
    )
)]
#[get("/v1/polls/{poll_id}/updates")]
#[tracing::instrument(name = "poll_updates", skip_all, fields(poll_id = %path))]
pub async fn poll_updates(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<UpdatesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let since: i64 = match q.since_seq.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::BadRequest("since_seq must be an integer".into()))?,
    };
    let wait: u64 = match q.wait.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::BadRequest("wait must be a whole number of seconds".into()))?,
    };
    let wait = Duration::from_secs(wait.min(state.settings.long_poll_max_wait_s));
    let _slot = acquire(&req, &state)?;
    let poll_id = path.into_inner();
    let topic = poll_topic(&state, &poll_id);
    let mut watch = topic.watch();
    let mut current = current_state(&state, &poll_id).await?;
    if current.seq <= since && !wait.is_zero() {
        let moved = async {
            loop {
                if watch.changed().await.is_err() {
                    return;
                }
                if watch
                    .borrow()
                    .as_ref()
                    .is_some_and(|u| u.position.seq > since)
                {
                    return;
                }
            }
        };
        tokio::select! {
            () = moved => {}
            () = tokio::time::sleep(wait) => {}
            () = state.shutdown.cancelled() => {}
        }
        current = current_state(&state, &poll_id).await?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "seq": current.seq,
        "tally": current.tally,
        "total": current.total,
        "closed": current.closed,
        "changed": current.seq > since,
    })))
}
