//! Jobs (today: exports), the job-status pattern of `seeds/002`: ingest-api creates a job
//! (with an idempotency key, within a per-client cap) and queues it; a batch-worker claims
//! it under a lease that its heartbeat renews, reporting progress; stats-api reads its
//! status. A worker that dies stops renewing: once its lease has run out, any worker's
//! reaper queues the job again (or fails it after [`MAX_ATTEMPTS`]), and the next worker
//! resumes it from what the dead one committed. Every step is one script on the `{jobs}`
//! hash tag (see [`crate::keys`]), so a cluster runs them too.
//!
//! The record in Redis is the job's live status; its results (and a copy of its state)
//! are in PostgreSQL, written by the worker.

use crate::keys::JobKeys;
use chrono::NaiveDate;
use redis::aio::ConnectionLike;
use redis::{AsyncCommands, RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/job_create.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/job_claim.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/job_renew.lua")));
static END: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/job_end.lua")));

/// Unfinished (queued or running) jobs one client may have.
pub const MAX_ACTIVE_PER_CLIENT: u32 = 3;
/// How long a finished job and its results are kept, and an idempotency key remembered.
pub const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Attempts (claims) of a job before one more lost worker fails it.
pub const MAX_ATTEMPTS: u32 = 5;

/// What an export holds: raw events, or visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    #[default]
    Events,
    Visits,
}

impl ExportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Visits => "visits",
        }
    }

    /// The CSV's columns, in order (the worker writes the rows, stats-api the header).
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Events => &[
                "event_id",
                "timestamp",
                "name",
                "visitor_id",
                "path",
                "hostname",
                "referrer",
                "source",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "device",
                "browser",
                "os",
                "country",
                "props",
            ],
            Self::Visits => &[
                "visitor_id",
                "started_at",
                "ended_at",
                "duration_s",
                "events",
                "pageviews",
                "bounce",
                "entry_page",
                "exit_page",
                "hostname",
                "referrer",
                "source",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
                "device",
                "browser",
                "os",
                "country",
            ],
        }
    }

    /// The CSV header line, newline included.
    pub fn csv_header(self) -> String {
        let mut line = self.columns().join(",");
        line.push('\n');
        line
    }
}

/// An export as the worker runs it: the range is resolved when the job is created, so a
/// job asked for "7d" exports the seven days before it was asked, whenever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSpec {
    pub site_id: String,
    pub kind: ExportKind,
    /// The site's local days, first and last, inclusive.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// The UTC instants `[start, end)` those days span, epoch ms.
    pub start_ms: i64,
    pub end_ms: i64,
}

impl ExportSpec {
    /// The CSV's file name.
    pub fn file_name(&self) -> String {
        let safe: String = self
            .site_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        format!(
            "{safe}-{}-{}-{}.csv",
            self.kind.as_str(),
            self.first_day,
            self.last_day
        )
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub job_id: &'a str,
    /// Whose cap it counts against.
    pub client: &'a str,
    pub spec: &'a ExportSpec,
    /// The request as asked (a retry with the same idempotency key must ask the same).
    pub fingerprint: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub now_ms: i64,
}

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Queued under this id.
    New(String),
    /// The idempotency key names this job already.
    Existing(String),
    /// The client has this many unfinished jobs, the most allowed.
    Busy(u32),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Creates and queues a job (see `job_create.lua`).
///
/// # Errors
/// When Redis is unreachable or the spec does not serialise.
pub async fn create<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    job: &NewJob<'_>,
) -> RedisResult<Created> {
    let spec = serde_json::to_string(job.spec)
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Client, "spec", e.to_string())))?;
    let idem_key = job.idempotency_key.map_or_else(
        || keys.idempotency(&job.spec.site_id, job.job_id),
        |k| keys.idempotency(&job.spec.site_id, k),
    );
    let (what, id): (String, String) = CREATE
        .key(idem_key)
        .key(keys.job(job.job_id))
        .key(&keys.queue)
        .key(&keys.active)
        .key(&keys.active_count)
        .arg(job.job_id)
        .arg(job.client)
        .arg(MAX_ACTIVE_PER_CLIENT)
        .arg(ms(RESULT_TTL))
        .arg(if job.idempotency_key.is_some() {
            "1"
        } else {
            "0"
        })
        .arg("job_id")
        .arg(job.job_id)
        .arg("kind")
        .arg("export")
        .arg("site_id")
        .arg(&job.spec.site_id)
        .arg("client")
        .arg(job.client)
        .arg("spec")
        .arg(spec)
        .arg("fingerprint")
        .arg(job.fingerprint)
        .arg("state")
        .arg(JobState::Queued.as_str())
        .arg("attempt")
        .arg(0)
        .arg("completed")
        .arg(0)
        .arg("total")
        .arg(0)
        .arg("created_at_ms")
        .arg(job.now_ms)
        .invoke_async(conn)
        .await?;
    Ok(match what.as_str() {
        "existing" => Created::Existing(id),
        "busy" => Created::Busy(id.parse().unwrap_or(MAX_ACTIVE_PER_CLIENT)),
        _ => Created::New(id),
    })
}

