//! `GET /v1/sites/{site_id}/stream`: a site's live activity (events per interval, visitors
//! over the last 5 minutes, top paths right now), fed by what the batch-worker commits.

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::feeds::site::SiteFeed;
use crate::hub::Position;
use crate::reader::TopicReader;
use crate::startup::AppState;
use actix_web::{HttpRequest, Responder, get, web};
use domain::channel::Channel;
use std::sync::Arc;
use std::time::Duration;

/// A browser's reading of a site's live activity (a fresh snapshot first: site positions
/// are this gateway's own, so there is nothing to resume).
///
/// # Errors
/// 401/403 for a private site without a valid token (see [`authorize`]).
pub async fn site_reader(
    state: &AppState,
    site_id: &str,
    token: Option<&str>,
) -> Result<TopicReader, ApiError> {
    authorize(state, site_id, token).await?;
    let topic = state.hub.topic(
        Channel::Site(site_id.to_string()),
        Duration::from_millis(state.settings.site_coalesce_ms),
        || {
            Arc::new(SiteFeed::new(
                site_id.to_string(),
                state.keys.clone(),
                Some(state.redis.clone()),
            ))
        },
    );
    let rx = topic.subscribe();
    super::listen(state, &topic).await?;
    let first: Vec<_> = topic.render_snapshot().await.into_iter().collect();
    Ok(TopicReader::new(topic, rx, first, Position::START, true))
}

/// The stats' read rule for a site's stream.
async fn authorize(state: &AppState, site_id: &str, token: Option<&str>) -> Result<(), ApiError> {
    if state.settings.stats_token.is_empty() {
        return Ok(());
    }
    let site = domain::site_registry::get(&mut state.redis.clone(), &state.keys, site_id)
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::new(e).context("site registry")))?;
    if site.is_some_and(|s| s.public) {
        return Ok(());
    }
    let Some(token) = token else {
        metrics::counter!("sse_gateway_streams_refused_total", "reason" => "token_required")
            .increment(1);
        return Err(ApiError::TokenRequired);
    };
    domain::stream_token::verify(
        state.settings.stream_token_secret.expose().as_bytes(),
        &domain::stream_token::site_scope(site_id),
        token,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|why| {
        metrics::counter!("sse_gateway_streams_refused_total", "reason" => "token_refused")
            .increment(1);
        ApiError::TokenRefused(why)
    })
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// A signed stream token for `site:<site_id>` (see the API reference); needed for a
    /// private site when `STATS_TOKEN` is set.
    token: Option<String>,
}

/// `snapshot` first, then an `activity` event at most once per `SITE_COALESCE_MS` while
/// the site has traffic. Read as the site's stats are: open when `STATS_TOKEN` is unset or
/// the site is public, otherwise with a signed, expiring `?token=`.
#[utoipa::path(
    tag = "streams",
    params(("site_id" = String, Path, description = "The site"), StreamQuery),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` then `activity` events `{visitors_last_5m, events_per_second, events_last_5m, top_paths}`", body = String, content_type = "text/event-stream"),
        (status = 401, description = "A private site and no token (`token_required`)"),
        (status = 403, description = "The token is malformed, expired or for another stream (`token_refused`)"),
        (status = 429, description = "Too many streams from this client"),
        (status = 503, description = "Gateway full, or Redis unavailable"),
    )
)]
#[get("/v1/sites/{site_id}/stream")]
#[tracing::instrument(name = "site_stream", skip_all, fields(site_id = %path))]
pub async fn site_stream(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let site_id = path.into_inner();
    let reader = site_reader(&state, &site_id, query.token.as_deref()).await?;
    let slot = acquire(&req, &state)?;
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "site").increment(1);
    Ok(event_stream(reader, slot, &req, &state)
        .customize()
        .insert_header(("x-accel-buffering", "no")))
}
