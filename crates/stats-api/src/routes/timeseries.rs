//! `GET /v1/sites/{site_id}/timeseries?metric=..&interval=..&from=..&to=..`: zero-filled.
//! The Grafana data source serves the same series through [`filled_series`].

use crate::bounds::parse_bound;
use crate::cache::cached;
use crate::error::ApiError;
use crate::filters::{self, Filters};
use crate::local_time::{SiteClock, Span};
use crate::rollups::{self, Interval, Metric};
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Most buckets one answer may hold.
pub const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// `views` (default), `visitors` or `events`.
    metric: Option<String>,
    /// `minute`, `hour` (default) or `day`; visitors take `hour` or `day`.
    interval: Option<String>,
    /// Day, RFC 3339 or epoch ms; default: 24 intervals before `to`.
    from: Option<String>,
    /// Day (inclusive), RFC 3339 or epoch ms (exclusive); default: now.
    to: Option<String>,
    event_type: Option<String>,
    /// Filters, as for `/v1/stats`: exact matches on stored fields.
    path: Option<String>,
    hostname: Option<String>,
    source: Option<String>,
    referrer: Option<String>,
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_term: Option<String>,
    utm_content: Option<String>,
    browser: Option<String>,
    os: Option<String>,
    device: Option<String>,
    country: Option<String>,
}

impl SeriesQuery {
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

#[derive(Debug, Serialize, Deserialize)]
struct Point {
    t: String,
    value: i64,
}

/// A validated series request: `[from, to)` aligned to the interval (days: the site's
/// local days).
#[derive(Debug, Clone)]
pub struct SeriesRequest {
    pub site_id: String,
    pub metric: Metric,
    pub interval: Interval,
    /// `None` counts every event type.
    pub event_type: Option<String>,
    pub clock: SiteClock,
    pub filters: Filters,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl SeriesRequest {
    /// Checks the combination and the range.
    ///
    /// # Errors
    /// 400 for visitors per minute, an empty range or too many buckets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        site_id: String,
        metric: Metric,
        interval: Interval,
        event_type: Option<&str>,
        clock: SiteClock,
        filters: Filters,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        if (metric, interval) == (Metric::Visitors, Interval::Minute) {
            return Err(ApiError::BadRequest(
                "visitors are kept per hour and per day; use interval=hour or interval=day".into(),
            ));
        }
        let event_type = match (metric, event_type.filter(|s| !s.is_empty())) {
            (_, Some(t)) => Some(t.to_string()),
            (Metric::Events, None) => None,
            (_, None) => Some("page_view".to_string()),
        };
        let from = floor_to(from, interval, clock);
        if from >= to {
            return Err(ApiError::BadRequest("from must be before to".into()));
        }
        let request = Self {
            site_id,
            metric,
            interval,
            event_type,
            clock,
            filters,
            from,
            to,
        };
        let buckets = request.buckets();
        if buckets > MAX_BUCKETS {
            return Err(ApiError::BadRequest(format!(
                "the range holds {buckets} buckets, more than {MAX_BUCKETS}: widen the interval or narrow the range"
            )));
        }
        Ok(request)
    }

    fn buckets(&self) -> i64 {
        if self.interval == Interval::Day {
            // Local days are 23 to 25 hours long.
            let days = (self.clock.day_of(self.to - TimeDelta::microseconds(1))
                - self.clock.day_of(self.from))
            .num_days();
            return days + 1;
        }
        let (span, step) = ((self.to - self.from).num_seconds(), self.interval.seconds());
        span / step + i64::from(span % step != 0)
    }

    /// The start of every bucket, in order.
    fn bucket_starts(&self) -> Vec<DateTime<Utc>> {
        if self.interval == Interval::Day {
            let first = self.clock.day_of(self.from);
            return (0..self.buckets())
                .filter_map(|i| first.checked_add_days(chrono::Days::new(i as u64)))
                .map(|d| self.clock.day_start(d))
                .collect();
        }
        let step = self.interval.seconds();
        (0..self.buckets())
            .filter_map(|i| DateTime::from_timestamp(self.from.timestamp() + i * step, 0))
            .collect()
    }
}

fn parse_choice<T: for<'de> Deserialize<'de>>(
    value: Option<&str>,
    default: &str,
    name: &str,
    allowed: &str,
) -> Result<T, ApiError> {
    let v = value.filter(|s| !s.is_empty()).unwrap_or(default);
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| ApiError::BadRequest(format!("{name} must be one of {allowed}")))
}

fn floor_to(t: DateTime<Utc>, interval: Interval, clock: SiteClock) -> DateTime<Utc> {
    if interval == Interval::Day {
        return clock.day_start(clock.day_of(t));
    }
    let secs = interval.seconds();
    let ts = t.timestamp();
    DateTime::from_timestamp(ts - ts.rem_euclid(secs), 0).unwrap_or(t)
}

