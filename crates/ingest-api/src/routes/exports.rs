//! `POST /v1/sites/{site_id}/exports` (admin): queues an export job (see `domain::jobs`).
//! Its status, progress stream and download are stats-api's `/v1/jobs/{job_id}...`.
//!
//! The date range is resolved here, in the site's time zone, when the export is asked
//! for: a job asked for "7d" exports those seven days whenever a worker runs it.

use super::sites::{SITE_BODY_LIMIT_BYTES, redis_error};
use super::{client_rate_limit, read_json_body, require_admin};
use crate::error::ApiError;
use crate::sites::SiteLookup;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use domain::date_range;
use domain::jobs::{self, Created, ExportKind, ExportSpec, NewJob};
use domain::local_days::SiteClock;
use domain::poll;
use serde_json::{Value, json};

/// Longest site id (as events have it).
const MAX_SITE_ID_CHARS: usize = 255;

/// An export as asked, checked: every problem is listed.
fn parse_request(body: &[u8]) -> Result<(Value, ExportKind), Vec<String>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| vec![format!("the body is not JSON: {e}")])?;
    let Value::Object(fields) = value else {
        return Err(vec!["the body must be a JSON object".into()]);
    };
    let mut problems = Vec::new();
    for name in fields.keys() {
        if !matches!(name.as_str(), "date_range" | "format" | "kind") {
            problems.push(format!(
                "unknown field {name:?} (an export has date_range, format and kind)"
            ));
        }
    }
    match fields.get("format") {
        None => {}
        Some(Value::String(f)) if f == "csv" => {}
        Some(other) => problems.push(format!("format must be \"csv\", not {other}")),
    }
    let kind = match fields.get("kind") {
        None => ExportKind::Events,
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|_| {
            problems.push(format!("kind must be \"events\" or \"visits\", not {v}"));
            ExportKind::Events
        }),
    };
    let date_range = fields.get("date_range").cloned().unwrap_or_else(|| {
        problems.push(
            "date_range is required (a name such as \"30d\", or [first day, last day])".into(),
        );
        Value::Null
    });
    if problems.is_empty() {
        Ok((date_range, kind))
    } else {
        Err(problems)
    }
}

fn job_body(job_id: &str, state: &str) -> Value {
    json!({
        "job_id": job_id,
        "state": state,
        "status_url": format!("/v1/jobs/{job_id}"),
        "stream_url": format!("/v1/jobs/{job_id}/stream"),
    })
}

fn accepted(job_id: &str, state: &str, replayed: bool) -> HttpResponse {
    let mut res = HttpResponse::Accepted();
    res.insert_header(("Location", format!("/v1/jobs/{job_id}")));
    if replayed {
        res.insert_header(("Idempotent-Replayed", "true"));
    }
    res.json(job_body(job_id, state))
}

