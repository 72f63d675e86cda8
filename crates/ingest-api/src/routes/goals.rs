//! A site's goals and funnels (admin): `POST/GET /v1/sites/{site_id}/goals`,
//! `DELETE /v1/sites/{site_id}/goals/{goal_id}`, `POST /v1/sites/{site_id}/funnels`,
//! `DELETE /v1/sites/{site_id}/funnels/{funnel_id}`. A funnel's report is stats-api's
//! `GET /v1/sites/{site_id}/funnels/{funnel_id}`.
//!
//! Each change is one Lua step on the site's registry record that also queues the site
//! for PostgreSQL (see `domain::goals`), so goals follow the site registry's guarantees.

use super::sites::{SITE_BODY_LIMIT_BYTES, after_change, not_found, redis_error};
use super::{client_rate_limit, read_json_body, require_admin};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::Utc;
use domain::goals::{self, EditOutcome, Goal};
use domain::site_registry::{self, Site};
use serde_json::{Value, json};

fn goal_json(goal: &Goal) -> Value {
    json!({
        "goal_id": goal.goal_id,
        "goal_type": goal.goal_type(),
        "display_name": goal.display_name,
        "event_name": goal.event_name,
        "page_path": goal.page_path,
    })
}

fn coded(status: StatusCode, code: &'static str, detail: String) -> ApiError {
    ApiError::coded(status, code, vec![detail])
}

/// The error of an edit that did not happen.
fn refused(outcome: EditOutcome, site_id: &str, what: &str, id: &str) -> ApiError {
    match outcome {
        EditOutcome::SiteMissing => not_found(site_id),
        EditOutcome::ItemMissing => coded(
            StatusCode::NOT_FOUND,
            if what == "goal" {
                "goal_not_found"
            } else {
                "funnel_not_found"
            },
            format!("site {site_id:?} has no {what} {id:?}"),
        ),
        EditOutcome::Full => coded(
            StatusCode::CONFLICT,
            "too_many",
            format!(
                "a site has at most {} goals and {} funnels",
                goals::MAX_GOALS,
                goals::MAX_FUNNELS
            ),
        ),
        EditOutcome::Exists => coded(
            StatusCode::CONFLICT,
            if what == "goal" {
                "goal_exists"
            } else {
                "funnel_exists"
            },
            format!("site {site_id:?} has a {what} named {id:?} already"),
        ),
        EditOutcome::UnknownGoal => coded(
            StatusCode::CONFLICT,
            "goal_not_found",
            "a step's goal was removed meanwhile".into(),
        ),
        EditOutcome::InUse(funnel) => coded(
            StatusCode::CONFLICT,
            "goal_in_use",
            format!("goal {id:?} is a step of funnel {funnel:?}; delete the funnel first"),
        ),
        EditOutcome::Restoring | EditOutcome::Done(_) => ApiError::sites_restoring(),
    }
}

async fn site_of(state: &AppState, redis: &WorkerRedis, site_id: &str) -> Result<Site, ApiError> {
    site_registry::get(&mut redis.0.clone(), &state.keys, site_id)
        .await
        .map_err(redis_error)?
        .ok_or_else(|| not_found(site_id))
}

/// What an edit is about, for its answer.
struct Edit<'a> {
    site_id: &'a str,
    /// `goal` or `funnel`.
    what: &'static str,
    /// How a refusal names the item (its name, or its id).
    item: &'a str,
    /// The change as `ingest_api_site_changes_total` counts it.
    change: &'static str,
}

/// The answer to an edit: `done` of the site after it (the change counted and this
/// process's registry reloaded first), or the refusal.
async fn answer(
    state: &AppState,
    redis: &WorkerRedis,
    outcome: domain::redis_client::RedisResult<EditOutcome>,
    edit: Edit<'_>,
    done: impl FnOnce(&Site) -> HttpResponse,
) -> Result<HttpResponse, ApiError> {
    match outcome.map_err(redis_error)? {
        EditOutcome::Done(site) => {
            after_change(state, redis, edit.change).await;
            Ok(done(&site))
        }
        other => Err(refused(other, edit.site_id, edit.what, edit.item)),
    }
}

