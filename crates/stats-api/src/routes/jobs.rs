//! Jobs (exports): `GET /v1/jobs/{job_id}` (state and progress), `GET
//! /v1/jobs/{job_id}/stream` (the same as Server-Sent Events, until the job ends) and
//! `GET /v1/jobs/{job_id}/download` (the CSV, streamed part by part from PostgreSQL).
//!
//! The live status is the job's Redis record (see `domain::jobs`); when Redis has lost
//! it, what the worker recorded in PostgreSQL answers. Readable with the stats token or
//! the admin token (the admin asked for the export).

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::http::header::{AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_web_lab::sse::{self, Sse};
use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::jobs::{self, ExportKind, ExportSpec, JobState};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Progress streams one process holds open at once.
const MAX_STREAMS: usize = 1_000;
/// How often a stream looks at its job.
const STREAM_POLL: Duration = Duration::from_millis(250);
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Requires the stats token or the admin token (either, when the stats token is set).
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = &state.settings.stats_token;
    if token.is_empty() {
        return Ok(());
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if domain::auth::bearer_matches(header, token)
        || domain::auth::bearer_matches(header, &state.settings.admin_token)
    {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no job {raw:?}")))
}

/// A job as answers show it.
#[derive(Debug, Clone, PartialEq)]
struct JobView {
    job_id: String,
    site_id: String,
    spec: Option<ExportSpec>,
    state: JobState,
    attempts: u32,
    completed: u64,
    total: u64,
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

fn ms_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl JobView {
    fn from_record(r: jobs::JobRecord) -> Self {
        Self {
            job_id: r.job_id,
            site_id: r.site_id,
            spec: r.spec,
            state: r.state,
            attempts: r.attempt,
            completed: r.completed,
            total: r.total,
            created_at: ms_time(Some(r.created_at_ms)),
            started_at: ms_time(r.started_at_ms),
            finished_at: ms_time(r.finished_at_ms),
            expires_at: ms_time(r.expires_at_ms),
            error: r.error,
        }
    }

    /// Percent done: completed over total (the total counted when the job was planned,
    /// corrected as pages are written), 100 once done.
    fn progress(&self) -> f64 {
        match self.state {
            JobState::Done => 100.0,
            _ if self.total == 0 => 0.0,
            _ => {
                let pct = self.completed as f64 * 100.0 / self.total as f64;
                (pct.min(99.9) * 10.0).floor() / 10.0
            }
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "job_id": self.job_id,
            "type": "export",
            "site_id": self.site_id,
            "state": self.state.as_str(),
            "progress": self.progress(),
            "completed": self.completed,
            "total": self.total,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
        });
        if let Some(spec) = &self.spec {
            v["export"] = json!({
                "kind": spec.kind.as_str(),
                "format": "csv",
                "date_range": [spec.first_day, spec.last_day],
            });
        }
        if self.state == JobState::Done {
            v["download_url"] = json!(format!("/v1/jobs/{}/download", self.job_id));
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// The job from Redis, or from PostgreSQL when Redis has lost it.
async fn find(state: &AppState, id: Uuid) -> Result<Option<JobView>, ApiError> {
    let keys = state.keys.jobs();
    let record = jobs::get(&mut state.redis.clone(), &keys, &id.to_string())
        .await
        .map_err(|e| ApiError::Unavailable(anyhow::Error::new(e).context("the job's record")))?;
    if let Some(r) = record {
        return Ok(Some(JobView::from_record(r)));
    }
    stored(state, id).await
}

async fn stored(state: &AppState, id: Uuid) -> Result<Option<JobView>, ApiError> {
    let client = state
        .pg
        .get()
        .await
        .context("a PostgreSQL connection")
        .map_err(ApiError::from_db)?;
    let row = client
        .query_opt(
            "SELECT site_id, spec, state, attempt, completed, total, created_at, finished_at, expires_at, error \
             FROM export_jobs WHERE job_id = $1 AND (expires_at IS NULL OR expires_at > now())",
            &[&id],
        )
        .await
        .context("the stored job")
        .map_err(ApiError::from_db)?;
    Ok(row.map(|r| {
        let state: String = r.get(2);
        JobView {
            job_id: id.to_string(),
            site_id: r.get(0),
            spec: serde_json::from_value(r.get(1)).ok(),
            state: JobState::parse(&state).unwrap_or(JobState::Running),
            attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
            completed: u64::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            total: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            // The row is made by the worker that first claimed the job: its start. When
            // the job was asked for, only Redis knew.
            created_at: None,
            started_at: r.get(6),
            finished_at: r.get(7),
            expires_at: r.get(8),
            error: r.get(9),
        }
    }))
}

fn not_found(raw: &str) -> ApiError {
    ApiError::NotFound(format!("no job {raw:?} (results are kept 24 hours)"))
}

/// A job's state and progress.
#[utoipa::path(
    tag = "jobs",
    security(("stats_token" = []), ("admin_token" = [])),
    params(("job_id" = String, Path, description = "The job, as `POST /v1/sites/{site_id}/exports` answered")),
    responses(
        (status = 200, description = "`{job_id, type, site_id, state: queued|running|done|failed, progress (percent), completed, total (rows), attempts, created_at, started_at, finished_at, expires_at, export: {kind, format, date_range}, download_url (done), error (failed)}`", body = super::docs::JobStatus),
        (status = 401, description = "STATS_TOKEN is set and the request has neither it nor the admin token"),
        (status = 404, description = "No such job, or its results expired"),
        (status = 503, description = "Redis or PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/jobs/{job_id}")]
pub async fn get_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let id = parse_id(&path)?;
    let job = find(&state, id).await?.ok_or_else(|| not_found(&path))?;
    Ok(HttpResponse::Ok().json(job.json()))
}

/// Holds one of the process's stream slots.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Option<Self> {
        let open = OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        if open >= MAX_STREAMS {
            OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("stats_api_job_streams_refused_total").increment(1);
            return None;
        }
        metrics::gauge!("stats_api_job_streams_open").increment(1.0);
        Some(Self)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("stats_api_job_streams_open").decrement(1.0);
    }
}

/// A job's progress as Server-Sent Events: `progress` whenever it moves (the id is the
/// rows completed, which only grow), then `done` or `failed`, and the stream ends.
#[utoipa::path(
    tag = "jobs",
    security(("stats_token" = []), ("admin_token" = [])),
    params(("job_id" = String, Path, description = "The job")),
    responses(
        (status = 200, description = "`text/event-stream`: events `progress`, then `done` or `failed`, each with the job's status as `GET /v1/jobs/{job_id}` answers it", content_type = "text/event-stream", body = String),
        (status = 401, description = "STATS_TOKEN is set and the request has neither it nor the admin token"),
        (status = 404, description = "No such job, or its results expired"),
        (status = 503, description = "Redis unavailable, or too many streams open (Retry-After)"),
    )
)]
#[get("/jobs/{job_id}/stream")]
pub async fn stream_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<impl actix_web::Responder, ApiError> {
    authorize(&req, &state)?;
    let id = parse_id(&path)?;
    let first = find(&state, id).await?.ok_or_else(|| not_found(&path))?;
    let slot = StreamSlot::take().ok_or_else(|| {
        ApiError::Unavailable(anyhow::anyhow!("{MAX_STREAMS} job streams are open"))
    })?;
    let st = (state, id, Some(first), None::<JobView>, slot, false);
    let events = futures_util::stream::unfold(st, |mut st| async move {
        let (ref state, id, ref mut next, ref mut last, _, ref mut ended) = st;
        if *ended {
            return None;
        }
        let job = loop {
            let job = match next.take() {
                Some(job) => job,
                None => {
                    tokio::time::sleep(STREAM_POLL).await;
                    match find(state, id).await {
                        Ok(Some(job)) => job,
                        // Gone (expired) or unreadable now: the client reconnects.
                        Ok(None) | Err(_) => return None,
                    }
                }
            };
            let moved = last.as_ref().is_none_or(|l| {
                (l.state, l.completed, l.total) != (job.state, job.completed, job.total)
            });
            if moved {
                break job;
            }
        };
        let name = match job.state {
            JobState::Done => "done",
            JobState::Failed => "failed",
            _ => "progress",
        };
        *ended = job.state.is_final();
        let event = sse::Data::new(job.json().to_string())
            .event(name)
            .id(job.completed.to_string())
            .into();
        *last = Some(job);
        Some((Ok::<_, std::convert::Infallible>(event), st))
    });
    Ok(Sse::from_stream(events).with_keep_alive(Duration::from_secs(15)))
}

