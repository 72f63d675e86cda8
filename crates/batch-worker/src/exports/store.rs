//! An export's PostgreSQL side: its plan and progress (`export_jobs`), its CSV parts
//! (`export_parts`), each page read with `COPY ... TO STDOUT (FORMAT csv)` (PostgreSQL
//! formats the rows, on its own core) and written in one transaction with the progress.

use super::parts::Splitter;
use super::plan::{self, Page};
use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::jobs::{Claimed, ExportKind};
use futures_util::{StreamExt, pin_mut};
use uuid::Uuid;

/// Statements of an export may take longer than the service's usual statement timeout (a
/// plan counts years of rows; a page may be a busy hour).
const EXPORT_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = '15min'";

/// Per kind: rows per hour, and the rows (their columns in the order of
/// [`ExportKind::columns`]) with `%L` for the site and the range's ends. Times are UTC as
/// PostgreSQL prints them (`2026-12-05 13:20:00.123456`): `to_char` into RFC 3339 cost a
/// fifth of the export's speed. Rows are in time order only: ordering ties by id too
/// made PostgreSQL sort every page (half again the time), where the index gives time
/// order for free.
struct Source {
    hour_counts: &'static str,
    copy: &'static str,
}

fn source(kind: ExportKind) -> Source {
    match kind {
        ExportKind::Events => Source {
            hour_counts: "SELECT (extract(epoch FROM date_trunc('hour', ts)) * 1000)::bigint, count(*) \
                          FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3 GROUP BY 1 ORDER BY 1",
            copy: "COPY (SELECT event_id, ts AT TIME ZONE 'UTC', \
                   event_type, user_id, path, hostname, referrer, referrer_source, utm_source, utm_medium, \
                   utm_campaign, utm_term, utm_content, device, browser, os, country, props \
                   FROM events WHERE site_id = %L AND ts >= %L AND ts < %L ORDER BY ts) \
                   TO STDOUT (FORMAT csv)",
        },
        ExportKind::Visits => Source {
            hour_counts: "SELECT (extract(epoch FROM date_trunc('hour', started_at)) * 1000)::bigint, count(*) \
                          FROM visits WHERE site_id = $1 AND started_at >= $2 AND started_at < $3 \
                          GROUP BY 1 ORDER BY 1",
            copy: "COPY (SELECT visitor, started_at AT TIME ZONE 'UTC', ended_at AT TIME ZONE 'UTC', \
                   round(extract(epoch FROM ended_at - started_at)::numeric, 3), events, pageviews, \
                   CASE WHEN pageviews = 1 THEN 'true' ELSE 'false' END, entry_page, exit_page, \
                   hostname, referrer, source, utm_source, utm_medium, utm_campaign, utm_term, \
                   utm_content, device, browser, os, country \
                   FROM visits WHERE site_id = %L AND started_at >= %L AND started_at < %L \
                   ORDER BY started_at) TO STDOUT (FORMAT csv)",
        },
    }
}

/// Where a job stands in PostgreSQL.
#[derive(Debug, Clone)]
pub struct Progress {
    pub plan: Vec<Page>,
    pub pages_done: usize,
    pub completed: u64,
    pub total: u64,
    pub state: String,
    pub error: Option<String>,
}

fn at(ms: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).context("a time outside the calendar")
}

fn job_uuid(job: &Claimed) -> anyhow::Result<Uuid> {
    Uuid::parse_str(&job.job_id).context("a job id that is not a UUID")
}

/// The job's plan and progress: planned now by its first attempt, read back by later
/// ones, and fenced to this attempt (`None`: a later attempt holds the job).
///
/// # Errors
/// When PostgreSQL fails.
pub async fn begin(pg: &Pool, job: &Claimed, page_rows: u64) -> anyhow::Result<Option<Progress>> {
    let id = job_uuid(job)?;
    let site = &job.spec.site_id;
    let mut client = pg.get().await.context("a PostgreSQL connection")?;
    let fenced = client
        .execute(
            "UPDATE export_jobs SET attempt = $3 WHERE site_id = $1 AND job_id = $2 AND attempt < $3",
            &[site, &id, &i32::try_from(job.attempt).unwrap_or(i32::MAX)],
        )
        .await
        .context("fencing the job")?;
    if fenced == 0 {
        let exists = client
            .query_opt(
                "SELECT 1 FROM export_jobs WHERE site_id = $1 AND job_id = $2",
                &[site, &id],
            )
            .await?
            .is_some();
        if exists {
            return Ok(None);
        }
        let pages = plan_pages(&mut client, job, page_rows).await?;
        let total: i64 = pages.iter().map(|p| p.rows).sum();
        client
            .execute(
                "INSERT INTO export_jobs (site_id, job_id, kind, spec, plan, attempt, total) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    site,
                    &id,
                    &job.spec.kind.as_str(),
                    &serde_json::to_value(&job.spec)?,
                    &serde_json::to_value(&pages)?,
                    &i32::try_from(job.attempt).unwrap_or(i32::MAX),
                    &total,
                ],
            )
            .await
            .context("recording the plan")?;
    }
    let row = client
        .query_one(
            "SELECT plan, pages_done, completed, total, state, error, attempt FROM export_jobs \
             WHERE site_id = $1 AND job_id = $2",
            &[site, &id],
        )
        .await
        .context("reading the plan")?;
    let attempt: i32 = row.get(6);
    if i64::from(attempt) != i64::from(job.attempt) {
        return Ok(None);
    }
    let plan: Vec<Page> = serde_json::from_value(row.get(0)).context("the stored plan")?;
    Ok(Some(Progress {
        plan,
        pages_done: usize::try_from(row.get::<_, i32>(1)).unwrap_or(0),
        completed: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        total: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
        state: row.get(4),
        error: row.get(5),
    }))
}

