//! Reads from the rollup tables the batch-worker maintains. Nothing here scans raw events.

use crate::local_time::{PgBounds, SiteClock, Span};
use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use domain::deadpool_postgres::Pool;
use domain::tokio_postgres::types::ToSql;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathViews {
    pub path: String,
    pub views: i64,
}

/// Views and top paths of one site over a span of hours.
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
    span: Span,
    limit: i64,
) -> anyhow::Result<SiteTotals> {
    let client = pool.get().await?;
    let total = client.prepare_cached(
        "SELECT coalesce(sum(events), 0)::bigint FROM rollup_hourly
         WHERE site_id = $1 AND event_type = $2 AND bucket >= $3 AND bucket < $4",
    );
    let paths = client.prepare_cached(
        "SELECT path, sum(views)::bigint AS v FROM rollup_hourly_paths
         WHERE site_id = $1 AND event_type = $2 AND bucket >= $3 AND bucket < $4
         GROUP BY path ORDER BY v DESC, path ASC LIMIT $5",
    );
    let (total, paths) = tokio::try_join!(total, paths)?;
    let (start, end) = span.pg_bounds();
    let total_params: [&(dyn ToSql + Sync); 4] = [&site_id, &event_type, &start, &end];
    let paths_params: [&(dyn ToSql + Sync); 5] = [&site_id, &event_type, &start, &end, &limit];
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

/// Non-zero buckets of a series, `(bucket start, value)`, in `[from, to)` (hour-aligned
/// for hours and days). Days are the site's local days (see [`crate::local_time`]), each
/// labelled by its first UTC hour. `event_type` `None` counts all types.
///
/// # Errors
/// When PostgreSQL is unreachable or a query fails.
#[allow(clippy::too_many_arguments)]
pub async fn series(
    pool: &Pool,
    site_id: &str,
    metric: Metric,
    interval: Interval,
    event_type: Option<&str>,
    clock: SiteClock,
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
        (Metric::Views | Metric::Events, Interval::Hour | Interval::Day) => {
            "SELECT bucket, sum(events)::bigint FROM rollup_hourly
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2) AND bucket >= $3 AND bucket < $4
             GROUP BY bucket"
        }
        (Metric::Visitors, Interval::Day) if clock.is_utc() => {
            "SELECT (day::timestamp AT TIME ZONE 'UTC'), count(DISTINCT user_id COLLATE \"C\") FROM daily_visitors
             WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2)
               AND day >= ($3 AT TIME ZONE 'UTC')::date AND day < ($4 AT TIME ZONE 'UTC')::date + 1
             GROUP BY day"
        }
        (Metric::Visitors, Interval::Day) => {
            return local_daily_visitors(&client, site_id, event_type, clock, from, to).await;
        }
        (Metric::Visitors, Interval::Hour) => {
            "SELECT t, count(DISTINCT user_id COLLATE \"C\") FROM (
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
    let rows = rows.iter().map(|r| (r.get(0), r.get(1)));
    if interval == Interval::Day && metric != Metric::Visitors {
        // Hours into the local days they belong to.
        let mut days: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        for (hour, n) in rows {
            *days.entry(clock.day_of_hour(hour)).or_default() += n;
        }
        return Ok(days
            .into_iter()
            .map(|(d, n)| (clock.day_start(d), n))
            .collect());
    }
    Ok(rows.collect())
}