/// Adds a goal to a site (admin): a custom event name or a page path pattern (`*` within
/// a path segment, `**` across segments). It applies to past events too.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    request_body(content = super::docs::NewGoal, content_type = "application/json"),
    responses(
        (status = 201, description = "Added", body = super::docs::GoalBody),
        (status = 400, description = "Invalid body; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 409, description = "A goal of that name exists (`goal_exists`), or the site has 100 (`too_many`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/sites/{site_id}/goals")]
#[tracing::instrument(name = "post_goal", skip_all, fields(site_id = %path))]
pub async fn post_goal(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, SITE_BODY_LIMIT_BYTES).await?;
    let goal = goals::parse_new_goal(&body).map_err(ApiError::invalid_body)?;
    let outcome =
        goals::add_goal(&mut redis.0.clone(), &state.keys, &path, &goal, Utc::now()).await;
    let edit = Edit {
        site_id: &path,
        what: "goal",
        item: &goal.display_name,
        change: "goal_create",
    };
    answer(&state, &redis, outcome, edit, |_| {
        HttpResponse::Created().json(goal_json(&goal))
    })
    .await
}

/// A site's goals (admin).
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    responses(
        (status = 200, description = "`{\"goals\": [...], \"funnels\": [...]}` in the order they were added", body = super::docs::GoalList),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable"),
    )
)]
#[get("/v1/sites/{site_id}/goals")]
#[tracing::instrument(name = "list_goals", skip_all, fields(site_id = %path))]
pub async fn list_goals(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let site = site_of(&state, &redis, &path).await?;
    let goals: Vec<Value> = site.goals.iter().map(goal_json).collect();
    let funnels: Vec<Value> = site
        .funnels
        .iter()
        .map(|f| f.to_json(&site.goals))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"goals": goals, "funnels": funnels})))
}

/// Removes a goal (admin); refused while a funnel has it as a step.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(
        ("site_id" = String, Path, description = "The site"),
        ("goal_id" = String, Path, description = "The goal"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such site (`site_not_found`) or goal (`goal_not_found`)", body = super::docs::CodedError),
        (status = 409, description = "A funnel has the goal as a step (`goal_in_use`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[delete("/v1/sites/{site_id}/goals/{goal_id}")]
#[tracing::instrument(name = "delete_goal", skip_all)]
pub async fn delete_goal(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let (site_id, goal_id) = path.into_inner();
    let outcome = goals::remove_goal(
        &mut redis.0.clone(),
        &state.keys,
        &site_id,
        &goal_id,
        Utc::now(),
    )
    .await;
    let edit = Edit {
        site_id: &site_id,
        what: "goal",
        item: &goal_id,
        change: "goal_delete",
    };
    answer(&state, &redis, outcome, edit, |_| {
        HttpResponse::NoContent().finish()
    })
    .await
}

/// Adds a funnel (admin): 2 to 8 of the site's goals, by id or display name, in order.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    request_body(content = super::docs::NewFunnel, content_type = "application/json"),
    responses(
        (status = 201, description = "Added", body = super::docs::FunnelBody),
        (status = 400, description = "Invalid body, or a step that is not a goal of the site; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`)", body = super::docs::CodedError),
        (status = 409, description = "A funnel of that name exists (`funnel_exists`), the site has 20 (`too_many`), or a step's goal was removed meanwhile (`goal_not_found`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/sites/{site_id}/funnels")]
#[tracing::instrument(name = "post_funnel", skip_all, fields(site_id = %path))]
pub async fn post_funnel(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let body = read_json_body(&req, payload, SITE_BODY_LIMIT_BYTES).await?;
    let new = goals::parse_new_funnel(&body).map_err(ApiError::invalid_body)?;
    let site = site_of(&state, &redis, &path).await?;
    let funnel = new.resolve(&site.goals).map_err(ApiError::invalid_body)?;
    let outcome = goals::add_funnel(
        &mut redis.0.clone(),
        &state.keys,
        &path,
        &funnel,
        Utc::now(),
    )
    .await;
    let edit = Edit {
        site_id: &path,
        what: "funnel",
        item: &funnel.name,
        change: "funnel_create",
    };
    answer(&state, &redis, outcome, edit, |site| {
        HttpResponse::Created().json(funnel.to_json(&site.goals))
    })
    .await
}

/// Removes a funnel (admin).
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(
        ("site_id" = String, Path, description = "The site"),
        ("funnel_id" = String, Path, description = "The funnel"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "No such site (`site_not_found`) or funnel (`funnel_not_found`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[delete("/v1/sites/{site_id}/funnels/{funnel_id}")]
#[tracing::instrument(name = "delete_funnel", skip_all)]
pub async fn delete_funnel(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let (site_id, funnel_id) = path.into_inner();
    let outcome = goals::remove_funnel(
        &mut redis.0.clone(),
        &state.keys,
        &site_id,
        &funnel_id,
        Utc::now(),
    )
    .await;
    let edit = Edit {
        site_id: &site_id,
        what: "funnel",
        item: &funnel_id,
        change: "funnel_delete",
    };
    answer(&state, &redis, outcome, edit, |_| {
        HttpResponse::NoContent().finish()
    })
    .await
}