/// A job's record as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job_id: String,
    pub site_id: String,
    pub client: String,
    pub spec: Option<ExportSpec>,
    pub fingerprint: String,
    pub state: JobState,
    pub attempt: u32,
    pub completed: u64,
    pub total: u64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub error: Option<String>,
}

impl JobRecord {
    fn from_fields(mut f: HashMap<String, String>) -> Option<Self> {
        let state = JobState::parse(f.get("state")?)?;
        fn int<T: std::str::FromStr>(f: &HashMap<String, String>, k: &str) -> Option<T> {
            f.get(k).and_then(|v| v.parse().ok())
        }
        Some(Self {
            state,
            attempt: int(&f, "attempt").unwrap_or(0),
            completed: int(&f, "completed").unwrap_or(0),
            total: int(&f, "total").unwrap_or(0),
            created_at_ms: int(&f, "created_at_ms").unwrap_or(0),
            started_at_ms: int(&f, "started_at_ms"),
            finished_at_ms: int(&f, "finished_at_ms"),
            expires_at_ms: int(&f, "expires_at_ms"),
            spec: f.get("spec").and_then(|s| serde_json::from_str(s).ok()),
            job_id: f.remove("job_id").unwrap_or_default(),
            site_id: f.remove("site_id").unwrap_or_default(),
            client: f.remove("client").unwrap_or_default(),
            fingerprint: f.remove("fingerprint").unwrap_or_default(),
            error: f.remove("error"),
        })
    }
}

/// Job `job_id`'s record, if Redis has it.
///
/// # Errors
/// When Redis is unreachable.
pub async fn get<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    job_id: &str,
) -> RedisResult<Option<JobRecord>> {
    let fields: HashMap<String, String> = conn.hgetall(keys.job(job_id)).await?;
    Ok(JobRecord::from_fields(fields))
}

/// A job a worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub job_id: String,
    /// Which claim of the job this is (1 for the first); the fence of every later step.
    pub attempt: u32,
    pub spec: ExportSpec,
}

/// Claims the oldest queued job, if any, under a lease of `lease`.
///
/// # Errors
/// When Redis is unreachable.
pub async fn claim<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    worker_id: &str,
    lease: Duration,
    now_ms: i64,
) -> RedisResult<Option<Claimed>> {
    // Several workers may look at the same oldest job; the script lets one claim it and
    // the others look again.
    for _ in 0..8 {
        let oldest: Vec<String> = conn.lrange(&keys.queue, -1, -1).await?;
        let Some(job_id) = oldest.into_iter().next() else {
            return Ok(None);
        };
        let claimed: Option<(u32, Option<String>)> = CLAIM
            .key(&keys.queue)
            .key(&keys.leases)
            .key(keys.job(&job_id))
            .arg(&job_id)
            .arg(worker_id)
            .arg(now_ms)
            .arg(ms(lease))
            .invoke_async(conn)
            .await?;
        let Some((attempt, spec)) = claimed else {
            continue;
        };
        match spec.as_deref().map(serde_json::from_str::<ExportSpec>) {
            Some(Ok(spec)) => {
                return Ok(Some(Claimed {
                    job_id,
                    attempt,
                    spec,
                }));
            }
            _ => {
                let ended = Ended {
                    state: JobState::Failed,
                    completed: None,
                    total: None,
                    error: Some("the job's specification is unreadable"),
                };
                end(conn, keys, &job_id, attempt, &ended, now_ms).await?;
            }
        }
    }
    Ok(None)
}

