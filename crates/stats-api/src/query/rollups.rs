//! Visit queries answered from `visit_rollups` (migrations 0011 and 0012, kept by the
//! worker with the visits; read through `visit_rollup_cells`, which adds the visitors
//! queued for large sketches, migration 0017): a range is whole days of the site's zone,
//! which the day rows are in, and its whole past weeks are also week rows (migration
//! 0019), so a 91-day breakdown merges about 20 rows per value instead of reading every
//! visit; the totals by hour merge the UTC hour rows. Visitors come from the rows' sketches (exact up to
//! [`EXACT_VISITORS_UP_TO`] distinct visitors, 0.8% standard error beyond).
//!
//! A query filtered by one kept dimension is answered from cells too ([`super::pairs`]).
//! Other queries with a filter, with two visit
//! dimensions, by hour and a visit dimension, by a dimension they do not keep (referrer, UTM fields: see
//! `VisitDimension::has_rollup`), with a goal filter, or asking entry or exit pages for
//! more than visits and visitors (`VisitDimension::rollup_counts_visits_only`) reads
//! `visits` instead ([`super::sql`]); so do
//! visitors by exit page (no sketch: see `VisitDimension::has_visitor_sketch`).
//!
//! Goals (migration 0013) have cells of their own: per goal, day and kept dimension, the
//! visits that converted it, their conversions and visitors. They answer the `event:goal`
//! breakdown without filters ([`goal_cells`]), and visit queries filtered to one goal's
//! conversions by at most one kept dimension and a grain of days or longer
//! ([`answer_converted`]); other goal queries read the raw events.
//!
//! [`EXACT_VISITORS_UP_TO`]: domain::visits::EXACT_VISITORS_UP_TO

use super::request::{Dimension, Filter, Metric, TimeGrain};
use chrono::{DateTime, Utc};
use domain::date_range::DayRange;
use domain::visits::{DAY_SPAN, HOUR_SPAN, VisitDimension, WEEK_SPAN, day_bucket};

/// Whether the rollups answer a visit query of these metrics, dimensions and filters.
pub fn answer(metrics: &[Metric], dimensions: &[Dimension], filters: &[Filter]) -> bool {
    let mut visit = None;
    let mut times = 0;
    let mut hours = false;
    for d in dimensions {
        match d {
            Dimension::Visit(v) if visit.is_none() && v.has_rollup() => visit = Some(*v),
            Dimension::Time(grain) => {
                times += 1;
                hours |= *grain == TimeGrain::Hour;
            }
            _ => return false,
        }
    }
    if hours && visit.is_some_and(|v| !v.has_hour_rollup()) {
        return false;
    }
    let visitors = metrics
        .iter()
        .any(|m| matches!(m, Metric::Visitors | Metric::Percentage));
    let counts_only = metrics
        .iter()
        .all(|m| matches!(m, Metric::Visitors | Metric::Visits | Metric::Percentage));
    filters.is_empty()
        && times <= 1
        && (counts_only || visit.is_none_or(|v| !v.rollup_counts_visits_only()))
        && metrics.iter().all(|m| *m != Metric::ConversionRate)
        && !(visitors && visit.is_some_and(|v| !v.has_visitor_sketch()))
}

/// Whether the goal cells answer a visit query of these metrics, dimensions and
/// filters that is filtered to one goal's conversions: visitors, visits and conversion
/// rate, unfiltered otherwise, by at most one kept dimension and a grain of days or more.
pub fn answer_converted(metrics: &[Metric], dimensions: &[Dimension], filters: &[Filter]) -> bool {
    let mut visit = None;
    let mut times = 0;
    for d in dimensions {
        match d {
            Dimension::Visit(v) if visit.is_none() && v.has_rollup() => visit = Some(*v),
            Dimension::Time(grain) if *grain != TimeGrain::Hour => times += 1,
            _ => return false,
        }
    }
    let visitors = metrics
        .iter()
        .any(|m| matches!(m, Metric::Visitors | Metric::ConversionRate));
    filters.is_empty()
        && times <= 1
        && metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors | Metric::Visits | Metric::ConversionRate
            )
        })
        && !(visitors && visit.is_some_and(|v| !v.has_visitor_sketch()))
}

