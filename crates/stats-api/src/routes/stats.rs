//! `GET /v1/stats` and its compatibility alias `GET /api/stats`.

use super::required_site_id;
use crate::bounds::{Bound, parse_bound, parse_day};
use crate::cache::cached;
use crate::error::ApiError;
use crate::filters::{self, Filters};
use crate::local_time::{SiteClock, Span};
use crate::rollups::{self, PathViews};
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};
use chrono::NaiveDate;
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

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Required.
    site_id: Option<String>,
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
    limit: Option<String>,
    /// Filters (exact match on the stored field): only matching events count.
    path: Option<String>,
    hostname: Option<String>,
    /// The referrer's source (`Google`, or a host), or `utm_source`.
    source: Option<String>,
    referrer: Option<String>,
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_term: Option<String>,
    utm_content: Option<String>,
    browser: Option<String>,
    os: Option<String>,
    /// `desktop`, `mobile` or `tablet`.
    device: Option<String>,
    /// ISO 3166-1 alpha-2.
    country: Option<String>,
}

impl StatsQuery {
    fn filters(&self) -> Result<Filters, ApiError> {
        Filters::from_query(
            [
                ("path", &self.path),
                ("hostname", &self.hostname),
                ("source", &self.source),
                ("referrer", &self.referrer),
                ("utm_source", &self.utm_source),
                ("utm_medium", &self.utm_medium),
                ("utm_campaign", &self.utm_campaign),
                ("utm_term", &self.utm_term),
                ("utm_content", &self.utm_content),
                ("browser", &self.browser),
                ("os", &self.os),
                ("device", &self.device),
                ("country", &self.country),
            ]
            .into_iter()
            .filter_map(|(name, value)| value.as_deref().map(|v| (name, v))),
        )
    }
}

/// The days a query asks for, before the site's time zone turns them into hours.
#[derive(Debug, Clone, Copy)]
enum Days {
    One(NaiveDate),
    Range(Option<Bound>, Option<Bound>),
}

/// What the query asks for, validated.
struct StatsRequest<'a> {
    site_id: &'a str,
    event_type: &'a str,
    days: Days,
    limit: i64,
    filters: Filters,
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
    let days =
        match (q.date.as_deref(), q.from.as_deref(), q.to.as_deref()) {
            (Some(date), None, None) => Days::One(parse_day(date).ok_or_else(|| {
                ApiError::BadRequest("Invalid date format. Use YYYY-MM-DD".into())
            })?),
            (Some(_), _, _) => {
                return Err(ApiError::BadRequest(
                    "use either date or from/to, not both".into(),
                ));
            }
            (None, from, to) => {
                let first = from
                    .map(|s| parse_bound(s, "from"))
                    .transpose()
                    .map_err(ApiError::BadRequest)?;
                let last = to
                    .map(|s| parse_bound(s, "to"))
                    .transpose()
                    .map_err(ApiError::BadRequest)?;
                Days::Range(first, last)
            }
        };
    Ok(StatsRequest {
        site_id,
        event_type,
        days,
        limit,
        filters: q.filters()?,
    })
}

/// A request in the site's days: the hours it covers, and its label.
struct Resolved {
    span: Span,
    first: Option<NaiveDate>,
    last: Option<NaiveDate>,
    /// The `date` field of the answer: the day, `all-time`, or `first/last`.
    label: String,
}

fn resolve(days: Days, clock: SiteClock) -> Result<Resolved, ApiError> {
    let (first, last, label) = match days {
        Days::One(day) => (Some(day), Some(day), day.to_string()),
        Days::Range(None, None) => (None, None, "all-time".to_string()),
        Days::Range(from, to) => {
            let first = from.map(|b| b.first_day(clock));
            let last = to.map(|b| b.last_day(clock));
            if let (Some(a), Some(b)) = (first, last)
                && a > b
            {
                return Err(ApiError::BadRequest("from must not be after to".into()));
            }
            let show = |d: Option<NaiveDate>| d.map_or("..".to_string(), |d| d.to_string());
            (first, last, format!("{}/{}", show(first), show(last)))
        }
    };
    Ok(Resolved {
        span: clock.days(first, last),
        first,
        last,
        label,
    })
}

