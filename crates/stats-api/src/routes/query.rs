//! `POST /v2/query`: Plausible's Stats API v2 (see [`crate::query`]).

use crate::error::ApiError;
use crate::query::{self, request::QueryRequest};
use crate::startup::AppState;
use actix_web::{HttpResponse, post, web};

/// `POST /v2/query`: metrics of a site by dimensions, filtered, ordered and paginated, in
/// Plausible's Stats API v2 shapes. `?site_id=` (the body's site) lets a public site's
/// stats be read without `STATS_TOKEN`.
///
/// # Errors
/// 400 naming what the query gets wrong or what this version cannot answer; 503 when
/// PostgreSQL is unavailable.
#[utoipa::path(
    tag = "query",
    security(("stats_token" = [])),
    params(super::SiteParam),
    request_body(content = QueryRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`results` (one `{metrics, dimensions}` per row), `meta` (`total_rows`, `time_labels` when asked), `query` (the query as understood, with the resolved date range)", body = super::docs::QueryAnswer),
        (status = 400, description = "`site_id` in the URL differs from the body's; unknown metric, dimension, filter operator or order; an unsupported combination; a reversed or over-long date range; too many filter values; malformed JSON"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 413, description = "Body over 256 KiB"),
        (status = 415, description = "Not application/json"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)")
    )
)]
#[post("/query")]
pub async fn post_query(
    site: web::Query<super::SiteParam>,
    body: web::Json<QueryRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The URL's site_id is what the token check looked at (public sites): it must be the
    // site the body asks about.
    if site.site_id.as_ref().is_some_and(|s| *s != body.site_id) {
        return Err(ApiError::BadRequest(
            "site_id in the URL and in the body differ".into(),
        ));
    }
    let answer = query::answer(&state, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(answer))
}