/// The day rows of `range` (days of the site's zone, the zone its rollups are in), as
/// `[first bucket, bucket after the last)`.
pub fn day_rows(range: &DayRange) -> (DateTime<Utc>, DateTime<Utc>) {
    let after = range.last.succ_opt().unwrap_or(range.last);
    (day_bucket(range.first), day_bucket(after))
}

/// The rows of dimension `code` covering the range: its day rows (`days`, placeholders of
/// [`day_rows`]; whole weeks from week rows unless `by_day`, see [`range_cells`]), or with
/// `hours` the totals' UTC hours over `[$2, $3)` (a chart by hour).
pub fn cells(code: i16, days: (&str, &str), hours: bool, by_day: bool) -> String {
    if hours {
        return format!(
            "SELECT * FROM visit_rollup_cells WHERE site_id = $1 AND dimension = {code} \
             AND span_hours = {HOUR_SPAN} AND bucket >= $2 AND bucket < $3"
        );
    }
    range_cells(&format!("dimension = {code}"), days, by_day)
}

/// Dimension `d`'s rows over the range (`days`, placeholders of [`day_rows`]; whole
/// weeks from week rows unless `by_day`), and those of goal `goal`'s cells (a
/// placeholder): a converted visit query's rows.
pub fn converted_cells(d: VisitDimension, goal: &str, days: (&str, &str), by_day: bool) -> String {
    range_cells(
        &format!(
            "dimension IN ({}, {}) AND (goal_id IS NULL OR goal_id = {goal})",
            d.code(),
            d.goal_code()
        ),
        days,
        by_day,
    )
}

/// The rows of the totals of the goals `ids` (placeholders, with their `names`) over
/// the range (whole weeks from week rows unless `by_day`), each with its goal's name as
/// `goal`: the `event:goal` breakdown's rows.
pub fn goal_cells(ids: &str, names: &str, days: (&str, &str), by_day: bool) -> String {
    format!(
        "SELECT r.*, g.name AS goal FROM ({}) r \
         JOIN unnest({ids}::text[], {names}::text[]) AS g(id, name) ON r.goal_id = g.id",
        range_cells(
            &format!("dimension = {}", VisitDimension::All.goal_code()),
            days,
            by_day
        )
    )
}

/// The cells matching `condition` (on the dimension and goal) whose rows cover the days
/// `[first, last)` (placeholders of [`day_rows`]) of site `$1`: the week rows (migration
/// 0019) of the range's whole weeks that are built and up to date, when they are
/// consecutive, and the day rows before and after them; with `by_day` (a grouping by
/// day, which week rows cannot answer) the day rows alone. Either way the same sums and
/// the same visitors (a week row is its days' sums and sketch union), from a seventh of
/// the rows over long ranges.
pub fn range_cells(condition: &str, days: (&str, &str), by_day: bool) -> String {
    let (first, last) = days;
    let base = format!("SELECT * FROM visit_rollup_cells WHERE site_id = $1 AND {condition}");
    if by_day {
        return format!(
            "{base} AND span_hours = {DAY_SPAN} AND bucket >= {first} AND bucket < {last}"
        );
    }
    format!(
        "WITH {} \
         {base} AND span_hours = {WEEK_SPAN} \
             AND bucket >= (SELECT lo FROM cover) AND bucket < (SELECT hi FROM cover) \
         UNION ALL {base} AND span_hours = {DAY_SPAN} \
             AND bucket >= {first} AND bucket < (SELECT lo FROM cover) \
         UNION ALL {base} AND span_hours = {DAY_SPAN} \
             AND bucket >= (SELECT hi FROM cover) AND bucket < {last}",
        week_cover(days)
    )
}

/// The CTEs `built` and `cover`: `cover` holds the buckets `[lo, hi)` of the run of whole
/// weeks of the range `days` ([`day_rows`] placeholders) that are built and up to date
/// (`lo` = `hi` = the range's end when they are none or not consecutive).
pub(super) fn week_cover(days: (&str, &str)) -> String {
    let (first, last) = days;
    format!(
        "built AS ( \
             SELECT count(*) AS n, min(week) AS lo, max(week) + interval '{WEEK_SPAN} hours' AS hi \
             FROM visit_rollup_weeks WHERE site_id = $1 AND generation = built_generation \
               AND week >= {first} AND week + interval '{WEEK_SPAN} hours' <= {last}), \
         cover AS ( \
             SELECT CASE WHEN whole THEN lo ELSE {last} END AS lo, \
                    CASE WHEN whole THEN hi ELSE {last} END AS hi \
             FROM (SELECT *, n > 0 AND extract(epoch FROM hi - lo) = n * {WEEK_SECONDS} AS whole \
                   FROM built) b)"
    )
}