/// Distinct visitors per local day of a site not on UTC. Each UTC day of `daily_visitors`
/// splits between two local days at an hour that depends on the day (DST): each row counts
/// for the local day of the earlier hours it was seen in, and for the next one if it was
/// also seen after the split.
async fn local_daily_visitors(
    client: &domain::deadpool_postgres::Client,
    site_id: &str,
    event_type: Option<&str>,
    clock: SiteClock,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<(DateTime<Utc>, i64)>> {
    let (first_day, last_day) = (from.date_naive(), (to - TimeDelta::hours(1)).date_naive());
    let (mut days, mut splits, mut firsts) = (Vec::new(), Vec::new(), Vec::new());
    let mut day = first_day;
    while day <= last_day {
        let midnight = day.and_time(chrono::NaiveTime::MIN).and_utc();
        let first_local = clock.day_of_hour(midnight);
        let split = (0..24)
            .take_while(|h| clock.day_of_hour(midnight + TimeDelta::hours(*h)) == first_local)
            .count() as i32;
        days.push(day);
        splits.push(split);
        firsts.push(first_local);
        day = match day.checked_add_days(Days::new(1)) {
            Some(d) => d,
            None => break,
        };
    }
    let stmt = client
        .prepare_cached(
            "WITH b AS (SELECT * FROM unnest($5::date[], $6::int[], $7::date[]) AS b(day, split, first_local))
             SELECT local_day, count(DISTINCT user_id COLLATE \"C\") FROM (
                SELECT b.first_local AS local_day, v.user_id
                FROM daily_visitors v JOIN b ON b.day = v.day
                WHERE v.site_id = $1 AND ($2::text IS NULL OR v.event_type = $2)
                  AND v.day >= $3 AND v.day <= $4 AND v.hours & ((1 << b.split) - 1) <> 0
                UNION ALL
                SELECT b.first_local + 1, v.user_id
                FROM daily_visitors v JOIN b ON b.day = v.day
                WHERE v.site_id = $1 AND ($2::text IS NULL OR v.event_type = $2)
                  AND v.day >= $3 AND v.day <= $4 AND b.split < 24
                  AND v.hours & ~((1 << b.split) - 1) <> 0
             ) x GROUP BY local_day",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &site_id,
                &event_type,
                &first_day,
                &last_day,
                &days,
                &splits,
                &firsts,
            ],
        )
        .await?;
    let (first_local, last_local) = (
        clock.day_of(from),
        clock.day_of(to - TimeDelta::microseconds(1)),
    );
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, NaiveDate>(0), r.get::<_, i64>(1)))
        .filter(|(d, _)| *d >= first_local && *d <= last_local)
        .map(|(d, n)| (clock.day_start(d), n))
        .collect())
}

/// A poll's persisted results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PollResults {
    pub poll_id: String,
    pub question: String,
    pub options: Vec<OptionVotes>,
    /// Voters (one vote each; the options of a multi-choice poll sum to more).
    pub total: i64,
    pub closed: bool,
    pub closes_at: Option<DateTime<Utc>>,
    pub settings: domain::poll::PollSettings,
    /// Set while the poll's settings hide per-option counts (`votes` is then absent).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionVotes {
    pub id: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub votes: Option<i64>,
}

/// A poll's definition and persisted counts; `None` when PostgreSQL does not know it yet.
///
/// # Errors
/// When PostgreSQL is unreachable or a query fails.
pub async fn poll_results(pool: &Pool, poll_id: &str) -> anyhow::Result<Option<PollResults>> {
    let client = pool.get().await?;
    let Some(poll) = client
        .query_opt(
            "SELECT question, closes_at, closed_at, min_choices, max_choices, results,
                    allow_change, voters
             FROM polls WHERE poll_id = $1 AND question IS NOT NULL",
            &[&poll_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let (min, max): (i16, i16) = (poll.get(3), poll.get(4));
    let (results, allow_change, voters): (String, bool, String) =
        (poll.get(5), poll.get(6), poll.get(7));
    let settings = domain::poll::PollSettings::from_fields(|field| match field {
        "min_choices" => Some(min.to_string()),
        "max_choices" => Some(max.to_string()),
        "results" => Some(results.clone()),
        "allow_change" => Some(if allow_change { "1" } else { "0" }.to_string()),
        "voters" => Some(voters.clone()),
        _ => None,
    });
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
            votes: Some(o.get(2)),
        })
        .collect();
    let closes_at: Option<DateTime<Utc>> = poll.get(1);
    let closed_at: Option<DateTime<Utc>> = poll.get(2);
    let closed = closed_at.is_some() || closes_at.is_some_and(|t| t <= Utc::now());
    // One option per voter: the counts sum to the voters. Otherwise count the voters.
    let total: i64 = if settings.max_choices <= 1 {
        options.iter().filter_map(|o| o.votes).sum()
    } else {
        client
            .query_one("SELECT count(*) FROM votes WHERE poll_id = $1", &[&poll_id])
            .await?
            .get(0)
    };
    let hidden = !settings.results_public(closed);
    let options = if hidden {
        options
            .into_iter()
            .map(|o| OptionVotes { votes: None, ..o })
            .collect()
    } else {
        options
    };
    Ok(Some(PollResults {
        poll_id: poll_id.to_string(),
        question: poll.get(0),
        total,
        closed,
        closes_at,
        settings,
        hidden,
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
