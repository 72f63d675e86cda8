//! The webhook endpoints registry (admin): `POST/GET /v1/webhooks/endpoints`,
//! `GET/PATCH/DELETE /v1/webhooks/endpoints/{endpoint_id}`. The signing secret is
//! generated here and shown once, in the answer to the create.

use super::{client_rate_limit, read_json_body, require_admin};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::Utc;
use domain::notify::endpoints::{self, Endpoint, PutOutcome};
use serde_json::json;

/// Endpoint bodies are small.
const ENDPOINT_BODY_LIMIT_BYTES: usize = 64 * 1024;

fn redis_error(e: domain::redis_client::RedisError) -> ApiError {
    ApiError::QueueUnavailable(anyhow::Error::new(e).context("webhook endpoints"))
}

/// An endpoint as the API shows it (never its secret, but on creation).
pub fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    json!({
        "endpoint_id": e.endpoint_id,
        "url": e.url,
        "event_types": e.event_types,
        "rate_limit_per_s": e.rate_limit_per_s,
        "description": e.description,
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
        "previous_secret_expires_at": e.previous_secret_expires_at,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::coded(
        StatusCode::NOT_FOUND,
        "endpoint_not_found",
        vec![format!("no webhook endpoint {id:?}")],
    )
}

fn restoring() -> ApiError {
    ApiError::registry_restoring("the webhook endpoints registry")
}

/// Registers a webhook endpoint (admin). The answer carries its signing secret, shown
/// this once.
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    request_body(content = super::docs::NewEndpoint, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered; `secret` is shown only here", body = super::docs::EndpointCreated),
        (status = 400, description = "Invalid body; every problem listed (a URL that is not http(s), or on an internal address unless WEBHOOK_ALLOW_INTERNAL)", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/webhooks/endpoints")]
#[tracing::instrument(name = "post_endpoint", skip_all)]
pub async fn post_endpoint(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, ENDPOINT_BODY_LIMIT_BYTES).await?;
    let fields = endpoints::parse_fields(&body, true, state.settings.webhook_allow_internal)
        .map_err(ApiError::invalid_body)?;
    let id = endpoints::new_endpoint_id();
    match endpoints::create(&mut redis.0.clone(), &state.keys, &id, &fields, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(e) => {
            metrics::counter!("ingest_api_endpoint_changes_total", "change" => "create")
                .increment(1);
            let mut answer = endpoint_json(&e);
            answer["secret"] = e.secret.clone().into();
            Ok(HttpResponse::Created().json(answer))
        }
        PutOutcome::Exists | PutOutcome::Missing | PutOutcome::Restoring => Err(restoring()),
    }
}

/// Every webhook endpoint (admin).
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"endpoints\": [...]}`, ordered by id", body = super::docs::EndpointList),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/webhooks/endpoints")]
#[tracing::instrument(name = "list_endpoints", skip_all)]
pub async fn list_endpoints(
    req: HttpRequest,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let (_, mut all) = endpoints::all(&mut redis.0.clone(), &state.keys)
        .await
        .map_err(redis_error)?;
    all.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    let list: Vec<_> = all.iter().map(endpoint_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "endpoints": list })))
}

/// One webhook endpoint (admin).
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    params(("endpoint_id" = String, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint (without its secret)", body = super::docs::EndpointBody),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such endpoint (`endpoint_not_found`)", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/webhooks/endpoints/{endpoint_id}")]
#[tracing::instrument(name = "get_endpoint", skip_all, fields(endpoint_id = %path))]
pub async fn get_endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    match endpoints::get(&mut redis.0.clone(), &state.keys, &path)
        .await
        .map_err(redis_error)?
    {
        Some(e) => Ok(HttpResponse::Ok().json(endpoint_json(&e))),
        None => Err(not_found(&path)),
    }
}

/// Changes an endpoint's URL, event types, rate limit or description, or disables and
/// re-enables it (admin).
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    params(("endpoint_id" = String, Path, description = "The endpoint")),
    request_body(content = super::docs::EndpointPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The endpoint after the change", body = super::docs::EndpointBody),
        (status = 400, description = "Invalid body; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such endpoint (`endpoint_not_found`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[patch("/v1/webhooks/endpoints/{endpoint_id}")]
#[tracing::instrument(name = "patch_endpoint", skip_all, fields(endpoint_id = %path))]
pub async fn patch_endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, ENDPOINT_BODY_LIMIT_BYTES).await?;
    let fields = endpoints::parse_fields(&body, false, state.settings.webhook_allow_internal)
        .map_err(ApiError::invalid_body)?;
    match endpoints::update(
        &mut redis.0.clone(),
        &state.keys,
        &path,
        &fields,
        Utc::now(),
    )
    .await
    .map_err(redis_error)?
    {
        PutOutcome::Done(e) => {
            metrics::counter!("ingest_api_endpoint_changes_total", "change" => "update")
                .increment(1);
            Ok(HttpResponse::Ok().json(endpoint_json(&e)))
        }
        PutOutcome::Missing => Err(not_found(&path)),
        PutOutcome::Exists | PutOutcome::Restoring => Err(restoring()),
    }
}

/// Removes an endpoint (admin); deliveries still queued for it fail.
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    params(("endpoint_id" = String, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such endpoint (`endpoint_not_found`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[delete("/v1/webhooks/endpoints/{endpoint_id}")]
#[tracing::instrument(name = "delete_endpoint", skip_all, fields(endpoint_id = %path))]
pub async fn delete_endpoint(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    match endpoints::delete(&mut redis.0.clone(), &state.keys, &path, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(_) => {
            metrics::counter!("ingest_api_endpoint_changes_total", "change" => "delete")
                .increment(1);
            Ok(HttpResponse::NoContent().finish())
        }
        PutOutcome::Missing => Err(not_found(&path)),
        PutOutcome::Exists | PutOutcome::Restoring => Err(restoring()),
    }
}

/// Gives an endpoint a new signing secret (admin), shown once in the answer. The old one
/// keeps signing beside it for 24 hours (each delivery then carries both signatures), so
/// receivers move to the new secret without a delivery they cannot verify.
#[utoipa::path(
    tag = "webhooks",
    security(("admin_token" = [])),
    params(("endpoint_id" = String, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The endpoint with its new `secret`, and until when the old one still signs (`previous_secret_expires_at`)", body = super::docs::EndpointCreated),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such endpoint (`endpoint_not_found`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/webhooks/endpoints/{endpoint_id}/rotate-secret")]
#[tracing::instrument(name = "rotate_endpoint_secret", skip_all, fields(endpoint_id = %path))]
pub async fn rotate_secret(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let mut conn = redis.0.clone();
    let Some(endpoint) = endpoints::get(&mut conn, &state.keys, &path)
        .await
        .map_err(redis_error)?
    else {
        return Err(not_found(&path));
    };
    match endpoints::rotate_secret(&mut conn, &state.keys, &endpoint, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(e) => {
            metrics::counter!("ingest_api_endpoint_changes_total", "change" => "rotate_secret")
                .increment(1);
            let mut answer = endpoint_json(&e);
            answer["secret"] = e.secret.clone().into();
            Ok(HttpResponse::Ok().json(answer))
        }
        PutOutcome::Missing => Err(not_found(&path)),
        PutOutcome::Exists | PutOutcome::Restoring => Err(restoring()),
    }
}
