//! Simple filters on the stored dimensions of events (`?browser=Firefox&country=DE`): the
//! stats and the time series of only the matching events.
//!
//! The rollups are kept per site, type, hour and path, not per every dimension (that is
//! the query API's job), so a filtered answer counts the raw events of the range through
//! the `(site_id, ts)` index, exactly. That is cheap only for small ranges, so it is
//! refused past `FILTER_MAX_EVENTS` events (the rollups say how many a range holds before
//! anything is scanned), and refused where retention has already deleted raw events that
//! the rollups still count (the answer would silently be short).

use crate::error::ApiError;
use crate::local_time::{PgBounds, SiteClock, Span};
use chrono::{DateTime, NaiveDate, Utc};
use domain::deadpool_postgres::Client;
use domain::tokio_postgres::types::ToSql;

/// Query parameter → stored column. The columns are fixed here: SQL is built from this
/// list only, values are always parameters.
pub const DIMENSIONS: &[(&str, &str)] = &[
    ("path", "path"),
    ("hostname", "hostname"),
    ("source", "referrer_source"),
    ("referrer", "referrer"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("utm_term", "utm_term"),
    ("utm_content", "utm_content"),
    ("browser", "browser"),
    ("os", "os"),
    ("device", "device"),
    ("country", "country"),
];

/// Longest filter value.
const MAX_VALUE_CHARS: usize = 1000;

/// `column = value` conditions, all of which an event must meet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(Vec<(&'static str, String)>);

impl Filters {
    /// The filters among a request's query parameters.
    ///
    /// # Errors
    /// 400 for an over-long value or one holding a NUL.
    pub fn from_query<'q>(
        params: impl IntoIterator<Item = (&'q str, &'q str)>,
    ) -> Result<Self, ApiError> {
        let mut out = Vec::new();
        for (name, value) in params {
            let Some((_, column)) = DIMENSIONS.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if value.chars().count() > MAX_VALUE_CHARS || value.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be at most {MAX_VALUE_CHARS} characters, without NUL"
                )));
            }
            out.push((*column, value.to_string()));
        }
        out.sort();
        out.dedup();
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable, unambiguous text of the filters, for cache signatures and answers.
    pub fn signature(&self) -> String {
        let pairs: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(c, v)| ((*c).to_string(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::Value::Object(pairs).to_string()
    }

    /// ` AND col = $n ...` with parameters numbered from `first`.
    fn sql(&self, first: usize) -> String {
        self.0
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!(" AND {column} = ${}", first + i))
            .collect()
    }

    fn values(&self) -> impl Iterator<Item = &(dyn ToSql + Sync)> {
        self.0.iter().map(|(_, v)| v as &(dyn ToSql + Sync))
    }
}

