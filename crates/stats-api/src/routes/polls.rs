//! `GET /v1/polls/{poll_id}`: a poll's definition and its persisted results.

use crate::error::ApiError;
use crate::rollups;
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};

/// The poll as PostgreSQL has it (votes counted once stored by the worker).
#[utoipa::path(
    tag = "polls",
    security(("stats_token" = [])),
    params(("poll_id" = String, Path, description = "The poll")),
    responses(
        (status = 200, body = super::docs::PollResults, description = "`{poll_id, question, options: [{id, label, votes}], total, closed, closes_at, settings}`; while the poll's `results` setting hides counts (`after_vote` until closed, `after_close` until closed) the options carry no `votes` and the answer says `hidden: true`. `total` counts voters; `watchers` is how many browsers watch the poll's stream right now, over every gateway"),
        (status = 404, description = "Unknown poll (or not persisted yet)"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/polls/{poll_id}")]
#[tracing::instrument(name = "get_poll", skip_all, fields(poll_id = %path))]
pub async fn get_poll(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let results = rollups::poll_results(&state.pg, &path)
        .await
        .map_err(ApiError::from_db)?
        .ok_or_else(|| ApiError::NotFound("poll not found".into()))?;
    let mut body = serde_json::to_value(&results).map_err(|e| ApiError::Unexpected(e.into()))?;
    body["watchers"] = serde_json::json!(
        watchers(&state, domain::channel::Channel::Poll(path.into_inner())).await
    );
    Ok(HttpResponse::Ok().json(body))
}

/// Browsers watching a topic over every gateway; `null` when Redis cannot say.
pub async fn watchers(state: &AppState, channel: domain::channel::Channel) -> Option<u64> {
    let mut redis = state.redis.clone();
    let now = chrono::Utc::now().timestamp_millis();
    match domain::presence::count(&mut redis, &state.keys, &channel, now).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "presence unavailable");
            None
        }
    }
}
