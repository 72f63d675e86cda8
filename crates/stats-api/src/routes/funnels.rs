//! A site's funnels as stats see them: `GET /v1/sites/{site_id}/funnels` (the definitions,
//! for a dashboard that has no admin token) and `GET /v1/sites/{site_id}/funnels/{funnel_id}`
//! (the report: visitors per step and drop-off). Funnels are made on ingest-api
//! (`POST /v1/sites/{site_id}/funnels`, admin).

use crate::error::ApiError;
use crate::query::funnel;
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};
use chrono::Utc;
use domain::date_range as range;
use serde_json::{Value, json};

/// The site's funnels, in the order they were made.
#[utoipa::path(
    tag = "query",
    security(("stats_token" = [])),
    params(("site_id" = String, Path, description = "The site")),
    responses(
        (status = 200, description = "`{\"funnels\": [{funnel_id, name, steps: [{goal_id, display_name}]}]}`; empty for a site without funnels", body = super::docs::FunnelList),
        (status = 401, description = "STATS_TOKEN is set, the request lacks it, and the site is not public"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/sites/{site_id}/funnels")]
#[tracing::instrument(name = "list_funnels", skip_all, fields(site_id = %path))]
pub async fn list_funnels(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (goals, funnels) = crate::sites::goals(&state.pg, &path)
        .await
        .map_err(ApiError::from_db)?;
    let funnels: Vec<Value> = funnels.iter().map(|f| f.to_json(&goals)).collect();
    Ok(HttpResponse::Ok().json(json!({ "funnels": funnels })))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FunnelRange {
    /// As `/v2/query`'s: `day`, `7d`, `28d`, `30d` (the default), `91d`, `month`, `6mo`,
    /// `12mo`, `year`, `all`, or two local days `YYYY-MM-DD,YYYY-MM-DD` (inclusive).
    pub date_range: Option<String>,
}

/// A funnel's report: visitors reaching each step within one visit, in order, and the
/// drop-off between steps.
#[utoipa::path(
    tag = "query",
    security(("stats_token" = [])),
    params(
        ("site_id" = String, Path, description = "The site"),
        ("funnel_id" = String, Path, description = "The funnel"),
        FunnelRange,
    ),
    responses(
        (status = 200, description = "`all_visitors` of the range, `entering_visitors` (reached step 1), `never_entering_visitors`, `conversion_rate` (completed over all visitors, percent), and `steps`: `{goal_id, label, visitors, conversion_rate (over entering visitors), conversion_rate_step (over the step before), dropoff, dropoff_percentage}`; `date_range` as resolved", body = super::docs::FunnelReport),
        (status = 400, description = "A malformed, reversed or over-long date_range"),
        (status = 401, description = "STATS_TOKEN is set, the request lacks it, and the site is not public"),
        (status = 404, description = "No such funnel (`funnel_not_found`)"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/sites/{site_id}/funnels/{funnel_id}")]
#[tracing::instrument(name = "get_funnel", skip_all)]
pub async fn get_funnel(
    path: web::Path<(String, String)>,
    query: web::Query<FunnelRange>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (site_id, funnel_id) = path.into_inner();
    let (goals, funnels) = crate::sites::goals(&state.pg, &site_id)
        .await
        .map_err(ApiError::from_db)?;
    let Some(found) = funnels.iter().find(|f| f.funnel_id == funnel_id) else {
        return Err(ApiError::NotFound(format!(
            "site {site_id:?} has no funnel {funnel_id:?}"
        )));
    };
    let asked = query.date_range.as_deref().unwrap_or("30d");
    let date_range = match asked.split_once(',') {
        Some((a, b)) => json!([a, b]),
        None => json!(asked),
    };
    let clock = crate::sites::settings(&state.pg, &site_id)
        .await
        .map_err(ApiError::from_db)?
        .clock;
    let first = if asked == "all" {
        crate::query::first_visit(&state, &site_id).await?
    } else {
        None
    };
    let range =
        range::resolve(&date_range, clock, Utc::now(), first).map_err(ApiError::BadRequest)?;
    let signature = format!(
        "funnel:{}:{}:{}:{}",
        found.funnel_id,
        serde_json::to_string(&found.steps).unwrap_or_default(),
        range.start.timestamp(),
        range.end.timestamp()
    );
    let mut answer = crate::cache::cached(&state, &site_id, &signature, async {
        funnel::report(&state, &site_id, found, &goals, range).await
    })
    .await?;
    answer["date_range"] = json!([
        crate::query::local_time_of(clock, range.first, 0, 0, 0),
        crate::query::local_time_of(clock, range.last, 23, 59, 59)
    ]);
    Ok(HttpResponse::Ok().json(answer))
}
