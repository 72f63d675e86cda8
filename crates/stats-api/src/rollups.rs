//! Reads from the rollup tables the batch-worker maintains. Nothing here scans raw events.

use chrono::{DateTime, NaiveDate, Utc};
use domain::deadpool_postgres::Pool;
use domain::tokio_postgres::types::{Date, Timestamp, ToSql};
use serde::{Deserialize, Serialize};

/// An inclusive range of UTC days; `None` is open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub first: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
}

impl DayRange {
    pub(crate) fn first_date(&self) -> Date<NaiveDate> {
        self.first.map_or(Date::NegInfinity, Date::Value)
    }
    pub(crate) fn last_date(&self) -> Date<NaiveDate> {
        self.last.map_or(Date::PosInfinity, Date::Value)
    }
    pub(crate) fn start(&self) -> Timestamp<DateTime<Utc>> {
        self.first.map_or(Timestamp::NegInfinity, |d| {
            Timestamp::Value(d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
    }
    pub(crate) fn end(&self) -> Timestamp<DateTime<Utc>> {
        self.last
            .and_then(|d| d.succ_opt())
            .map_or(Timestamp::PosInfinity, |d| {
                Timestamp::Value(d.and_time(chrono::NaiveTime::MIN).and_utc())
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathViews {
    pub path: String,
    pub views: i64,
}

/// Views and top paths of one site over a day range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteTotals {
    pub total_views: i64,
    pub top_paths: Vec<PathViews>,
}

/// Views (events of `event_type`) and top paths of a site; distinct visitors are
/// [`crate::visitors`]'s.
///
/// # Errors
/// When PostgreSQL is unreachable or a query fails.
pub async fn site_totals(
    pool: &Pool,
    site_id: &str,
    event_type: &str,
    range: DayRange,
    limit: i64,
) -> anyhow::Result<SiteTotals> {
    let client = pool.get().await?;
    let total = client.prepare_cached(
        "SELECT coalesce(sum(events), 0)::bigint FROM rollup_hourly
         WHERE site_id = $1 AND event_type = $2 AND bucket >= $3 AND bucket < $4",
    );
    let paths = client.prepare_cached(
        "SELECT path, sum(views)::bigint AS v FROM rollup_daily_paths
         WHERE site_id = $1 AND event_type = $2 AND day >= $3 AND day <= $4
         GROUP BY path ORDER BY v DESC, path ASC LIMIT $5",
    );
    let (total, paths) = tokio::try_join!(total, paths)?;
    let (first, last) = (range.first_date(), range.last_date());
    let (start, end) = (range.start(), range.end());
    let total_params: [&(dyn ToSql + Sync); 4] = [&site_id, &event_type, &start, &end];
    let paths_params: [&(dyn ToSql + Sync); 5] = [&site_id, &event_type, &first, &last, &limit];
    // One connection pipelines the two queries.
    let (total, paths) = tokio::try_join!(
        client.query_one(&total, &total_params),
        client.query(&paths, &paths_params),
    )?;
    Ok(SiteTotals {
        total_views: total.get(0),
        top_paths: paths
            .iter()
            .map(|r| PathViews {
                path: r.get(0),
                views: r.get(1),
            })
            .collect(),
    })
}

/// What a time series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Views,
    Visitors,
    Events,
}

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
}

/// Non-zero buckets of a series, `(bucket start, value)`, in `[from, to)`. `event_type`
/// `None` counts all types.
///
/// # Errors
/// When PostgreSQL is unreachable or a query fails.
pub async fn series(
    pool: &Pool,
    site_id: &str,
    metric: Metric,
    interval: Interval,
    event_type: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<(DateTime<Utc>, i64)>> {
    let client = pool.get().await?;
    // `$2::text IS NULL OR event_type = $2` keeps one statement per shape for both cases.
    let sql = match (metric, interval) {
        (Metric::Views | Metric::Events, Interval::Minute) => {
            "SELECT bucket, sum(events)::bigint FROM rollup_minutely
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2) AND bucket >= $3 AND bucket < $4
             GROUP BY bucket"
        }
        (Metric::Views | Metric::Events, Interval::Hour) => {
            "SELECT bucket, sum(events)::bigint FROM rollup_hourly
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2) AND bucket >= $3 AND bucket < $4
             GROUP BY bucket"
        }
        (Metric::Views | Metric::Events, Interval::Day) => {
            "SELECT date_trunc('day', bucket, 'UTC'), sum(events)::bigint FROM rollup_hourly
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2) AND bucket >= $3 AND bucket < $4
             GROUP BY 1"
        }
        (Metric::Visitors, Interval::Day) => {
            "SELECT (day::timestamp AT TIME ZONE 'UTC'), count(DISTINCT user_id) FROM daily_visitors
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2)
               AND day >= ($3 AT TIME ZONE 'UTC')::date AND day < ($4 AT TIME ZONE 'UTC')::date + 1
             GROUP BY day"
        }
        (Metric::Visitors, Interval::Hour) => {
            "SELECT t, count(DISTINCT user_id) FROM (
                SELECT (day::timestamp AT TIME ZONE 'UTC') + make_interval(hours => h) AS t, user_id
                FROM daily_visitors, generate_series(0, 23) AS h
                WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2)
                  AND day >= ($3 AT TIME ZONE 'UTC')::date AND day < ($4 AT TIME ZONE 'UTC')::date + 1
                  AND hours & (1 << h) <> 0
             ) v WHERE t >= $3 AND t < $4 GROUP BY t"
        }
        (Metric::Visitors, Interval::Minute) => {
            anyhow::bail!("visitors are kept per hour and per day")
        }
    };
    let stmt = client.prepare_cached(sql).await?;
    let rows = client
        .query(&stmt, &[&site_id, &event_type, &from, &to])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A poll's persisted results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollResults {
    pub poll_id: String,
    pub question: String,
    pub options: Vec<OptionVotes>,
    pub total: i64,
    pub closed: bool,
    pub closes_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionVotes {
    pub id: String,
    pub label: String,
    pub votes: i64,
}

