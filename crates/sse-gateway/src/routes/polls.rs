//! `GET /v1/polls/{poll_id}/stream` (SSE) and `GET /v1/polls/{poll_id}/updates` (long
//! polling fallback).

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::hub::{Kind, TopicKey, Update};
use crate::startup::AppState;
use actix_web::{HttpRequest, HttpResponse, Responder, get, web};
use chrono::Utc;
use domain::poll::PollState;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The poll's current state from Redis, or why there is none.
async fn current_state(state: &AppState, poll_id: &str) -> Result<PollState, ApiError> {
    let mut redis = state.redis.clone();
    let found = domain::poll::read_state(&mut redis, &state.keys, poll_id, Utc::now())
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    if let Some(s) = found {
        return Ok(s);
    }
    let marker = state.keys.poll(poll_id).restored;
    let restored: bool = domain::redis_client::cmd("EXISTS")
        .arg(marker)
        .query_async(&mut redis)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    Err(if restored {
        ApiError::PollNotFound
    } else {
        ApiError::Restoring
    })
}

fn snapshot(s: &PollState) -> Arc<Update> {
    Arc::new(Update {
        kind: Kind::Snapshot,
        id: s.seq,
        data: serde_json::to_string(s).unwrap_or_default(),
    })
}

/// A poll's live tally: `snapshot` first (or what a reconnecting browser missed), then
/// `tally` events, `id` = the poll's sequence number.
#[utoipa::path(
    tag = "streams",
    params(
        ("poll_id" = String, Path, description = "The poll"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume: replays what was missed, or sends a fresh snapshot"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` then `tally` events, `id` = the poll's sequence number; keep-alive comments", content_type = "text/event-stream"),
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
    let topic = state.hub.topic(TopicKey::Poll(poll_id.clone()));
    // Subscribe before reading the state, so nothing published in between is missed;
    // duplicates are filtered by sequence number.
    let rx = topic.subscribe();
    let current = current_state(&state, &poll_id).await?;
    topic.seed(&snapshot(&current));
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let (initial, last_sent) = match last_event_id {
        Some(k) if k == current.seq => (Vec::new(), k),
        Some(k) if k < current.seq => match topic.replay_since(k, current.seq) {
            Some(missed) => (missed, k),
            None => (vec![snapshot(&current)], k),
        },
        // No id, or one from the future (the poll was restored with fewer votes).
        _ => (vec![snapshot(&current)], i64::MIN),
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
    let topic = state.hub.topic(TopicKey::Poll(poll_id.clone()));
    let mut watch = topic.watch();
    let mut current = current_state(&state, &poll_id).await?;
    if current.seq <= since && !wait.is_zero() {
        let moved = async {
            loop {
                if watch.changed().await.is_err() {
                    return;
                }
                if watch.borrow().as_ref().is_some_and(|u| u.id > since) {
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
