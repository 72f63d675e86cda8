//! The Grafana JSON data source protocol (simpod-json-datasource) under `/grafana`.
//!
//! Metrics: `views`, `visitors`, `events` (time series of a site; payload `site_id`,
//! optional `event_type`), `top_paths` (table of a site over the range; payload `site_id`,
//! optional `limit`), `breakdown` (table of visit metrics by a visit dimension over the
//! range's local days; payload `site_id`, `dimension`, optional `limit`) and
//! `poll_results` (table; payload `poll_id`). Variables: `sites`,
//! `polls`. Tag keys `site_id` and `poll_id`. The interval follows Grafana's `intervalMs`:
//! per minute up to one minute, per hour up to a day, else per day.

use crate::error::ApiError;
use crate::local_time::{Span, floor_hour};
use crate::rollups::{self, Interval, Metric};
use crate::routes::timeseries::{SeriesRequest, filled_series};
use crate::startup::AppState;
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /grafana`: the data source's "Save & test".
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), responses((status = 200, description = "The data source is reachable", body = super::docs::Status), (status = 401, description = "STATS_TOKEN is set and the request lacks it")))]
#[get("")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

fn site_payload() -> Value {
    json!({"label": "Site", "name": "site_id", "type": "select", "placeholder": "site id", "reloadMetric": true})
}

/// `POST /grafana/metrics`: what can be charted, and the payload each takes.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), responses((status = 200, description = "Metrics that can be charted, with their payloads", body = Vec<super::docs::GrafanaMetric>), (status = 401, description = "STATS_TOKEN is set and the request lacks it")))]
#[post("/metrics")]
pub async fn metrics() -> HttpResponse {
    let event_type = json!({"label": "Event type", "name": "event_type", "type": "input", "placeholder": "page_view"});
    HttpResponse::Ok().json(json!([
        {"label": "Views", "value": "views", "payloads": [site_payload(), event_type]},
        {"label": "Visitors", "value": "visitors", "payloads": [site_payload(), event_type]},
        {"label": "Events", "value": "events", "payloads": [site_payload(), event_type]},
        {"label": "Top paths (table)", "value": "top_paths", "payloads": [site_payload(), {"label": "Limit", "name": "limit", "type": "input", "placeholder": "10"}]},
        {"label": "Visits by a dimension (table)", "value": "breakdown", "payloads": [site_payload(), {"label": "Dimension", "name": "dimension", "type": "select", "placeholder": "visit:source"}, {"label": "Limit", "name": "limit", "type": "input", "placeholder": "10"}]},
        {"label": "Poll results (table)", "value": "poll_results", "payloads": [{"label": "Poll", "name": "poll_id", "type": "select", "placeholder": "poll id"}]},
    ]))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PayloadOptionsRequest {
    #[serde(default)]
    name: String,
}

/// `POST /grafana/metric-payload-options`: the choices of a `select` payload.
///
/// # Errors
/// When PostgreSQL fails.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), request_body(content = PayloadOptionsRequest, content_type = "application/json"), responses((status = 200, description = "Choices of a select payload", body = Vec<super::docs::LabelValue>), (status = 400, description = "The body is not the JSON this route takes"), (status = 401, description = "STATS_TOKEN is set and the request lacks it"), (status = 503, description = "PostgreSQL unavailable (Retry-After)")))]
#[post("/metric-payload-options")]
pub async fn metric_payload_options(
    req: web::Json<PayloadOptionsRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let options: Vec<Value> = match req.name.as_str() {
        "dimension" => domain::visits::VisitDimension::EVERY
            .iter()
            .filter_map(|d| d.api_name())
            .map(|name| json!({"label": name, "value": name}))
            .collect(),
        "site_id" => rollups::sites(&state.pg, 1000)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|s| json!({"label": s, "value": s}))
            .collect(),
        "poll_id" => rollups::recent_polls(&state.pg, 200)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|(id, q)| json!({"label": q, "value": id}))
            .collect(),
        _ => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(options))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Range {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Target {
    #[serde(default)]
    target: String,
    #[serde(default, rename = "refId")]
    ref_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
    #[serde(default)]
    hide: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct QueryRequest {
    range: Range,
    #[serde(default, rename = "intervalMs")]
    interval_ms: Option<i64>,
    #[serde(default)]
    targets: Vec<Target>,
}

fn text<'a>(payload: &'a Value, name: &str) -> Option<&'a str> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn interval_for(interval_ms: Option<i64>, from: DateTime<Utc>, to: DateTime<Utc>) -> Interval {
    let ms = interval_ms.unwrap_or_else(|| (to - from).num_milliseconds() / 500);
    if ms <= 60_000 && (to - from) <= TimeDelta::days(6) {
        Interval::Minute
    } else if ms <= 86_400_000 && (to - from) <= TimeDelta::days(365) {
        Interval::Hour
    } else {
        Interval::Day
    }
}

/// `POST /grafana/query`: time series as `{"target", "datapoints": [[value, ms]]}`, tables
/// as `{"type": "table", "columns", "rows"}`.
///
/// # Errors
/// 400 for an unknown metric or missing payload; 503 when PostgreSQL is down.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), request_body(content = QueryRequest, content_type = "application/json"), responses((status = 200, description = "Time series and tables of the requested targets", body = Vec<super::docs::GrafanaResult>), (status = 400, description = "Not the JSON of a query, an unknown metric, a missing payload, or a range out of bounds"), (status = 401, description = "STATS_TOKEN is set and the request lacks it"), (status = 503, description = "PostgreSQL unavailable (Retry-After)")))]
#[post("/query")]
pub async fn query(
    req: web::Json<QueryRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let QueryRequest {
        range,
        interval_ms,
        targets,
    } = req.into_inner();
    if targets
        .iter()
        .any(|t| t.target.contains('\0') || t.payload.to_string().contains("\\u0000"))
    {
        return Err(ApiError::BadRequest(
            "targets must not contain NUL characters".into(),
        ));
    }
    let mut out = Vec::new();
    for t in targets.iter().filter(|t| !t.hide && !t.target.is_empty()) {
        let need_site = || {
            text(&t.payload, "site_id")
                .map(str::to_string)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{}: payload.site_id is required", t.target))
                })
        };
        match t.target.as_str() {
            name @ ("views" | "visitors" | "events") => {
                let metric = match name {
                    "views" => Metric::Views,
                    "visitors" => Metric::Visitors,
                    _ => Metric::Events,
                };
                let mut interval = interval_for(interval_ms, range.from, range.to);
                if metric == Metric::Visitors && interval == Interval::Minute {
                    interval = Interval::Hour;
                }
                let site = need_site()?;
                let clock = crate::sites::settings(&state.pg, &site)
                    .await
                    .map_err(ApiError::from_db)?
                    .clock;
                let request = SeriesRequest::new(
                    site,
                    metric,
                    interval,
                    text(&t.payload, "event_type"),
                    clock,
                    crate::filters::Filters::default(),
                    range.from,
                    range.to,
                )?;
                let points: Vec<Value> = filled_series(&state, &request)
                    .await?
                    .into_iter()
                    .map(|(at, v)| json!([v, at.timestamp_millis()]))
                    .collect();
                let label = format!("{name} {}", request.site_id);
                out.push(json!({"target": label, "refId": t.ref_id, "datapoints": points}));
            }
            "top_paths" => {
                let site = need_site()?;
                let limit = text(&t.payload, "limit")
                    .and_then(|l| l.parse::<i64>().ok())
                    .unwrap_or(10)
                    .clamp(1, 1000);
                // Paths are kept per hour: the hours the dashboard's range touches.
                let hours = Span {
                    start: Some(floor_hour(range.from)),
                    end: Some(
                        floor_hour(range.to - TimeDelta::microseconds(1)) + TimeDelta::hours(1),
                    ),
                };
                let stats = rollups::site_totals(
                    &state.pg,
                    &site,
                    text(&t.payload, "event_type").unwrap_or("page_view"),
                    hours,
                    limit,
                )
                .await
                .map_err(ApiError::from_db)?;
                let rows: Vec<Value> = stats
                    .top_paths
                    .iter()
                    .map(|p| json!([p.path, p.views]))
                    .collect();
                out.push(json!({
                    "type": "table",
                    "refId": t.ref_id,
                    "columns": [{"text": "path", "type": "string"}, {"text": "views", "type": "number"}],
                    "rows": rows,
                }));
            }
            "poll_results" => {
                let poll_id = text(&t.payload, "poll_id").ok_or_else(|| {
                    ApiError::BadRequest("poll_results: payload.poll_id is required".into())
                })?;
                let results = rollups::poll_results(&state.pg, poll_id)
                    .await
                    .map_err(ApiError::from_db)?;
                let rows: Vec<Value> = results
                    .map(|r| {
                        r.options
                            .iter()
                            .map(|o| json!([o.label, o.votes]))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(json!({
                    "type": "table",
                    "refId": t.ref_id,
                    "columns": [{"text": "option", "type": "string"}, {"text": "votes", "type": "number"}],
                    "rows": rows,
                }));
            }
            "breakdown" => {
                let site = need_site()?;
                let dimension = text(&t.payload, "dimension").unwrap_or("visit:source");
                let limit = text(&t.payload, "limit")
                    .and_then(|l| l.parse::<i64>().ok())
                    .unwrap_or(10)
                    .clamp(1, 1000);
                out.push(
                    breakdown(&state, &site, dimension, limit, &range, t.ref_id.as_ref()).await?,
                );
            }
            other => return Err(ApiError::BadRequest(format!("unknown metric {other:?}"))),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

/// Visit metrics by one dimension over the local days the range touches, through the
/// query API (a table: the dimension's values, visitors, visits, bounce rate, duration;
/// for `event:goal`, visitors, conversions and conversion rate).
async fn breakdown(
    state: &AppState,
    site: &str,
    dimension: &str,
    limit: i64,
    range: &Range,
    ref_id: Option<&String>,
) -> Result<Value, ApiError> {
    let clock = crate::sites::settings(&state.pg, site)
        .await
        .map_err(ApiError::from_db)?
        .clock;
    let first = clock.day_of(range.from);
    let last = clock
        .day_of(range.to - TimeDelta::microseconds(1))
        .max(first);
    // Goals have conversions rather than visit metrics.
    let names: &[&str] = if dimension == "event:goal" {
        &["visitors", "events", "conversion_rate"]
    } else {
        &["visitors", "visits", "bounce_rate", "visit_duration"]
    };
    let request = crate::query::request::QueryRequest {
        site_id: site.to_string(),
        metrics: names.iter().map(|m| (*m).to_string()).collect(),
        date_range: json!([first.to_string(), last.to_string()]),
        dimensions: vec![dimension.to_string()],
        filters: vec![],
        order_by: vec![],
        include: crate::query::request::Include::default(),
        pagination: crate::query::request::Pagination { limit, offset: 0 },
    };
    let answer = crate::query::answer(state, request).await?;
    let rows: Vec<Value> = answer["results"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let mut row = vec![r["dimensions"][0].clone()];
                    row.extend(r["metrics"].as_array().cloned().unwrap_or_default());
                    Value::Array(row)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut columns = vec![json!({"text": dimension, "type": "string"})];
    columns.extend(names.iter().map(|m| json!({"text": m, "type": "number"})));
    Ok(json!({"type": "table", "refId": ref_id, "columns": columns, "rows": rows}))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VariableRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
}

/// `POST /grafana/variable`: values of the `sites` and `polls` dashboard variables.
///
/// # Errors
/// When PostgreSQL fails.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), request_body(content = VariableRequest, content_type = "application/json"), responses((status = 200, description = "Values of the sites and polls variables", body = Vec<super::docs::VariableValue>), (status = 400, description = "The body is not the JSON this route takes"), (status = 401, description = "STATS_TOKEN is set and the request lacks it"), (status = 503, description = "PostgreSQL unavailable (Retry-After)")))]
#[post("/variable")]
pub async fn variable(
    req: web::Json<VariableRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let target = text(&req.payload, "target").unwrap_or("sites");
    let values: Vec<Value> = if target == "polls" {
        rollups::recent_polls(&state.pg, 200)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|(id, q)| json!({"__text": q, "__value": id}))
            .collect()
    } else {
        rollups::sites(&state.pg, 1000)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|s| json!({"__text": s, "__value": s}))
            .collect()
    };
    Ok(HttpResponse::Ok().json(values))
}

/// `POST /grafana/tag-keys`.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), responses((status = 200, description = "Ad hoc filter keys", body = Vec<super::docs::TagKey>), (status = 401, description = "STATS_TOKEN is set and the request lacks it")))]
#[post("/tag-keys")]
pub async fn tag_keys() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!([{"type": "string", "text": "site_id"}, {"type": "string", "text": "poll_id"}]))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TagValuesRequest {
    #[serde(default)]
    key: String,
}

/// `POST /grafana/tag-values`.
///
/// # Errors
/// When PostgreSQL fails.
#[utoipa::path(tag = "grafana", security(("stats_token" = [])), request_body(content = TagValuesRequest, content_type = "application/json"), responses((status = 200, description = "Values of an ad hoc filter key", body = Vec<super::docs::TagValue>), (status = 400, description = "The body is not the JSON this route takes"), (status = 401, description = "STATS_TOKEN is set and the request lacks it"), (status = 503, description = "PostgreSQL unavailable (Retry-After)")))]
#[post("/tag-values")]
pub async fn tag_values(
    req: web::Json<TagValuesRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let values: Vec<Value> = match req.key.as_str() {
        "dimension" => domain::visits::VisitDimension::EVERY
            .iter()
            .filter_map(|d| d.api_name())
            .map(|name| json!({"label": name, "value": name}))
            .collect(),
        "site_id" => rollups::sites(&state.pg, 1000)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|s| json!({"text": s}))
            .collect(),
        "poll_id" => rollups::recent_polls(&state.pg, 200)
            .await
            .map_err(ApiError::from_db)?
            .into_iter()
            .map(|(id, _)| json!({"text": id}))
            .collect(),
        _ => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(values))
}
