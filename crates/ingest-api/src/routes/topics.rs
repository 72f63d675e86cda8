//! Topic subscriptions (admin or an app key): `POST /v1/topics/{topic}/subscribers`,
//! `DELETE /v1/topics/{topic}/subscribers/{user_id}`, `GET /v1/topics/{topic}`. A
//! notification sent to a topic reaches whoever subscribes when it is fanned out.

use super::{client_rate_limit, read_json_body};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use domain::notify::request::{check_topic, check_user_id, parse_recipients};
use domain::notify::topics::{self, ChangeOutcome, MAX_PER_REQUEST};
use serde_json::json;

/// A list of subscribers (with their addresses) is at most a few hundred kilobytes.
const SUBSCRIBERS_BODY_LIMIT_BYTES: usize = 2 * 1024 * 1024;

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.settings.may_send_notifications(auth) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn topic_of(path: &str) -> Result<(), ApiError> {
    check_topic(path).map_err(|e| ApiError::invalid_body(vec![e]))
}

fn redis_error(e: domain::redis_client::RedisError) -> ApiError {
    ApiError::QueueUnavailable(anyhow::Error::new(e).context("topic subscriptions"))
}

fn restoring() -> ApiError {
    ApiError::registry_restoring("the topic subscriptions registry")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribers {
    subscribers: Vec<serde_json::Value>,
}

/// Subscribes users to a topic; a user subscribed already gets the new addresses.
#[utoipa::path(
    tag = "topics",
    security(("admin_token" = [])),
    params(("topic" = String, Path, description = "1..200 of letters, digits, `.`, `_`, `-`, `:`")),
    request_body(content = super::docs::SubscribersBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"topic\", \"changed\", \"subscribers\"}`", body = super::docs::TopicBody),
        (status = 400, description = "Invalid topic or body; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong token", body = super::docs::CodedError),
        (status = 413, description = "Body over 2 MiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or subscriptions being restored (Retry-After)"),
    )
)]
#[post("/v1/topics/{topic}/subscribers")]
#[tracing::instrument(name = "post_subscribers", skip_all, fields(topic = %path))]
pub async fn post_subscribers(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    client_rate_limit(&req, &state)?;
    topic_of(&path)?;
    let body = read_json_body(&req, payload, SUBSCRIBERS_BODY_LIMIT_BYTES).await?;
    let list: Subscribers = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_body(vec![format!("invalid JSON body: {e}")]))?;
    if list.subscribers.is_empty() || list.subscribers.len() > MAX_PER_REQUEST {
        return Err(ApiError::invalid_body(vec![format!(
            "subscribers must list 1 to {MAX_PER_REQUEST} users"
        )]));
    }
    let mut errors = Vec::new();
    let users = parse_recipients(list.subscribers, "subscribers", &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid_body(errors));
    }
    let mut conn = redis.0.clone();
    let now = chrono::Utc::now().timestamp_millis();
    match topics::subscribe(&mut conn, &state.keys, &path, &users, now)
        .await
        .map_err(redis_error)?
    {
        ChangeOutcome::Changed(changed) => {
            let count = topics::count(&mut conn, &state.keys, &path)
                .await
                .map_err(redis_error)?;
            Ok(HttpResponse::Ok()
                .json(json!({"topic": *path, "changed": changed, "subscribers": count})))
        }
        ChangeOutcome::Restoring => Err(restoring()),
    }
}

/// Unsubscribes one user from a topic.
#[utoipa::path(
    tag = "topics",
    security(("admin_token" = [])),
    params(
        ("topic" = String, Path, description = "The topic"),
        ("user_id" = String, Path, description = "The user"),
    ),
    responses(
        (status = 204, description = "Not subscribed (any more)"),
        (status = 400, description = "Invalid topic or user id", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong token", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or subscriptions being restored (Retry-After)"),
    )
)]
#[delete("/v1/topics/{topic}/subscribers/{user_id}")]
#[tracing::instrument(name = "delete_subscriber", skip_all)]
pub async fn delete_subscriber(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let (topic, user) = path.into_inner();
    topic_of(&topic)?;
    check_user_id(&user).map_err(|e| ApiError::invalid_body(vec![e]))?;
    let now = chrono::Utc::now().timestamp_millis();
    match topics::unsubscribe(&mut redis.0.clone(), &state.keys, &topic, &[user], now)
        .await
        .map_err(redis_error)?
    {
        ChangeOutcome::Changed(_) => Ok(HttpResponse::NoContent().finish()),
        ChangeOutcome::Restoring => Err(restoring()),
    }
}

/// A topic's number of subscribers.
#[utoipa::path(
    tag = "topics",
    security(("admin_token" = [])),
    params(("topic" = String, Path, description = "The topic")),
    responses(
        (status = 200, description = "`{\"topic\", \"subscribers\"}`", body = super::docs::TopicBody),
        (status = 400, description = "Invalid topic", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong token", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/topics/{topic}")]
#[tracing::instrument(name = "get_topic", skip_all, fields(topic = %path))]
pub async fn get_topic(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    topic_of(&path)?;
    let count = topics::count(&mut redis.0.clone(), &state.keys, &path)
        .await
        .map_err(redis_error)?;
    Ok(HttpResponse::Ok().json(json!({"topic": *path, "subscribers": count})))
}