/// Refuses a filtered answer over `span` unless its raw events are few and all still
/// stored.
///
/// # Errors
/// 400 past `max_events`, 422 when raw events of the span have expired; PostgreSQL
/// failures as 503.
pub async fn check_scannable(
    client: &Client,
    site_id: &str,
    span: Span,
    max_events: i64,
) -> Result<(), ApiError> {
    let (start, end) = span.pg_bounds();
    let counted: i64 = client
        .query_one(
            "SELECT coalesce(sum(events), 0)::bigint FROM rollup_hourly
             WHERE site_id = $1 AND bucket >= $2 AND bucket < $3",
            &[&site_id, &start, &end],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?
        .get(0);
    if counted > max_events {
        return Err(ApiError::BadRequest(format!(
            "filters are answered from raw events, and this range holds {counted} of them, more than FILTER_MAX_EVENTS ({max_events}): narrow the range"
        )));
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE site_id = $1 AND ts >= $2 AND ts < $3",
            &[&site_id, &start, &end],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?
        .get(0);
    if stored < counted {
        return Err(ApiError::Unprocessable(format!(
            "{} of the {counted} events of this range have expired (EVENTS_RETENTION_DAYS), so filters cannot be applied to it",
            counted - stored
        )));
    }
    Ok(())
}

/// Views and distinct visitors of `event_type` among the matching events.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn totals(
    client: &Client,
    site_id: &str,
    event_type: &str,
    span: Span,
    filters: &Filters,
    limit: i64,
) -> anyhow::Result<(i64, i64, Vec<(String, i64)>)> {
    let (start, end) = span.pg_bounds();
    let head: [&(dyn ToSql + Sync); 4] = [&site_id, &event_type, &start, &end];
    let mut params: Vec<&(dyn ToSql + Sync)> = head.to_vec();
    params.extend(filters.values());
    let matching = format!(
        "FROM events WHERE site_id = $1 AND event_type = $2 AND ts >= $3 AND ts < $4{}",
        filters.sql(5)
    );
    let row = client
        .query_one(
            &format!("SELECT count(*), count(DISTINCT user_id COLLATE \"C\") {matching}"),
            &params,
        )
        .await?;
    params.push(&limit);
    let paths = client
        .query(
            &format!(
                "SELECT path, count(*) AS v {matching} AND path IS NOT NULL
                 GROUP BY path ORDER BY v DESC, path ASC LIMIT ${}",
                params.len()
            ),
            &params,
        )
        .await?;
    Ok((
        row.get(0),
        row.get(1),
        paths.iter().map(|r| (r.get(0), r.get(1))).collect(),
    ))
}

/// A filtered series, as [`crate::rollups::series`] answers it: `unit` is `minute`,
/// `hour` or `day` (the site's local days, by the hour each event is in); `visitors`
/// counts distinct users instead of events.
///
/// # Errors
/// When PostgreSQL fails.
#[allow(clippy::too_many_arguments)]
pub async fn series(
    client: &Client,
    site_id: &str,
    event_type: Option<&str>,
    unit: &str,
    visitors: bool,
    clock: SiteClock,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> anyhow::Result<Vec<(DateTime<Utc>, i64)>> {
    let value = if visitors {
        "count(DISTINCT user_id COLLATE \"C\")"
    } else {
        "count(*)"
    };
    let zone = clock.tz.name();
    let head: [&(dyn ToSql + Sync); 5] = [&site_id, &event_type, &from, &to, &zone];
    let mut params: Vec<&(dyn ToSql + Sync)> = head.to_vec();
    params.extend(filters.values());
    let bucket = match unit {
        "minute" => "date_trunc('minute', ts)",
        "hour" => "date_trunc('hour', ts)",
        // The local day of the hour's midpoint, as the rollup answers count it.
        _ => {
            "((date_trunc('hour', ts) + interval '30 minutes') AT TIME ZONE $5)::date::timestamp AT TIME ZONE 'UTC'"
        }
    };
    let rows = client
        .query(
            &format!(
                "SELECT {bucket} AS b, {value} FROM events
                 WHERE site_id = $1 AND ($2::text IS NULL OR event_type = $2) AND ts >= $3 AND ts < $4
                   AND $5::text IS NOT NULL{}
                 GROUP BY b",
                filters.sql(6)
            ),
            &params,
        )
        .await?;
    let rows = rows
        .iter()
        .map(|r| (r.get::<_, DateTime<Utc>>(0), r.get(1)));
    if unit == "day" {
        // Day rows come back as the local date at UTC midnight; label them like the
        // rollup answers, by the day's first hour.
        return Ok(rows
            .map(|(d, n): (DateTime<Utc>, i64)| {
                let day: NaiveDate = d.date_naive();
                (clock.day_start(day), n)
            })
            .collect());
    }
    Ok(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_dimensions_become_conditions_in_a_stable_order() {
        let f = Filters::from_query([
            ("country", "DE"),
            ("site_id", "s"),
            ("browser", "Firefox"),
            ("country", "DE"),
        ])
        .expect("valid");
        assert_eq!(f.signature(), r#"{"browser":"Firefox","country":"DE"}"#);
        let one = Filters::from_query([("browser", "Firefox&country=DE")]).expect("valid");
        assert_ne!(one.signature(), f.signature(), "one filter is not two");
        assert_eq!(f.sql(5), " AND browser = $5 AND country = $6");
        assert!(Filters::from_query([("os", "a\0b")]).is_err());
        assert!(
            Filters::from_query([("limit", "5")])
                .expect("valid")
                .is_empty()
        );
    }
}