/// The page rows (`page_day_rollups`' columns) of site `$1` covering the range `days`
/// ([`day_rows`] placeholders): the page week rows (migration 0021) of the range's whole
/// weeks that are built and up to date, and the day rows around them; with `by_day` the
/// day rows alone. The same sums either way (a week row is its seven days' sum), from
/// about a fifth of the rows over 91 days.
pub fn page_rows(days: (&str, &str), by_day: bool) -> String {
    let (first, last) = days;
    let date = |bucket: &str| format!("({bucket} AT TIME ZONE 'UTC')::date");
    let (first_day, last_day) = (date(first), date(last));
    let base = "SELECT * FROM page_day_rollups WHERE site_id = $1";
    if by_day {
        return format!("{base} AND day >= {first_day} AND day < {last_day}");
    }
    let (lo, hi) = (date("lo"), date("hi"));
    format!(
        "WITH {} \
         SELECT site_id, event_type, week AS day, path_key, path, views FROM page_week_rollups \
             WHERE site_id = $1 AND week >= (SELECT {lo} FROM cover) AND week < (SELECT {hi} FROM cover) \
         UNION ALL {base} AND day >= {first_day} AND day < (SELECT {lo} FROM cover) \
         UNION ALL {base} AND day >= (SELECT {hi} FROM cover) AND day < {last_day}",
        week_cover(days)
    )
}

/// Seconds in a week row's span.
const WEEK_SECONDS: i64 = WEEK_SPAN as i64 * 3600;

/// The distinct visitors of the rows aggregated.
pub const VISITORS: &str = "coalesce(hll_cardinality(hll_union_agg(visitors)), 0)";

/// The SQL of metric `m` over rollup rows (as the visits table's metrics compute it).
pub fn metric_expr(m: Metric) -> String {
    match m {
        Metric::Visitors => format!("round({VISITORS})::float8"),
        Metric::Visits => "coalesce(sum(visits), 0)::float8".into(),
        Metric::Pageviews => "coalesce(sum(pageviews), 0)::float8".into(),
        Metric::Events => "coalesce(sum(events), 0)::float8".into(),
        Metric::ViewsPerVisit => {
            "coalesce(round(sum(pageviews)::numeric / nullif(sum(visits), 0), 2), 0)::float8".into()
        }
        Metric::BounceRate => {
            "coalesce(round(100.0 * sum(bounces) / nullif(sum(visits), 0)), 0)::float8".into()
        }
        Metric::VisitDuration => {
            "coalesce(round(sum(duration_us)::numeric / 1000000 / nullif(sum(visits), 0)), 0)::float8"
                .into()
        }
        Metric::Percentage => format!(
            "coalesce(round(100.0 * round({VISITORS})::numeric / nullif((SELECT n FROM total), 0), 1), 0)::float8"
        ),
        // Refused by [`answer`].
        Metric::ConversionRate => "0::float8".into(),
    }
}

/// Converted visitors and all visitors of [`converted_cells`] rows.
const CONVERTED_VISITORS: &str =
    "coalesce(hll_cardinality(hll_union_agg(visitors) FILTER (WHERE goal_id IS NOT NULL)), 0)";
const ALL_VISITORS: &str =
    "coalesce(hll_cardinality(hll_union_agg(visitors) FILTER (WHERE goal_id IS NULL)), 0)";

/// The SQL of metric `m` over [`converted_cells`] rows (as a goal-filtered query of
/// `visits` computes it).
pub fn converted_metric_expr(m: Metric) -> String {
    match m {
        Metric::Visitors => format!("round({CONVERTED_VISITORS})::float8"),
        Metric::Visits => {
            "coalesce(sum(visits) FILTER (WHERE goal_id IS NOT NULL), 0)::float8".into()
        }
        Metric::ConversionRate => format!(
            "coalesce(round(100.0 * round({CONVERTED_VISITORS})::numeric \
             / nullif(round({ALL_VISITORS})::numeric, 0), 2), 0)::float8"
        ),
        // Refused by [`answer_converted`].
        _ => "0::float8".into(),
    }
}