/// Queues an export of a site's raw events or visits as CSV (admin). Send an
/// `Idempotency-Key` to make retries safe: the same key (for the same site) returns the
/// same job for 24 hours.
#[utoipa::path(
    tag = "sites",
    security(("admin_token" = [])),
    params(
        ("site_id" = String, Path, description = "The site"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key gets the same job"),
    ),
    request_body(content = super::docs::NewExport, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued (or, for a known Idempotency-Key, the job it created; header `Idempotent-Replayed: true`); `Location` is its status", body = super::docs::ExportAccepted),
        (status = 400, description = "Invalid body, date range or idempotency key; every problem listed", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong admin token", body = super::docs::CodedError),
        (status = 404, description = "Not registered (`site_not_found`; with `SITES_MODE=registered`)", body = super::docs::CodedError),
        (status = 413, description = "Body over 64 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 422, description = "The Idempotency-Key was used for a different export (`idempotency_key_reused`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate, or the client has 3 unfinished exports (`too_many_jobs`); Retry-After", body = super::docs::CodedError),
        (status = 503, description = "Redis unavailable, or the registry being restored (Retry-After)"),
    )
)]
#[post("/v1/sites/{site_id}/exports")]
#[tracing::instrument(name = "post_export", skip_all, fields(site_id = %path))]
pub async fn post_export(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    client_rate_limit(&req, &state)?;
    let site_id = path.into_inner();
    if site_id.is_empty() || site_id.chars().count() > MAX_SITE_ID_CHARS {
        return Err(ApiError::invalid_body(vec![format!(
            "site_id must be 1 to {MAX_SITE_ID_CHARS} characters"
        )]));
    }
    let idempotency_key = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => {
            let key = v.to_str().unwrap_or("");
            poll::check_idempotency_key(key).map_err(|m| ApiError::invalid_body(vec![m]))?;
            Some(key.to_string())
        }
    };
    let body = read_json_body(&req, payload, SITE_BODY_LIMIT_BYTES).await?;
    let (date_range, kind) = parse_request(&body).map_err(ApiError::invalid_body)?;
    let clock = match state.sites.lookup(&site_id) {
        SiteLookup::Known(site) => SiteClock { tz: site.tz() },
        SiteLookup::Restoring
            if state.settings.sites_mode == crate::config::SitesMode::Registered =>
        {
            return Err(ApiError::sites_restoring());
        }
        _ if state.settings.sites_mode == crate::config::SitesMode::Registered => {
            return Err(super::sites::not_found(&site_id));
        }
        _ => SiteClock::utc(),
    };
    let now = Utc::now();
    let range = date_range::resolve(&date_range, clock, now, None)
        .map_err(|e| ApiError::invalid_body(vec![e]))?;
    let spec = ExportSpec {
        site_id: site_id.clone(),
        kind,
        first_day: range.first,
        last_day: range.last,
        start_ms: range.start.timestamp_millis(),
        end_ms: range.end.timestamp_millis(),
    };
    let fingerprint =
        json!({"date_range": date_range, "format": "csv", "kind": kind.as_str()}).to_string();
    let client = domain::http::client_ip(&req, &state.trusted_proxies).map_or_else(
        || "unknown".to_string(),
        |ip| domain::net::limit_key(ip).to_string(),
    );
    let job_id = uuid::Uuid::new_v4().to_string();
    let mut conn = redis.0.clone();
    let keys = state.keys.jobs();
    let created = jobs::create(
        &mut conn,
        &keys,
        &NewJob {
            job_id: &job_id,
            client: &client,
            spec: &spec,
            fingerprint: &fingerprint,
            idempotency_key: idempotency_key.as_deref(),
            now_ms: now.timestamp_millis(),
        },
    )
    .await
    .map_err(redis_error)?;
    match created {
        Created::New(id) => {
            metrics::counter!("ingest_api_exports_total", "outcome" => "created").increment(1);
            Ok(accepted(&id, "queued", false))
        }
        Created::Existing(id) => {
            let record = jobs::get(&mut conn, &keys, &id)
                .await
                .map_err(redis_error)?;
            match record {
                Some(r) if r.fingerprint != fingerprint => {
                    metrics::counter!("ingest_api_exports_total", "outcome" => "key_reused")
                        .increment(1);
                    Err(ApiError::coded(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        vec![format!(
                            "this Idempotency-Key created job {id} for a different export"
                        )],
                    ))
                }
                r => {
                    metrics::counter!("ingest_api_exports_total", "outcome" => "replayed")
                        .increment(1);
                    let state = r.map_or("queued", |r| r.state.as_str());
                    Ok(accepted(&id, state, true))
                }
            }
        }
        Created::Busy(n) => {
            metrics::counter!("ingest_api_exports_total", "outcome" => "too_many").increment(1);
            Err(ApiError::Coded {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "too_many_jobs",
                details: vec![format!(
                    "this client has {n} unfinished exports, the most allowed; wait for one to end"
                )],
                retry_after_s: Some(10),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_and_every_problem_named() {
        let (range, kind) = parse_request(br#"{"date_range": "7d"}"#).expect("valid");
        assert_eq!((range, kind), (json!("7d"), ExportKind::Events));
        let (_, kind) =
            parse_request(br#"{"date_range": "7d", "kind": "visits", "format": "csv"}"#)
                .expect("valid");
        assert_eq!(kind, ExportKind::Visits);
        let problems = parse_request(br#"{"format": "xlsx", "kind": "sessions", "limit": 5}"#)
            .expect_err("bad");
        let all = problems.join("\n");
        for named in ["format", "kind", "limit", "date_range"] {
            assert!(all.contains(named), "{named}: {all}");
        }
        assert!(parse_request(b"[]").is_err());
        assert!(parse_request(b"{").is_err());
    }
}