async fn compute(
    state: &AppState,
    r: &StatsRequest<'_>,
    clock: SiteClock,
    span: Span,
) -> Result<SiteStats, ApiError> {
    let signature = format!(
        "stats|{}|{}|{:?}|{:?}|{}|{}",
        r.event_type,
        clock.tz.name(),
        span.start,
        span.end,
        r.limit,
        r.filters.signature()
    );
    cached(state, r.site_id, &signature, async {
        if !r.filters.is_empty() {
            let client = state
                .pg
                .get()
                .await
                .map_err(|e| ApiError::from_db(e.into()))?;
            filters::check_scannable(&client, r.site_id, span, state.settings.filter_max_events)
                .await?;
            let (views, users, paths) =
                filters::totals(&client, r.site_id, r.event_type, span, &r.filters, r.limit)
                    .await
                    .map_err(ApiError::from_db)?;
            return Ok(SiteStats {
                total_views: views,
                unique_users: users,
                unique_users_estimated: false,
                top_paths: paths
                    .into_iter()
                    .map(|(path, views)| PathViews { path, views })
                    .collect(),
            });
        }
        let (totals, visitors) = tokio::try_join!(
            rollups::site_totals(&state.pg, r.site_id, r.event_type, span, r.limit),
            crate::visitors::distinct_visitors(state, r.site_id, r.event_type, span),
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

/// Answers a validated request in the site's time zone.
async fn answer(
    state: &AppState,
    request: &StatsRequest<'_>,
) -> Result<(Resolved, SiteStats, SiteClock), ApiError> {
    let settings = crate::sites::settings(&state.pg, request.site_id)
        .await
        .map_err(ApiError::from_db)?;
    let resolved = resolve(request.days, settings.clock)?;
    let stats = compute(state, request, settings.clock, resolved.span).await?;
    Ok((resolved, stats, settings.clock))
}

/// Views, distinct users and top paths of a site for a day, a range, or all time.
///
/// Days are the site's local days (its registered time zone, UTC otherwise). `date`
/// (YYYY-MM-DD), or `from`/`to` (days inclusive; RFC 3339 instants or epoch milliseconds
/// select the local days they fall in); neither means all time. `event_type` defaults to
/// `page_view`; `limit` (1..1000, default 10) bounds `top_paths`. Filter parameters
/// (`browser=Firefox`, `country=DE`, ...) count only matching events, exactly, over ranges
/// of at most `FILTER_MAX_EVENTS` events.
#[utoipa::path(
    tag = "stats",
    security(("stats_token" = [])),
    params(StatsQuery),
    responses(
        (status = 200, body = super::docs::SiteStats, description = "`{site_id, date, timezone, total_views, unique_users, top_paths: [{path, views}], watchers}` (`watchers`: browsers on the site's live stream now, over every gateway), plus `unique_users_estimated: true` when a multi-day range has more visitor-days than `EXACT_DISTINCT_MAX_ROWS` and the count is a HyperLogLog estimate"),
        (status = 400, description = "Missing site_id, invalid parameters, or filters over more than FILTER_MAX_EVENTS events"),
        (status = 401, description = "STATS_TOKEN is set, the site is not public, and the request lacks the token"),
        (status = 422, description = "Filters over a range whose raw events have expired (EVENTS_RETENTION_DAYS)"),
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
    let (resolved, stats, clock) = answer(&state, &request).await?;
    let mut body = json!({
        "site_id": request.site_id,
        "date": resolved.label,
    });
    stats.fill(&mut body);
    if q.date.is_none() && (q.from.is_some() || q.to.is_some()) {
        body["from"] = json!(resolved.first);
        body["to"] = json!(resolved.last);
    }
    if request.event_type != "page_view" {
        body["event_type"] = json!(request.event_type);
    }
    if !clock.is_utc() {
        body["timezone"] = json!(clock.tz.name());
    }
    if !request.filters.is_empty() {
        body["filters"] = json!(request.filters.signature());
    }
    body["watchers"] = json!(
        super::polls::watchers(
            &state,
            domain::channel::Channel::Site(request.site_id.to_string())
        )
        .await
    );
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
        (status = 200, description = "`{site_id, date, total_views, unique_users, top_paths}`", body = super::docs::CompatStats),
        (status = 400, description = "`site_id query parameter is required` or `Invalid date format. Use YYYY-MM-DD`"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
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
        ..StatsQuery::default()
    };
    let request = validate(&compat)?;
    let (resolved, stats, _) = answer(&state, &request).await?;
    let mut body = json!({
        "site_id": request.site_id,
        "date": resolved.label,
    });
    stats.fill(&mut body);
    Ok(HttpResponse::Ok().json(body))
}
