//! `GET /v1/users/{user_id}/feed/stream`: a user's in-app notification feed, live, with
//! `Last-Event-ID` resume. Always private: it takes the user's feed token (`?token=`, a
//! stream token for scope `feed:<user_id>`, minted by the host application), never an
//! API token.

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::feeds::feed::{UserFeed, catch_up};
use crate::hub::Position;
use crate::reader::TopicReader;
use crate::startup::AppState;
use actix_web::{HttpRequest, Responder, get, web};
use domain::channel::Channel;
use std::sync::Arc;
use std::time::Duration;

/// A feed topic's sizes: it replays from Redis, not from its history, and its one reader
/// gets a snapshot past four updates behind (a user gets a few notifications a second at
/// most; a burst past that is resent whole).
const FEED_TOPIC: crate::hub::HubSettings = crate::hub::HubSettings {
    history: 1,
    lag_capacity: 4,
};

/// Checks a feed token for `user_id`.
///
/// # Errors
/// 401 without a token, 403 for one that is malformed, expired or another user's.
pub fn authorize(state: &AppState, user_id: &str, token: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        metrics::counter!("sse_gateway_streams_refused_total", "reason" => "token_required")
            .increment(1);
        return Err(ApiError::TokenRequired);
    };
    domain::stream_token::verify(
        state.settings.stream_token_secret.expose().as_bytes(),
        &domain::stream_token::feed_scope(user_id),
        token,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|why| {
        metrics::counter!("sse_gateway_streams_refused_total", "reason" => "token_refused")
            .increment(1);
        ApiError::TokenRefused(why)
    })
}

/// A browser's reading of a user's feed, resuming at `last_event`.
///
/// # Errors
/// 401/403 (see [`authorize`]), 400 for an invalid user id, 503 when Redis is
/// unreachable.
pub async fn feed_reader(
    state: &AppState,
    user_id: &str,
    last_event: Option<Position>,
    token: Option<&str>,
) -> Result<TopicReader, ApiError> {
    domain::notify::request::check_user_id(user_id).map_err(ApiError::BadRequest)?;
    authorize(state, user_id, token)?;
    let topic = state.hub.topic_sized(
        Channel::Feed(user_id.to_string()),
        Duration::ZERO,
        &FEED_TOPIC,
        || Arc::new(UserFeed::new(user_id.to_string(), state.feed_reads.clone())),
    );
    // Subscribe before reading, so nothing appended in between is missed (duplicates are
    // dropped by position).
    let rx = topic.subscribe();
    super::listen(state, &topic).await?;
    let (initial, last_sent) = catch_up(&mut state.redis.clone(), &state.keys, user_id, last_event)
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(TopicReader::new(topic, rx, initial, last_sent, true))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The user's feed token: `v1.<exp>.<base64url HMAC-SHA256(STREAM_TOKEN_SECRET,
    /// "v1.feed:<user_id>.<exp>")>` (see the API reference).
    token: Option<String>,
}

/// A user's feed: `snapshot` first (unread count, position, newest items) or the items a
/// reconnecting browser missed, then a `notification` event per new item and an `unread`
/// event when read marks change the count.
#[utoipa::path(
    tag = "streams",
    params(
        ("user_id" = String, Path, description = "The user"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume: the items missed since, or a snapshot when the feed no longer holds them all"),
        FeedQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` `{epoch, seq, unread, items: [{seq, read, notification}]}`, then `notification` `{seq, unread, notification: {id, event_type, title, body, data, priority, created_at}}` with `id` = the item's position, and `unread` `{unread}`", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Invalid user id"),
        (status = 401, description = "No feed token (`token_required`)"),
        (status = 403, description = "A feed token that is malformed, expired or another user's (`token_refused`)"),
        (status = 429, description = "Too many streams from this client"),
        (status = 503, description = "Gateway full, or Redis unavailable"),
    )
)]
#[get("/v1/users/{user_id}/feed/stream")]
#[tracing::instrument(name = "feed_stream", skip_all)]
pub async fn feed_stream(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<FeedQuery>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let last_event = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Position::parse_event_id);
    let reader = feed_reader(&state, &path, last_event, query.token.as_deref()).await?;
    let slot = acquire(&req, &state)?;
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "feed").increment(1);
    Ok(event_stream(reader, slot, &req, &state)
        .customize()
        .insert_header(("x-accel-buffering", "no")))
}
