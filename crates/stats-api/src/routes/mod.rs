//! HTTP handlers, one module per resource, and the token check they share.

pub mod grafana;
pub mod polls;
pub mod stats;
pub mod timeseries;

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web;

/// Requires `Authorization: Bearer <STATS_TOKEN>` when a token is configured.
///
/// # Errors
/// 401 when the token is configured and missing or wrong.
pub async fn require_stats_token<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let token = &state.settings.stats_token;
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !token.is_empty() && !domain::auth::bearer_matches(header, token) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(req).await
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