/// The groups of a converted breakdown: those with a conversion.
pub const CONVERTED_GROUPS: &str =
    " HAVING coalesce(sum(visits) FILTER (WHERE goal_id IS NOT NULL), 0) > 0";

/// The SQL of metric `m` over [`goal_cells`] rows, `total` the range's visitors.
pub fn goal_metric_expr(m: Metric) -> String {
    match m {
        Metric::Visitors => format!("round({VISITORS})::float8"),
        Metric::Events => "coalesce(sum(events), 0)::float8".into(),
        Metric::ConversionRate => format!(
            "coalesce(round(100.0 * round({VISITORS})::numeric / nullif((SELECT n FROM total), 0), 2), 0)::float8"
        ),
        // Not available with event:goal (see sql::supports).
        _ => "0::float8".into(),
    }
}

/// Whether a query groups by time: its rows must be days (or hours), never weeks.
pub fn groups_by_time(dimensions: &[Dimension]) -> bool {
    dimensions.iter().any(|d| matches!(d, Dimension::Time(_)))
}

/// The visit dimension a rollup query groups by (`All` when none).
pub fn dimension_of(dimensions: &[Dimension]) -> VisitDimension {
    dimensions
        .iter()
        .find_map(|d| match d {
            Dimension::Visit(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(VisitDimension::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn day_rows_are_the_ranges_dates() {
        let range = DayRange {
            first: "2026-01-01".parse().expect("date"),
            last: "2026-01-03".parse().expect("date"),
            start: t("2025-12-31T23:00:00Z"),
            end: t("2026-01-03T23:00:00Z"),
        };
        assert_eq!(
            day_rows(&range),
            (t("2026-01-01T00:00:00Z"), t("2026-01-04T00:00:00Z"))
        );
    }

    #[test]
    fn rollups_answer_unfiltered_single_dimension_queries_only() {
        let source = Dimension::Visit(VisitDimension::Source);
        let exit = Dimension::Visit(VisitDimension::ExitPage);
        assert!(answer(&[Metric::Visitors, Metric::BounceRate], &[], &[]));
        assert!(answer(
            &[Metric::Visitors],
            std::slice::from_ref(&source),
            &[]
        ));
        assert!(answer(&[Metric::Visits], std::slice::from_ref(&exit), &[]));
        assert!(!answer(
            &[Metric::Visits, Metric::BounceRate],
            std::slice::from_ref(&exit),
            &[]
        ));
        assert!(!answer(&[Metric::Visitors], &[exit], &[]));
        assert!(!answer(
            &[Metric::Visits],
            &[Dimension::Visit(VisitDimension::UtmSource)],
            &[]
        ));
        assert!(!answer(
            &[Metric::Visits],
            &[source.clone(), Dimension::Visit(VisitDimension::Country)],
            &[]
        ));
        let hour = Dimension::Time(TimeGrain::Hour);
        assert!(answer(
            &[Metric::Visitors],
            std::slice::from_ref(&hour),
            &[]
        ));
        assert!(!answer(&[Metric::Visitors], &[source, hour], &[]));
    }

    #[test]
    fn goal_cells_answer_one_kept_dimension_by_days_without_filters() {
        let source = Dimension::Visit(VisitDimension::Source);
        let entry = Dimension::Visit(VisitDimension::EntryPage);
        let day = Dimension::Time(TimeGrain::Day);
        let rate = [Metric::Visitors, Metric::Visits, Metric::ConversionRate];
        assert!(answer_converted(&rate, &[], &[]));
        assert!(answer_converted(&rate, &[source.clone(), day.clone()], &[]));
        assert!(answer_converted(
            &[Metric::Visits],
            std::slice::from_ref(&entry),
            &[]
        ));
        assert!(!answer_converted(&rate, &[entry], &[]));
        assert!(!answer_converted(
            &rate,
            &[Dimension::Time(TimeGrain::Hour)],
            &[]
        ));
        assert!(!answer_converted(&[Metric::BounceRate], &[], &[]));
        assert!(!answer_converted(
            &rate,
            &[source, Dimension::Visit(VisitDimension::Country)],
            &[]
        ));
    }
}
