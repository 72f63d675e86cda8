//! `GET /v1/sites/{site_id}/stream`: a site's live activity (events per interval, visitors
//! over the last 5 minutes, top paths right now), fed by what the batch-worker commits.

use super::{acquire, event_stream};
use crate::error::ApiError;
use crate::feeds::site::SiteFeed;
use crate::hub::Position;
use crate::startup::AppState;
use actix_web::{HttpRequest, Responder, get, web};
use domain::channel::Channel;
use std::sync::Arc;
use std::time::Duration;

/// `snapshot` first, then an `activity` event at most once per `SITE_COALESCE_MS` while
/// the site has traffic.
#[utoipa::path(
    tag = "streams",
    params(("site_id" = String, Path, description = "The site")),
    responses(
        (status = 200, description = "`text/event-stream`: `snapshot` then `activity` events `{visitors_last_5m, events_per_second, events_last_5m, top_paths}`", content_type = "text/event-stream"),
        (status = 429, description = "Too many streams from this client"),
        (status = 503, description = "Gateway full"),
    )
)]
#[get("/v1/sites/{site_id}/stream")]
#[tracing::instrument(name = "site_stream", skip_all, fields(site_id = %path))]
pub async fn site_stream(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let slot = acquire(&req, &state)?;
    let site_id = path.into_inner();
    let topic = state.hub.topic(
        Channel::Site(site_id.clone()),
        Duration::from_millis(state.settings.site_coalesce_ms),
        || {
            Arc::new(SiteFeed::new(
                site_id.clone(),
                state.keys.clone(),
                Some(state.redis.clone()),
            ))
        },
    );
    let rx = topic.subscribe();
    let first: Vec<_> = topic.render_snapshot().await.into_iter().collect();
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "site").increment(1);
    Ok(
        event_stream(first, rx, topic, Position::START, slot, &state)
            .customize()
            .insert_header(("x-accel-buffering", "no")),
    )
}
