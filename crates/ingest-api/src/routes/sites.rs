//! The site registry (admin): `POST /v1/sites`, `GET /v1/sites`,
//! `GET/PATCH/DELETE /v1/sites/{site_id}`.
//!
//! Every change is one Lua step on the Redis mirror that also queues it for PostgreSQL
//! (see `domain::site_registry`); reads come from the mirror, so a change is visible at
//! once. This process reloads its in-memory copy right after a change; other ingest-api
//! processes within `SITES_REFRESH_MS`.

use super::{client_rate_limit, read_json_body, require_admin};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::Utc;
use domain::site_registry::{self, PutOutcome, Site};
use serde_json::json;

/// Sites' admin bodies are small.
pub(super) const SITE_BODY_LIMIT_BYTES: usize = 64 * 1024;

pub(super) fn redis_error(e: domain::redis_client::RedisError) -> ApiError {
    ApiError::QueueUnavailable(anyhow::Error::new(e).context("site registry"))
}

fn site_json(site: &Site) -> serde_json::Value {
    json!({
        "site_id": site.site_id,
        "domains": site.domains,
        "timezone": site.timezone,
        "public": site.public,
        "goals": site.goals.len(),
        "funnels": site.funnels.len(),
        "created_at": site.created_at,
        "updated_at": site.updated_at,
    })
}

pub(super) fn not_found(site_id: &str) -> ApiError {
    ApiError::coded(
        StatusCode::NOT_FOUND,
        "site_not_found",
        vec![format!("no site {site_id:?} is registered")],
    )
}

pub(super) async fn after_change(state: &AppState, redis: &WorkerRedis, what: &'static str) {
    metrics::counter!("ingest_api_site_changes_total", "change" => what).increment(1);
    if let Err(e) = state.sites.refresh(&mut redis.0.clone(), &state.keys).await {
        tracing::warn!(error = %e, "could not reload the site registry after a change");
    }
}

/// Registers a site (admin).
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    request_body(content = super::docs::NewSite, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = super::docs::SiteBody),
        (status = 400, description = "Invalid body; every problem listed (unknown fields are refused)", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 409, description = "The site exists (`site_exists`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/sites")]
#[tracing::instrument(name = "post_site", skip_all)]
pub async fn post_site(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, SITE_BODY_LIMIT_BYTES).await?;
    let new = site_registry::parse_new_site(&body).map_err(ApiError::invalid_body)?;
    match site_registry::create(&mut redis.0.clone(), &state.keys, &new, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(site) => {
            after_change(&state, &redis, "create").await;
            Ok(HttpResponse::Created().json(site_json(&site)))
        }
        PutOutcome::Exists => Err(ApiError::coded(
            StatusCode::CONFLICT,
            "site_exists",
            vec![format!(
                "site {:?} is registered already; PATCH it",
                new.site_id
            )],
        )),
        PutOutcome::Missing | PutOutcome::Restoring => Err(ApiError::sites_restoring()),
    }
}

/// Every registered site (admin).
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"sites\": [...]}`, ordered by id", body = super::docs::SiteList),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/sites")]
#[tracing::instrument(name = "list_sites", skip_all)]
pub async fn list_sites(
    req: HttpRequest,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let (_, _, mut sites) = site_registry::all(&mut redis.0.clone(), &state.keys)
        .await
        .map_err(redis_error)?;
    sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
    let sites: Vec<_> = sites.iter().map(site_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "sites": sites })))
}

/// One registered site (admin).
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    responses(
        (status = 200, description = "The site", body = super::docs::SiteBody),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/sites/{site_id}")]
#[tracing::instrument(name = "get_site", skip_all, fields(site_id = %path))]
pub async fn get_site(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    match site_registry::get(&mut redis.0.clone(), &state.keys, &path)
        .await
        .map_err(redis_error)?
    {
        Some(site) => Ok(HttpResponse::Ok().json(site_json(&site))),
        None => Err(not_found(&path)),
    }
}

/// Changes a site's domains, time zone or visibility (admin). A new time zone applies to
/// every stats answer, past days included.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    request_body(content = super::docs::SitePatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The site after the change", body = super::docs::SiteBody),
        (status = 400, description = "Invalid body; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[patch("/v1/sites/{site_id}")]
#[tracing::instrument(name = "patch_site", skip_all, fields(site_id = %path))]
pub async fn patch_site(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, SITE_BODY_LIMIT_BYTES).await?;
    let patch = site_registry::parse_site_patch(&body).map_err(ApiError::invalid_body)?;
    match site_registry::update(&mut redis.0.clone(), &state.keys, &path, &patch, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(site) => {
            after_change(&state, &redis, "update").await;
            Ok(HttpResponse::Ok().json(site_json(&site)))
        }
        PutOutcome::Missing => Err(not_found(&path)),
        PutOutcome::Exists | PutOutcome::Restoring => Err(ApiError::sites_restoring()),
    }
}

/// Removes a site from the registry (admin). Its stored events and stats stay; in
/// `SITES_MODE=registered` new events for it are refused.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[delete("/v1/sites/{site_id}")]
#[tracing::instrument(name = "delete_site", skip_all, fields(site_id = %path))]
pub async fn delete_site(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    match site_registry::delete(&mut redis.0.clone(), &state.keys, &path, Utc::now())
        .await
        .map_err(redis_error)?
    {
        PutOutcome::Done(_) => {
            after_change(&state, &redis, "delete").await;
            Ok(HttpResponse::NoContent().finish())
        }
        PutOutcome::Missing => Err(not_found(&path)),
        PutOutcome::Exists | PutOutcome::Restoring => Err(ApiError::sites_restoring()),
    }
}
