//! Visit queries answered from `visit_rollups` (migration 0011, kept by the worker with
//! the visits): the range's whole UTC days from the day rows, its other hours from the
//! hour rows, so a 90-day breakdown merges about 90 rows per value instead of reading
//! every visit. Visitors come from the rows' sketches (exact up to
//! [`EXACT_VISITORS_UP_TO`] distinct visitors, 0.8% standard error beyond).
//!
//! Rollups have no cross-dimension cells, so a query with a filter, with two visit
//! dimensions, by a dimension they do not keep (referrer, UTM fields: see
//! `VisitDimension::has_rollup`), with a goal filter, or asking entry or exit pages for
//! more than visits and visitors (`VisitDimension::rollup_counts_visits_only`) reads
//! `visits` instead ([`super::sql`]); so do
//! visitors by exit page (no sketch: see `VisitDimension::has_visitor_sketch`).
//!
//! [`EXACT_VISITORS_UP_TO`]: domain::visits::EXACT_VISITORS_UP_TO

use super::request::{Dimension, Filter, Metric};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use domain::visits::VisitDimension;

/// Whether the rollups answer a visit query of these metrics, dimensions and filters.
pub fn answer(metrics: &[Metric], dimensions: &[Dimension], filters: &[Filter]) -> bool {
    let mut visit = None;
    let mut times = 0;
    for d in dimensions {
        match d {
            Dimension::Visit(v) if visit.is_none() && v.has_rollup() => visit = Some(*v),
            Dimension::Time(_) => times += 1,
            _ => return false,
        }
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

/// The whole UTC days of `[start, end)`, as `[first midnight, last midnight)`; an empty
/// range at `start` when there is none.
pub fn whole_days(start: DateTime<Utc>, end: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = TimeDelta::days(1);
    let floor = |t: DateTime<Utc>| t.duration_trunc(day).unwrap_or(t);
    let first = if floor(start) == start {
        start
    } else {
        floor(start) + day
    };
    let last = floor(end);
    if first < last {
        (first, last)
    } else {
        (start, start)
    }
}

/// The rows of dimension `code` covering `[$2, $3)`: day rows over `[days.0, days.1)`
/// (placeholders), hour rows over the rest. `hours_only`: hour rows over all of it (a
/// time dimension needs the hours).
pub fn cells(code: i16, days: (&str, &str), hours_only: bool) -> String {
    let (first, last) = days;
    let base = format!("SELECT * FROM visit_rollups WHERE site_id = $1 AND dimension = {code}");
    if hours_only {
        return format!("{base} AND span_hours = 1 AND bucket >= $2 AND bucket < $3");
    }
    format!(
        "{base} AND span_hours = 24 AND bucket >= {first} AND bucket < {last} \
         UNION ALL {base} AND span_hours = 1 AND bucket >= $2 AND bucket < {first} \
         UNION ALL {base} AND span_hours = 1 AND bucket >= {last} AND bucket < $3"
    )
}

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
    fn whole_days_are_the_utc_midnights_inside_the_range() {
        assert_eq!(
            whole_days(t("2026-01-01T05:00:00Z"), t("2026-01-04T05:00:00Z")),
            (t("2026-01-02T00:00:00Z"), t("2026-01-04T00:00:00Z"))
        );
        assert_eq!(
            whole_days(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")),
            (t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"))
        );
        // A day in UTC+5: no whole UTC day inside.
        let start = t("2026-01-01T19:00:00Z");
        assert_eq!(whole_days(start, t("2026-01-02T19:00:00Z")), (start, start));
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
            &[source, Dimension::Visit(VisitDimension::Country)],
            &[]
        ));
    }
}
