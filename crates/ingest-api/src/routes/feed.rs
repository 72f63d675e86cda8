//! `POST /v1/users/{user_id}/feed/read`: read marks of a user's in-app feed. The host
//! application's server marks with its token; a browser with the user's feed token (the
//! one its stream uses, as `Authorization: Bearer` or `?token=`).

use super::{client_rate_limit, read_json_body};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, post, web};
use domain::notify::feed::{self, ReadMark};
use domain::notify::request::check_user_id;
use serde_json::json;
use uuid::Uuid;

/// Most ids one mark names.
const MAX_IDS: usize = 1_000;
const READ_BODY_LIMIT_BYTES: usize = 64 * 1024;

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The user's feed token (scope `feed:<user_id>`), for browsers.
    token: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    ids: Option<Vec<Uuid>>,
    up_to: Option<Uuid>,
    all: Option<bool>,
}

fn authorize(
    req: &HttpRequest,
    state: &AppState,
    user: &str,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.settings.may_send_notifications(auth) {
        return Ok(());
    }
    let Some(token) = query_token.or_else(|| domain::auth::bearer_token(auth)) else {
        return Err(ApiError::Unauthorized);
    };
    domain::stream_token::verify(
        state.settings.stream_token_secret.expose().as_bytes(),
        &domain::stream_token::feed_scope(user),
        token,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|why| {
        ApiError::coded(
            actix_web::http::StatusCode::FORBIDDEN,
            "token_refused",
            vec![why.to_string()],
        )
    })
}

/// Marks items of a user's feed read: `{"ids": [...]}`, `{"up_to": id}` (that item and
/// every older one) or `{"all": true}`. Open streams of the user get the new unread count.
#[utoipa::path(
    tag = "notifications",
    security(("admin_token" = [])),
    params(("user_id" = String, Path, description = "The user"), TokenQuery),
    request_body(content = super::docs::ReadMarkBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"marked\", \"unread\"}`: items newly read, and the unread count after", body = super::docs::ReadMarked),
        (status = 400, description = "Invalid body: exactly one of ids (1..1000 notification ids), up_to, all", body = super::docs::CodedError),
        (status = 401, description = "No token", body = super::docs::CodedError),
        (status = 403, description = "A feed token that is malformed, expired or for another user (`token_refused`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable (Retry-After)"),
    )
)]
#[post("/v1/users/{user_id}/feed/read")]
#[tracing::instrument(name = "post_feed_read", skip_all)]
pub async fn post_feed_read(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TokenQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    let user = path.into_inner();
    check_user_id(&user).map_err(|e| ApiError::invalid_body(vec![e]))?;
    authorize(&req, &state, &user, query.token.as_deref())?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, READ_BODY_LIMIT_BYTES).await?;
    let parsed: Body = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_body(vec![format!("invalid JSON body: {e}")]))?;
    let mark = match (parsed.ids, parsed.up_to, parsed.all) {
        (Some(ids), None, None) if !ids.is_empty() && ids.len() <= MAX_IDS => ReadMark::Ids(ids),
        (None, Some(id), None) => ReadMark::UpTo(id),
        (None, None, Some(true)) => ReadMark::All,
        _ => {
            return Err(ApiError::invalid_body(vec![format!(
                "give exactly one of ids (1 to {MAX_IDS} notification ids), up_to (a notification id) or all (true)"
            )]));
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (marked, unread) = feed::mark_read(&mut redis.0.clone(), &state.keys, &user, &mark, now)
        .await
        .map_err(|e| {
            ApiError::QueueUnavailable(anyhow::Error::new(e).context("feed read marks"))
        })?;
    metrics::counter!("ingest_api_feed_items_read_total")
        .increment(u64::try_from(marked).unwrap_or(0));
    Ok(HttpResponse::Ok().json(json!({"marked": marked, "unread": unread})))
}