/// A finished export's CSV (header line first), streamed.
#[utoipa::path(
    tag = "jobs",
    security(("stats_token" = []), ("admin_token" = [])),
    params(("job_id" = String, Path, description = "The job")),
    responses(
        (status = 200, description = "`text/csv`, with `Content-Length` and a file name (`Content-Disposition`)", content_type = "text/csv", body = String),
        (status = 401, description = "STATS_TOKEN is set and the request has neither it nor the admin token"),
        (status = 404, description = "No such job, or its results expired"),
        (status = 409, description = "The job has not finished (or failed): no file"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/jobs/{job_id}/download")]
pub async fn download_job(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let id = parse_id(&path)?;
    let job = stored(&state, id).await?.ok_or_else(|| not_found(&path))?;
    if job.state != JobState::Done {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}: it has no file",
            job.state.as_str()
        )));
    }
    let kind = job.spec.as_ref().map_or(ExportKind::Events, |s| s.kind);
    let file_name = job
        .spec
        .as_ref()
        .map_or_else(|| format!("{id}.csv"), ExportSpec::file_name);
    let client = state
        .pg
        .get()
        .await
        .context("a PostgreSQL connection")
        .map_err(ApiError::from_db)?;
    let parts: Vec<(i32, i32, i64)> = client
        .query(
            "SELECT page, part, octet_length(data)::bigint FROM export_parts \
             WHERE site_id = $1 AND job_id = $2 ORDER BY page, part",
            &[&job.site_id, &id],
        )
        .await
        .context("the export's parts")
        .map_err(ApiError::from_db)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    drop(client);
    let header = kind.csv_header();
    let length = header.len() as u64 + parts.iter().map(|p| p.2.max(0) as u64).sum::<u64>();
    let head =
        futures_util::stream::once(
            async move { Ok::<_, actix_web::Error>(web::Bytes::from(header)) },
        );
    let pg = state.pg.clone();
    let site_id = job.site_id.clone();
    let body = futures_util::StreamExt::then(
        futures_util::stream::iter(parts),
        move |(page, part, _)| {
            let (pg, site_id) = (pg.clone(), site_id.clone());
            async move {
                let client = pg
                    .get()
                    .await
                    .map_err(actix_web::error::ErrorServiceUnavailable)?;
                let row = client
                    .query_one(
                        "SELECT data FROM export_parts WHERE site_id = $1 AND job_id = $2 AND page = $3 AND part = $4",
                        &[&site_id, &id, &page, &part],
                    )
                    .await
                    .map_err(actix_web::error::ErrorServiceUnavailable)?;
                Ok(web::Bytes::from(row.get::<_, Vec<u8>>(0)))
            }
        },
    );
    let disposition = format!("attachment; filename=\"{file_name}\"");
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            CONTENT_DISPOSITION,
            HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
        ))
        .no_chunking(length)
        .streaming(futures_util::StreamExt::chain(head, body)))
}