async fn plan_pages(
    client: &mut domain::deadpool_postgres::Object,
    job: &Claimed,
    page_rows: u64,
) -> anyhow::Result<Vec<Page>> {
    let (start, end) = (at(job.spec.start_ms)?, at(job.spec.end_ms)?);
    let tx = client.transaction().await?;
    tx.batch_execute(EXPORT_STATEMENT_TIMEOUT).await?;
    let hours: Vec<(i64, i64)> = tx
        .query(
            source(job.spec.kind).hour_counts,
            &[&job.spec.site_id, &start, &end],
        )
        .await
        .context("counting the rows per hour")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    tx.commit().await?;
    Ok(plan::pages(
        &hours,
        job.spec.start_ms,
        job.spec.end_ms,
        i64::try_from(page_rows).unwrap_or(i64::MAX),
    ))
}

/// What writing one page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOutcome {
    /// Committed, with this many rows and bytes.
    Written { rows: u64, bytes: u64 },
    /// Not committed: a later attempt holds the job.
    Lost,
}

/// Reads page `index` and writes its parts and the job's progress in one transaction.
///
/// # Errors
/// When PostgreSQL fails; nothing of the page is committed then.
pub async fn write_page(
    pg: &Pool,
    job: &Claimed,
    index: usize,
    page: Page,
    part_bytes: usize,
) -> anyhow::Result<PageOutcome> {
    let id = job_uuid(job)?;
    let site = &job.spec.site_id;
    let page_no = i32::try_from(index).context("too many pages")?;
    let mut reader = pg.get().await.context("a PostgreSQL connection")?;
    let mut writer = pg.get().await.context("a PostgreSQL connection")?;
    let read = reader.transaction().await?;
    read.batch_execute(EXPORT_STATEMENT_TIMEOUT).await?;
    // PostgreSQL quotes the literals (%L): COPY takes no parameters.
    let statement: String = read
        .query_one(
            "SELECT format($1, $2::text, $3::timestamptz, $4::timestamptz)",
            &[
                &source(job.spec.kind).copy,
                site,
                &at(page.start_ms)?,
                &at(page.end_ms)?,
            ],
        )
        .await?
        .get(0);
    let write = writer.transaction().await?;
    write.batch_execute(EXPORT_STATEMENT_TIMEOUT).await?;
    let insert = write
        .prepare(
            "INSERT INTO export_parts (site_id, job_id, page, part, rows, data) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    let stream = read
        .copy_out(statement.as_str())
        .await
        .context("COPY out")?;
    pin_mut!(stream);
    let mut splitter = Splitter::new(part_bytes);
    let (mut part_no, mut rows, mut bytes) = (0_i32, 0_u64, 0_u64);
    loop {
        let chunk = stream
            .next()
            .await
            .transpose()
            .context("reading the page")?;
        let part = match &chunk {
            Some(data) => splitter.push(data),
            None => std::mem::replace(&mut splitter, Splitter::new(1)).finish(),
        };
        if let Some(part) = part {
            let part_rows = i32::try_from(part.rows).unwrap_or(i32::MAX);
            write
                .execute(
                    &insert,
                    &[site, &id, &page_no, &part_no, &part_rows, &part.data],
                )
                .await
                .context("writing a part")?;
            part_no += 1;
            rows += part.rows;
            bytes += part.data.len() as u64;
        }
        if chunk.is_none() {
            break;
        }
    }
    read.commit().await?;
    let moved = write
        .execute(
            "UPDATE export_jobs SET pages_done = $3 + 1, completed = completed + $4, bytes = bytes + $5 \
             WHERE site_id = $1 AND job_id = $2 AND pages_done = $3 AND attempt = $6",
            &[
                site,
                &id,
                &page_no,
                &i64::try_from(rows).unwrap_or(i64::MAX),
                &i64::try_from(bytes).unwrap_or(i64::MAX),
                &i32::try_from(job.attempt).unwrap_or(i32::MAX),
            ],
        )
        .await?;
    if moved == 0 {
        write.rollback().await?;
        return Ok(PageOutcome::Lost);
    }
    write.commit().await.context("committing the page")?;
    Ok(PageOutcome::Written { rows, bytes })
}

/// Records how the job ended (kept 24 h); `false` when a later attempt holds it.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn finish(pg: &Pool, job: &Claimed, error: Option<&str>) -> anyhow::Result<bool> {
    let id = job_uuid(job)?;
    let client = pg.get().await.context("a PostgreSQL connection")?;
    let n = client
        .execute(
            "UPDATE export_jobs SET state = $3, error = $4, total = CASE WHEN $4::text IS NULL \
             THEN completed ELSE total END, finished_at = now(), expires_at = now() + interval '24 hours' \
             WHERE site_id = $1 AND job_id = $2 AND attempt = $5",
            &[
                &job.spec.site_id,
                &id,
                &if error.is_some() { "failed" } else { "done" },
                &error,
                &i32::try_from(job.attempt).unwrap_or(i32::MAX),
            ],
        )
        .await
        .context("recording the end of the job")?;
    Ok(n == 1)
}

/// Deletes exports whose results have expired (their parts go with them). Returns how
/// many.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn delete_expired(pg: &Pool) -> anyhow::Result<u64> {
    let client = pg.get().await.context("a PostgreSQL connection")?;
    Ok(client
        .execute("DELETE FROM export_jobs WHERE expires_at < now()", &[])
        .await?)
}