/// Every bucket of the request with its value (zero where nothing happened), cached until
/// the site's next batch.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn filled_series(
    state: &AppState,
    r: &SeriesRequest,
) -> Result<Vec<(DateTime<Utc>, i64)>, ApiError> {
    let signature = format!(
        "series|{:?}|{:?}|{:?}|{}|{}|{}|{}",
        r.metric,
        r.interval,
        r.event_type,
        r.clock.tz.name(),
        r.from.timestamp(),
        r.to.timestamp(),
        r.filters.signature()
    );
    let points: Vec<(i64, i64)> = cached(state, &r.site_id, &signature, async {
        let rows = if r.filters.is_empty() {
            rollups::series(
                &state.pg,
                &r.site_id,
                r.metric,
                r.interval,
                r.event_type.as_deref(),
                r.clock,
                r.from,
                r.to,
            )
            .await
            .map_err(ApiError::from_db)?
        } else {
            let client = state
                .pg
                .get()
                .await
                .map_err(|e| ApiError::from_db(e.into()))?;
            // Whole hours, as the rollups count them.
            let end = crate::local_time::floor_hour(r.to - TimeDelta::microseconds(1))
                + TimeDelta::hours(1);
            let span = Span {
                start: Some(crate::local_time::floor_hour(r.from)),
                end: Some(end),
            };
            filters::check_scannable(&client, &r.site_id, span, state.settings.filter_max_events)
                .await?;
            let unit = match r.interval {
                Interval::Minute => "minute",
                Interval::Hour => "hour",
                Interval::Day => "day",
            };
            filters::series(
                &client,
                &r.site_id,
                r.event_type.as_deref(),
                unit,
                r.metric == Metric::Visitors,
                r.clock,
                r.from,
                r.to,
                &r.filters,
            )
            .await
            .map_err(ApiError::from_db)?
        };
        let values: HashMap<i64, i64> = rows.into_iter().map(|(t, v)| (t.timestamp(), v)).collect();
        Ok(r.bucket_starts()
            .into_iter()
            .map(|t| {
                let t = t.timestamp();
                (t, values.get(&t).copied().unwrap_or(0))
            })
            .collect())
    })
    .await?;
    Ok(points
        .into_iter()
        .filter_map(|(t, v)| DateTime::from_timestamp(t, 0).map(|t| (t, v)))
        .collect())
}

/// A site's views, visitors or events per minute, hour or day, zero-filled.
#[utoipa::path(
    tag = "stats",
    security(("stats_token" = [])),
    params(("site_id" = String, Path, description = "The site"), SeriesQuery),
    responses(
        (status = 200, description = "`[{\"t\": RFC 3339, \"value\": n}]`; days are the site's local days, each `t` its first hour", body = Vec<super::docs::Point>),
        (status = 400, description = "Invalid metric, interval or range, more than 10000 buckets, or filters over more than FILTER_MAX_EVENTS events"),
        (status = 401, description = "STATS_TOKEN is set, the site is not public, and the request lacks the token"),
        (status = 422, description = "Filters over a range whose raw events have expired"),
        (status = 503, description = "PostgreSQL unavailable"),
    )
)]
#[get("/sites/{site_id}/timeseries")]
#[tracing::instrument(name = "get_timeseries", skip_all, fields(site_id = %path))]
pub async fn get_timeseries(
    path: web::Path<String>,
    q: web::Query<SeriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let metric: Metric = parse_choice(
        q.metric.as_deref(),
        "views",
        "metric",
        "views, visitors, events",
    )?;
    let interval: Interval = parse_choice(
        q.interval.as_deref(),
        "hour",
        "interval",
        "minute, hour, day",
    )?;
    let site_id = path.into_inner();
    let filters = q.filters()?;
    let clock = crate::sites::settings(&state.pg, &site_id)
        .await
        .map_err(ApiError::from_db)?
        .clock;
    let step = interval.seconds();
    let to = match q.to.as_deref() {
        Some(s) => parse_bound(s, "to")
            .map_err(ApiError::BadRequest)?
            .end_instant(clock),
        None => next_bucket(Utc::now(), interval, clock),
    };
    let from = match q.from.as_deref() {
        Some(s) => parse_bound(s, "from")
            .map_err(ApiError::BadRequest)?
            .start_instant(clock),
        None => to - TimeDelta::seconds(step * default_buckets(interval)),
    };
    let request = SeriesRequest::new(
        site_id,
        metric,
        interval,
        q.event_type.as_deref(),
        clock,
        filters,
        from,
        to,
    )?;
    let points: Vec<Point> = filled_series(&state, &request)
        .await?
        .into_iter()
        .map(|(t, value)| Point {
            t: t.to_rfc3339_opts(SecondsFormat::Secs, true),
            value,
        })
        .collect();
    Ok(HttpResponse::Ok().json(points))
}

/// The end of the bucket holding `t`.
fn next_bucket(t: DateTime<Utc>, interval: Interval, clock: SiteClock) -> DateTime<Utc> {
    match interval {
        Interval::Day => clock
            .day_of(t)
            .succ_opt()
            .map_or(t, |next| clock.day_start(next)),
        _ => floor_to(t, interval, clock) + TimeDelta::seconds(interval.seconds()),
    }
}

fn default_buckets(interval: Interval) -> i64 {
    match interval {
        Interval::Minute => 60,
        Interval::Hour => 24,
        Interval::Day => 30,
    }
}
