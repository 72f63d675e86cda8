//! `GET /v1/polls/{poll_id}/stream` (SSE) and `GET /v1/polls/{poll_id}/updates` (long
//! polling fallback).

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::feeds::poll::{PollFeed, snapshot};
use crate::hub::{Position, Topic};
use crate::reader::{TopicReader, resume};
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

/// Whether a reader presenting `token` may see the poll's counts while its settings hide
/// them from whoever has not voted: the results token an `after_vote` poll's vote answer
/// carries (a stream token for `poll:<id>`).
pub fn token_opens_results(state: &AppState, poll_id: &str, token: Option<&str>) -> bool {
    token.is_some_and(|t| {
        domain::stream_token::verify(
            state.settings.stream_token_secret.expose().as_bytes(),
            &domain::stream_token::poll_scope(poll_id),
            t,
            Utc::now().timestamp(),
        )
        .is_ok()
    })
}

/// A browser's reading of a poll, resuming at `last_event`.
///
/// # Errors
/// 404 unknown poll, 503 while it is restored or Redis is unreachable.
pub async fn poll_reader(
    state: &AppState,
    poll_id: &str,
    last_event: Option<Position>,
    token: Option<&str>,
) -> Result<TopicReader, ApiError> {
    let topic = poll_topic(state, poll_id);
    // Subscribe before reading the state, so nothing published in between is missed;
    // duplicates are filtered by position.
    let rx = topic.subscribe();
    super::listen(state, &topic).await?;
    let current = current_state(state, poll_id).await?;
    let current_snapshot = snapshot(&current);
    topic.seed(&current_snapshot);
    let (initial, last_sent) = resume(&topic, current_snapshot, last_event);
    let sees_everything = token_opens_results(state, poll_id, token);
    Ok(TopicReader::new(
        topic,
        rx,
        initial,
        last_sent,
        sees_everything,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The `results_token` of a vote's answer: opens an `after_vote` poll's counts.
    token: Option<String>,
}

/// A poll's live tally: `snapshot` first (or what a reconnecting browser missed), then
/// `tally` events, `id` = the poll's position.
#[utoipa::path(
    tag = "streams",
    params(
        ("poll_id" = String, Path, description = "The poll"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume: replays what was missed, or sends a fresh snapshot"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` then `tally` events; `id` is the poll's position, `seq`, or `epoch.seq` once the poll was restored after Redis lost it (a new epoch comes as a snapshot); keep-alive comments. While the poll's settings hide its counts, events carry the total only and `hidden: true`", body = String, content_type = "text/event-stream"),
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
    q: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let slot = acquire(&req, &state)?;
    let poll_id = path.into_inner();
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Position::parse_event_id);
    let reader = poll_reader(&state, &poll_id, last_event_id, q.token.as_deref()).await?;
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "poll").increment(1);
    Ok(event_stream(reader, slot, &req, &state)
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
    /// As for the stream: opens an `after_vote` poll's counts.
    token: Option<String>,
}

/// Long polling: answers at once when the poll moved past `since_seq`, otherwise waits up
/// to `wait` seconds for it to move. `{"seq", "tally", "total", "closed", "changed"}`.
#[utoipa::path(
    tag = "streams",
    params(("poll_id" = String, Path, description = "The poll"), UpdatesQuery),
    responses(
        (status = 200, description = "`{seq, tally, total, closed, changed}`; `tally` empty and `hidden: true` while the poll's settings hide its counts", body = super::docs::PollUpdate),
        (status = 400, description = "since_seq or wait is not a number"),
        (status = 404, description = "Unknown poll"),
        (status = 429, description = "Too many streams and long polls from this client"),
        (status = 503, description = "Gateway full, poll being restored, or Redis unavailable"),
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
    super::listen(&state, &topic).await?;
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
    let mut answer = serde_json::json!({
        "seq": current.seq,
        "tally": current.tally,
        "total": current.total,
        "closed": current.closed,
        "changed": current.seq > since,
    });
    if !current.results_public() && !token_opens_results(&state, &poll_id, q.token.as_deref()) {
        answer["tally"] = serde_json::json!({});
        answer["hidden"] = serde_json::json!(true);
    }
    Ok(HttpResponse::Ok().json(answer))
}