/// Renews a running job's lease and records its progress. `false`: the job is no longer
/// this attempt's (its lease ran out and it was taken back); stop working on it.
///
/// # Errors
/// When Redis is unreachable.
pub async fn renew<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    job: &Claimed,
    lease: Duration,
    completed: u64,
    total: u64,
    now_ms: i64,
) -> RedisResult<bool> {
    let held: i64 = RENEW
        .key(&keys.leases)
        .key(keys.job(&job.job_id))
        .arg(&job.job_id)
        .arg(job.attempt)
        .arg(now_ms)
        .arg(ms(lease))
        .arg(completed)
        .arg(total)
        .invoke_async(conn)
        .await?;
    Ok(held == 1)
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended<'a> {
    pub state: JobState,
    pub completed: Option<u64>,
    pub total: Option<u64>,
    pub error: Option<&'a str>,
}

fn end_invocation<'a>(
    keys: &JobKeys,
    job_id: &str,
    attempt: &str,
    ended: &Ended<'_>,
    now_ms: i64,
    invocation: &'a mut redis::ScriptInvocation<'static>,
) -> &'a mut redis::ScriptInvocation<'static> {
    invocation
        .key(&keys.leases)
        .key(keys.job(job_id))
        .key(&keys.queue)
        .key(&keys.active)
        .key(&keys.active_count)
        .arg(job_id)
        .arg(attempt)
        .arg(now_ms)
        .arg(ended.state.as_str())
        .arg(ended.completed.map(|c| c.to_string()).unwrap_or_default())
        .arg(ended.total.map(|c| c.to_string()).unwrap_or_default())
        .arg(ended.error.unwrap_or(""))
        .arg(ms(RESULT_TTL))
}

/// Ends a job this attempt holds. `false`: it is not this attempt's (any more).
///
/// # Errors
/// When Redis is unreachable.
pub async fn end<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    job_id: &str,
    attempt: u32,
    ended: &Ended<'_>,
    now_ms: i64,
) -> RedisResult<bool> {
    let mut invocation = END.prepare_invoke();
    let done: i64 = end_invocation(
        keys,
        job_id,
        &attempt.to_string(),
        ended,
        now_ms,
        &mut invocation,
    )
    .invoke_async(conn)
    .await?;
    Ok(done == 1)
}

/// What [`reap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs queued again for another worker.
    pub requeued: usize,
    /// Jobs failed after [`MAX_ATTEMPTS`] lost workers.
    pub failed: usize,
}

/// Takes back the jobs whose lease ran out (their worker died or stalled): each is queued
/// again, or failed once it has had [`MAX_ATTEMPTS`].
///
/// # Errors
/// When Redis is unreachable.
pub async fn reap<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &JobKeys,
    now_ms: i64,
) -> RedisResult<Reaped> {
    let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.leases)
        .arg("-inf")
        .arg(now_ms)
        .arg("LIMIT")
        .arg(0)
        .arg(100)
        .query_async(conn)
        .await?;
    let mut reaped = Reaped::default();
    let error = format!("its worker stopped answering {MAX_ATTEMPTS} times");
    for job_id in expired {
        let ended = Ended {
            state: JobState::Failed,
            completed: None,
            total: None,
            error: Some(&error),
        };
        let mut invocation = END.prepare_invoke();
        let outcome: i64 = end_invocation(keys, &job_id, "reap", &ended, now_ms, &mut invocation)
            .arg(MAX_ATTEMPTS)
            .invoke_async(conn)
            .await?;
        match outcome {
            1 => reaped.failed += 1,
            2 => reaped.requeued += 1,
            _ => {}
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_short_visible_ascii() {
        // Jobs take the keys votes take (one rule, in `poll::check_idempotency_key`).
        let valid = |k: &str| crate::poll::check_idempotency_key(k).is_ok();
        assert!(valid("export-2026-12-05"));
        assert!(!valid(""));
        assert!(!valid("has space"));
        assert!(!valid("naïve"));
        assert!(!valid(&"k".repeat(256)));
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        let spec = ExportSpec {
            site_id: "a b/../c.com".into(),
            kind: ExportKind::Visits,
            first_day: NaiveDate::from_ymd_opt(2026, 1, 1).expect("day"),
            last_day: NaiveDate::from_ymd_opt(2026, 1, 31).expect("day"),
            start_ms: 0,
            end_ms: 1,
        };
        assert_eq!(
            spec.file_name(),
            "a_b_.._c.com-visits-2026-01-01-2026-01-31.csv"
        );
    }

    #[test]
    fn headers_name_every_column_once() {
        for kind in [ExportKind::Events, ExportKind::Visits] {
            let cols = kind.columns();
            let mut sorted = cols.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), cols.len());
            assert!(kind.csv_header().ends_with('\n'));
        }
    }
}
