//! `GET /v1/stats` and its compatibility alias `GET /api/stats`.

use super::required_site_id;
use crate::bounds::{Bound, parse_bound, parse_day};
use crate::cache::cached;
use crate::error::ApiError;
use crate::rollups::{self, DayRange, PathViews};
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The answer of both endpoints, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SiteStats {
    total_views: i64,
    unique_users: i64,
    /// `unique_users` is a HyperLogLog estimate (a range too large to count exactly).
    #[serde(default)]
    unique_users_estimated: bool,
    top_paths: Vec<PathViews>,
}

impl SiteStats {
    /// The fields both endpoints answer with; the estimate flag only when it is one.
    fn fill(&self, body: &mut serde_json::Value) {
        body["total_views"] = json!(self.total_views);
        body["unique_users"] = json!(self.unique_users);
        if self.unique_users_estimated {
            body["unique_users_estimated"] = json!(true);
        }
        body["top_paths"] = json!(self.top_paths);
    }
}

const DEFAULT_TOP_PATHS: i64 = 10;
const MAX_TOP_PATHS: i64 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Required.
    site_id: Option<String>,
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
    limit: Option<String>,
}

/// What the query asks for, validated.
struct StatsRequest<'a> {
    site_id: &'a str,
    event_type: &'a str,
    range: DayRange,
    limit: i64,
    /// The `date` field of the answer: the day, `all-time`, or `first/last`.
    label: String,
}

fn validate(q: &StatsQuery) -> Result<StatsRequest<'_>, ApiError> {
    let site_id = required_site_id(q.site_id.as_deref())?;
    let event_type = q
        .event_type
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("page_view");
    if event_type.chars().count() > domain::event::MAX_EVENT_TYPE_CHARS {
        return Err(ApiError::BadRequest(
            "event_type must be at most 100 characters".into(),
        ));
    }
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_TOP_PATHS,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_TOP_PATHS).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be an integer between 1 and {MAX_TOP_PATHS}"
                ))
            })?,
    };
    let (range, label) = match (q.date.as_deref(), q.from.as_deref(), q.to.as_deref()) {
        (Some(date), None, None) => {
            let day = parse_day(date).ok_or_else(|| {
                ApiError::BadRequest("Invalid date format. Use YYYY-MM-DD".into())
            })?;
            (
                DayRange {
                    first: Some(day),
                    last: Some(day),
                },
                day.to_string(),
            )
        }
        (Some(_), _, _) => {
            return Err(ApiError::BadRequest(
                "use either date or from/to, not both".into(),
            ));
        }
        (None, None, None) => (
            DayRange {
                first: None,
                last: None,
            },
            "all-time".to_string(),
        ),
        (None, from, to) => {
            let first = from
                .map(|s| parse_bound(s, "from"))
                .transpose()
                .map_err(ApiError::BadRequest)?;
            let last = to
                .map(|s| parse_bound(s, "to"))
                .transpose()
                .map_err(ApiError::BadRequest)?;
            let range = DayRange {
                first: first.map(Bound::first_day),
                last: last.map(Bound::last_day),
            };
            if let (Some(a), Some(b)) = (range.first, range.last)
                && a > b
            {
                return Err(ApiError::BadRequest("from must not be after to".into()));
            }
            let show = |d: Option<chrono::NaiveDate>| d.map_or("..".to_string(), |d| d.to_string());
            (range, format!("{}/{}", show(range.first), show(range.last)))
        }
    };
    Ok(StatsRequest {
        site_id,
        event_type,
        range,
        limit,
        label,
    })
}

async fn compute(state: &AppState, r: &StatsRequest<'_>) -> Result<SiteStats, ApiError> {
    let signature = format!(
        "stats|{}|{:?}|{:?}|{}",
        r.event_type, r.range.first, r.range.last, r.limit
    );
    cached(state, r.site_id, &signature, async {
        let (totals, visitors) = tokio::try_join!(
            rollups::site_totals(&state.pg, r.site_id, r.event_type, r.range, r.limit),
            crate::visitors::distinct_visitors(state, r.site_id, r.event_type, r.range),
        )
        .map_err(ApiError::from_db)?;
        Ok(SiteStats {
            total_views: totals.total_views,
            unique_users: visitors.count,
            unique_users_estimated: visitors.estimated,
            top_paths: totals.top_paths,
        })
    })
    .await
}

/// Views, distinct users and top paths of a site for a day, a range, or all time.
///
/// `date` (YYYY-MM-DD), or `from`/`to` (days inclusive, RFC 3339 instants with `to`
/// exclusive, or epoch milliseconds); neither means all time. `event_type` defaults to
/// `page_view`; `limit` (1..1000, default 10) bounds `top_paths`.
#[utoipa::path(
    tag = "stats",
    security(("stats_token" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "`{site_id, date, total_views, unique_users, top_paths: [{path, views}]}`, plus `unique_users_estimated: true` when a multi-day range has more visitor-days than `EXACT_DISTINCT_MAX_ROWS` and the count is a HyperLogLog estimate"),
        (status = 400, description = "Missing site_id or invalid parameters"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/stats")]
#[tracing::instrument(name = "get_stats", skip_all, fields(site_id = tracing::field::Empty))]
pub async fn get_stats(
    q: web::Query<StatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let request = validate(&q)?;
    tracing::Span::current().record("site_id", request.site_id);
    let stats = compute(&state, &request).await?;
    let mut body = json!({
        "site_id": request.site_id,
        "date": request.label,
    });
    stats.fill(&mut body);
    if q.date.is_none() && (q.from.is_some() || q.to.is_some()) {
        body["from"] = json!(request.range.first);
        body["to"] = json!(request.range.last);
    }
    if request.event_type != "page_view" {
        body["event_type"] = json!(request.event_type);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The analytics design's `GET /api/stats?site_id=..[&date=..]`, its exact shapes.
#[utoipa::path(
    tag = "compatibility",
    security(("stats_token" = [])),
    params(
        ("site_id" = String, Query, description = "The site"),
        ("date" = Option<String>, Query, description = "YYYY-MM-DD; all time when absent"),
    ),
    responses(
        (status = 200, description = "`{site_id, date, total_views, unique_users, top_paths}`"),
        (status = 400, description = "`site_id query parameter is required` or `Invalid date format. Use YYYY-MM-DD`"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
    )
)]
#[get("/stats")]
#[tracing::instrument(name = "get_stats_compat", skip_all)]
pub async fn get_stats_compat(
    q: web::Query<StatsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let site_id = required_site_id(q.site_id.as_deref())?;
    let compat = StatsQuery {
        site_id: Some(site_id.to_string()),
        date: q.date.clone(),
        from: None,
        to: None,
        event_type: None,
        limit: None,
    };
    let request = validate(&compat)?;
    let stats = compute(&state, &request).await?;
    let mut body = json!({
        "site_id": request.site_id,
        "date": request.label,
    });
    stats.fill(&mut body);
    Ok(HttpResponse::Ok().json(body))
}
