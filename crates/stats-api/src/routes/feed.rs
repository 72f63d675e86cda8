//! `GET /v1/users/{user_id}/feed`: a user's in-app feed, newest first, with read flags and
//! the unread count. Read with the stats token (the host application's server), or with
//! the user's feed token (`?token=`, a browser), when `STATS_TOKEN` is set.

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1 to 100 (default 20).
    limit: Option<i64>,
    /// The user's feed token (scope `feed:<user_id>`), for browsers.
    token: Option<String>,
}

const READ: &str = "(f.read_at IS NOT NULL OR (m.user_id IS NOT NULL
    AND (f.epoch < m.epoch OR (f.epoch = m.epoch AND f.seq <= m.up_to))))";

fn authorize(
    req: &HttpRequest,
    state: &AppState,
    user: &str,
    token: Option<&str>,
) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let stats_token = &state.settings.stats_token;
    if stats_token.is_empty() || domain::auth::bearer_matches(header, stats_token) {
        return Ok(());
    }
    let Some(token) = token.or_else(|| domain::auth::bearer_token(header)) else {
        return Err(ApiError::Unauthorized);
    };
    domain::stream_token::verify(
        state.settings.stream_token_secret.expose().as_bytes(),
        &domain::stream_token::feed_scope(user),
        token,
        Utc::now().timestamp(),
    )
    .map_err(|why| ApiError::Forbidden(format!("the feed token is refused: {why}")))
}

/// `epoch.seq`.
fn parse_cursor(c: &str) -> Option<(i64, i64)> {
    let (e, s) = c.split_once('.')?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

/// A user's feed.
#[utoipa::path(
    tag = "notifications",
    security(("stats_token" = [])),
    params(("user_id" = String, Path, description = "The user"), FeedQuery),
    responses(
        (status = 200, description = "`{user_id, unread, items: [{id, seq, epoch, event_type, title, body, data, priority, created_at, read}], next_cursor}`, newest first", body = super::docs::FeedPage),
        (status = 400, description = "A bad cursor or limit, or an invalid user id"),
        (status = 401, description = "STATS_TOKEN is set and the request has neither it nor a feed token"),
        (status = 403, description = "A feed token that is malformed, expired or another user's"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/users/{user_id}/feed")]
#[tracing::instrument(name = "get_feed", skip_all)]
pub async fn get_feed(
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<FeedQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner();
    domain::notify::request::check_user_id(&user).map_err(ApiError::BadRequest)?;
    authorize(&req, &state, &user, q.token.as_deref())?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 100".into()));
    }
    let (epoch, seq) = match q.cursor.as_deref() {
        None | Some("") => (i64::MAX, i64::MAX),
        Some(c) => parse_cursor(c)
            .ok_or_else(|| ApiError::BadRequest(format!("cursor {c:?} is not a next_cursor")))?,
    };
    let client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let rows = client
        .query(
            &format!(
                "SELECT f.notification_id, f.epoch, f.seq, n.event_type, n.title, n.body, n.data,
                        n.priority, f.created_at, {READ}
                 FROM feed_items f JOIN notifications n USING (notification_id)
                 LEFT JOIN feed_read_marks m ON m.user_id = f.user_id
                 WHERE f.user_id = $1 AND (f.epoch, f.seq) < ($2, $3)
                 ORDER BY f.epoch DESC, f.seq DESC LIMIT $4"
            ),
            &[&user, &epoch, &seq, &limit],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let unread: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM feed_items f LEFT JOIN feed_read_marks m ON m.user_id = f.user_id
                 WHERE f.user_id = $1 AND f.read_at IS NULL AND NOT {READ}"
            ),
            &[&user],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?
        .get(0);
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, Uuid>(0),
                "epoch": r.get::<_, i64>(1),
                "seq": r.get::<_, i64>(2),
                "event_type": r.get::<_, String>(3),
                "title": r.get::<_, String>(4),
                "body": r.get::<_, String>(5),
                "data": r.get::<_, Option<Value>>(6),
                "priority": r.get::<_, String>(7),
                "created_at": r.get::<_, DateTime<Utc>>(8),
                "read": r.get::<_, bool>(9),
            })
        })
        .collect();
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}.{}", r.get::<_, i64>(1), r.get::<_, i64>(2)))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "user_id": user,
        "unread": unread,
        "items": items,
        "next_cursor": next,
    })))
}