/// A poll's definition and persisted counts; `None` when PostgreSQL does not know it yet.
///
/// # Errors
/// When PostgreSQL is unreachable or a query fails.
pub async fn poll_results(pool: &Pool, poll_id: &str) -> anyhow::Result<Option<PollResults>> {
    let client = pool.get().await?;
    let Some(poll) = client
        .query_opt(
            "SELECT question, closes_at, closed_at FROM polls WHERE poll_id = $1 AND question IS NOT NULL",
            &[&poll_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let options: Vec<OptionVotes> = client
        .query(
            "SELECT option_id, coalesce(label, option_id), votes FROM poll_options
             WHERE poll_id = $1 ORDER BY position NULLS LAST, option_id",
            &[&poll_id],
        )
        .await?
        .iter()
        .map(|o| OptionVotes {
            id: o.get(0),
            label: o.get(1),
            votes: o.get(2),
        })
        .collect();
    let closes_at: Option<DateTime<Utc>> = poll.get(1);
    let closed_at: Option<DateTime<Utc>> = poll.get(2);
    Ok(Some(PollResults {
        poll_id: poll_id.to_string(),
        question: poll.get(0),
        total: options.iter().map(|o| o.votes).sum(),
        closed: closed_at.is_some() || closes_at.is_some_and(|t| t <= Utc::now()),
        closes_at,
        options,
    }))
}

/// Sites with data (a loose index scan over the hourly rollup's key: one probe per site).
///
/// # Errors
/// When PostgreSQL fails.
pub async fn sites(pool: &Pool, limit: i64) -> anyhow::Result<Vec<String>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "WITH RECURSIVE s AS (
                (SELECT site_id FROM rollup_hourly ORDER BY site_id LIMIT 1)
                UNION ALL
                SELECT (SELECT r.site_id FROM rollup_hourly r WHERE r.site_id > s.site_id ORDER BY r.site_id LIMIT 1)
                FROM s WHERE s.site_id IS NOT NULL
             )
             SELECT site_id FROM s WHERE site_id IS NOT NULL LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The most recent polls, `(poll_id, question)`.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn recent_polls(pool: &Pool, limit: i64) -> anyhow::Result<Vec<(String, String)>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT poll_id, question FROM polls WHERE question IS NOT NULL ORDER BY created_at DESC NULLS LAST LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
