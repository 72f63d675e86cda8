//! HTTP handlers, one module per resource, and the token check they share.

pub mod dead_letters;
pub mod docs;
pub mod feed;
pub mod funnels;
pub mod grafana;
pub mod jobs;
pub mod notifications;
pub mod polls;
pub mod query;
pub mod stats;
pub mod timeseries;

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web;

/// Requires `Authorization: Bearer <STATS_TOKEN>` when a token is configured, except for
/// the stats of a public site (`site_id` in the query, or `/v1/sites/{site_id}/...`).
///
/// # Errors
/// 401 when the token is configured and missing or wrong, and the site is not public.
pub async fn require_stats_token<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    // These check their own tokens (a feed token; the admin token).
    if is_own_auth(req.path()) {
        return next.call(req).await;
    }
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let token = &state.settings.stats_token;
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !token.is_empty()
            && !domain::auth::bearer_matches(header, token)
            && !targets_public_site(&req, state).await?
        {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
}

/// Routes that check their own tokens: a user's feed (the stats token or the user's feed
/// token), the dead letters (the admin token) and jobs (the stats or the admin token).
fn is_own_auth(path: &str) -> bool {
    path.starts_with("/v1/dead-letters")
        || path.starts_with("/v1/jobs/")
        || path
            .strip_prefix("/v1/users/")
            .is_some_and(|rest| rest.ends_with("/feed"))
}

/// Requires `Authorization: Bearer <ADMIN_TOKEN>`.
///
/// # Errors
/// 401 when it is missing or wrong, or no admin token is configured.
pub fn require_admin(req: &actix_web::HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if domain::auth::bearer_matches(header, &state.settings.admin_token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether the request reads a site marked public.
async fn targets_public_site(req: &ServiceRequest, state: &AppState) -> Result<bool, ApiError> {
    let path = req.path();
    let site = if let Some(rest) = path.strip_prefix("/v1/sites/") {
        rest.split('/').next().map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
    } else if matches!(path, "/v1/stats" | "/api/stats" | "/v2/query") {
        web::Query::<SiteParam>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.into_inner().site_id)
    } else {
        None
    };
    let Some(site) = site.filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let settings = crate::sites::settings(&state.pg, &site)
        .await
        .map_err(ApiError::from_db)?;
    Ok(settings.public)
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteParam {
    /// A public site's stats are readable without `STATS_TOKEN` when it is named here.
    pub site_id: Option<String>,
}

/// A required, non-empty `site_id`.
///
/// # Errors
/// 400 with the analytics design's message.
pub fn required_site_id(site_id: Option<&str>) -> Result<&str, ApiError> {
    site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest("site_id query parameter is required".into()))
}
