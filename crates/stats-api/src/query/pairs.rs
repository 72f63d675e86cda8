//! Visit queries filtered by one kept dimension, answered without reading every visit of
//! the range (the dashboard after a click: the sources of mobile visits, the visitors per
//! day from Google).
//!
//! Every visit has exactly one value of each dimension, so a filter that reads only
//! dimension X (any operators, `and`, `or`, `not`) selects whole cells of X:
//!
//! - Grouped by nothing, by days or longer, or by X itself: X's own cells (day rows, and
//!   week rows of built weeks, [`super::rollups::range_cells`]), those whose value passes
//!   the filter. Kept live by the drain, so the range's last days cost nothing more.
//! - Grouped by another kept dimension Y: the pair week cells of X and Y (migration 0022,
//!   built with the sealed weeks) for the range's built weeks, the pair day cells
//!   (migration 0024, built for each sealed day) for its other built days, and for the
//!   days left the range's visits aggregated into rows of the same shape (same sums,
//!   sketches of the same hashes), so the answer is the one the visits give. The days left
//!   are those not sealed yet (today, and yesterday until 13:00 UTC) and any a late event
//!   changed since their build; of those, the hours with pair hour cells (migration 0025,
//!   built for each sealed hour of the last two days) are read from them, so the visits
//!   read are those of the last three or four hours instead of up to 37.
//!
//! Either way the rows expose X's (and Y's) values under the `visits` column names, so
//! the filter and the dimensions are the SQL they are over `visits`, and the metrics those
//! of the rollups ([`super::rollups::metric_expr`]): visitors from sketches, exact up to
//! [`domain::visits::EXACT_VISITORS_UP_TO`].

use super::request::{Dimension, Filter, Metric, TimeGrain};
use super::rollups;
use domain::visits::VisitDimension;

/// How a filtered visit query is answered from cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairing {
    /// The one dimension the filters read.
    pub filter: VisitDimension,
    /// The breakdown's dimension when it is another one (pair cells); `None` reads the
    /// filter dimension's own cells.
    pub breakdown: Option<VisitDimension>,
}

/// How cells answer a visit query with these metrics, dimensions and filters, if they do:
/// filters on one paired dimension only, at most one visit dimension (paired), and a
/// grain of days or longer, only without a second dimension.
pub fn answer(metrics: &[Metric], dimensions: &[Dimension], filters: &[Filter]) -> Option<Pairing> {
    let mut read = Vec::new();
    filters.iter().for_each(|f| f.dimensions(&mut read));
    let filter = match read.first()? {
        Dimension::Visit(x) if x.has_pair_rollup() => *x,
        _ => return None,
    };
    if read.iter().any(|d| *d != Dimension::Visit(filter)) {
        return None;
    }
    let mut visit = None;
    let mut times = 0;
    for d in dimensions {
        match d {
            Dimension::Visit(v) if visit.is_none() && v.has_pair_rollup() => visit = Some(*v),
            Dimension::Time(grain) if *grain != TimeGrain::Hour => times += 1,
            _ => return None,
        }
    }
    let breakdown = visit.filter(|v| *v != filter);
    // Pair cells are whole weeks: no grouping by time beside another dimension.
    let fits = times == 0 || (times == 1 && breakdown.is_none());
    (fits && !metrics.contains(&Metric::ConversionRate)).then_some(Pairing { filter, breakdown })
}

/// The sums and sketch of a cell, in the order of the rows below.
const SUMS: &str = "visits, pageviews, events, bounces, duration_us, visitors";

/// The rows answering `pairing` over the range: `days` ([`rollups::day_rows`]
/// placeholders), `filter` the filters' SQL over the `visits` column names, `by_day` for
/// a grouping by time. Each row holds the filter dimension's value
/// (and the breakdown's) under its `visits` column name, `bucket` (day rows only), and
/// [`SUMS`].
pub fn rows(pairing: Pairing, days: (&str, &str), filter: &str, by_day: bool) -> String {
    let x = pairing.filter;
    let x_column = x.column().unwrap_or("value");
    let Some(y) = pairing.breakdown else {
        let cells = rollups::range_cells(&format!("dimension = {}", x.code()), days, by_day);
        return format!(
            "SELECT * FROM (SELECT value AS {x_column}, bucket, {SUMS} FROM ({cells}) c) p \
             WHERE {filter}"
        );
    };
    let y_column = y.column().unwrap_or("value");
    let (first, last) = days;
    // A pair is kept once, the lower dimension code first (migrations 0022 and 0024).
    let ((first_dimension, first_column), (second_dimension, second_column)) =
        if x.code() < y.code() {
            ((x, x_column), (y, y_column))
        } else {
            ((y, y_column), (x, x_column))
        };
    let pair_cells = |table: &str, span: &str, which: &str| {
        format!(
            "SELECT {x_column}, {y_column}, {SUMS} FROM ( \
                 SELECT first_value AS {first_column}, second_value AS {second_column}, {SUMS} \
                 FROM {table} \
                 WHERE site_id = $1 AND first_dimension = {} AND second_dimension = {} \
                   AND {span} {which}) p \
             WHERE {filter}",
            first_dimension.code(),
            second_dimension.code(),
        )
    };
    let weeks = pair_cells(
        "visit_pair_week_rollups",
        "week",
        ">= (SELECT lo FROM cover) AND week < (SELECT hi FROM cover)",
    );
    let built_days = pair_cells(
        "visit_pair_day_rollups",
        "day",
        "IN (SELECT day FROM built_days)",
    );
    let built_hours = pair_cells(
        "visit_pair_hour_rollups",
        "hour",
        "IN (SELECT hour FROM built_hours)",
    );
    // The local date (the day cells' bucket) of an instant.
    let bucket = |instant: &str| {
        format!("((({instant}) AT TIME ZONE $4)::date)::timestamp AT TIME ZONE 'UTC'")
    };
    // The hours left, read from `visits` in one scan of their two spans (before and after
    // the weeks), so a block-range scan reads only those hours' blocks; the local date
    // decides, computed once per visit (an `IN` would become a join computing it once per
    // visit and day).
    let visits = format!(
        "SELECT {x_column}, {y_column}, count(*), sum(pageviews)::bigint, sum(events)::bigint, \
                count(*) FILTER (WHERE pageviews = 1), \
                sum((extract(epoch FROM ended_at - started_at) * 1000000)::bigint)::bigint, \
                hll_add_agg(hll_hash_text(visitor), {}) \
         FROM visits WHERE site_id = $1 AND {filter} \
           AND ((started_at >= (SELECT before_lo FROM spans) \
                 AND started_at < (SELECT before_hi FROM spans)) \
             OR (started_at >= (SELECT after_lo FROM spans) \
                 AND started_at < (SELECT after_hi FROM spans))) \
           AND {} = ANY (ARRAY(SELECT day FROM unbuilt)) \
           AND date_trunc('hour', started_at, 'UTC') <> ALL (ARRAY(SELECT hour FROM built_hours)) \
         GROUP BY 1, 2",
        domain::visits::SKETCH_PARAMS,
        bucket("started_at"),
    );
    // The instant the local date of day bucket `day` begins.
    let begins =
        |day: &str| format!("((({day}) AT TIME ZONE 'UTC')::date)::timestamp AT TIME ZONE $4");
    let (before, after) = (
        "day < (SELECT lo FROM cover)",
        "day >= (SELECT hi FROM cover)",
    );
    // Hours before this one have no pair hour cells a reader may use
    // (`tally_visit_hour_readable`).
    let readable_from = "date_trunc('hour', now() - interval '2 days', 'UTC')";
    // The readable hours of a span of `day_spans`.
    let hours_of = |lo: &str, hi: &str| {
        format!(
            "generate_series(greatest(date_trunc('hour', s.{lo}, 'UTC'), {readable_from}), \
                             s.{hi} - interval '1 microsecond', interval '1 hour')"
        )
    };
    // A span's bounds: its hours left, and its part before the readable hours whole.
    let span = |side: &str, before: bool| {
        let which = if before { "before" } else { "NOT before" };
        format!(
            "least(min(hour) FILTER (WHERE {which}), \
                   (SELECT CASE WHEN {side}_lo < {readable_from} THEN {side}_lo END FROM day_spans)) \
                 AS {side}_lo, \
             greatest(max(hour) FILTER (WHERE {which}) + interval '1 hour', \
                      (SELECT CASE WHEN {side}_lo < {readable_from} \
                                   THEN least({side}_hi, {readable_from}) END FROM day_spans)) \
                 AS {side}_hi"
        )
    };
    // day_spans: from the instant the first unbuilt day of each span (before and after the
    // weeks) begins to the instant its last ends, two hours wider for a zone whose offset
    // changes at midnight; built_hours: the hours with pair hour cells wholly inside one
    // of those days; spans: the readable hours of day_spans not built that hold an instant
    // of an unbuilt day (not the hours of built days in the two hours' margin: the day
    // before today's would make the span begin before today's built hours), and the part
    // of day_spans before the readable hours: the visits read.
    format!(
        "WITH {}, \
         outside AS ( \
             SELECT d AS day FROM generate_series({first}, {last} - interval '1 day', interval '1 day') AS d \
             WHERE d < (SELECT lo FROM cover) OR d >= (SELECT hi FROM cover)), \
         built_days AS ( \
             SELECT o.day FROM outside o JOIN visit_rollup_days b \
               ON b.site_id = $1 AND b.day = o.day AND b.generation = b.built_generation), \
         unbuilt AS (SELECT day FROM outside EXCEPT SELECT day FROM built_days), \
         day_spans AS ( \
             SELECT {}, {}, {}, {} FROM unbuilt), \
         built_hours AS ( \
             SELECT h.hour FROM visit_rollup_hours h, day_spans s \
             WHERE h.site_id = $1 AND h.generation = h.built_generation \
               AND tally_visit_hour_readable(h.hour) \
               AND ((h.hour >= s.before_lo AND h.hour < s.before_hi) \
                    OR (h.hour >= s.after_lo AND h.hour < s.after_hi)) \
               AND {} = {} \
               AND {} = ANY (ARRAY(SELECT day FROM unbuilt))), \
         hours_left AS ( \
             SELECT true AS before, g AS hour FROM day_spans s, {} AS g \
             UNION ALL SELECT false, g FROM day_spans s, {} AS g), \
         spans AS ( \
             SELECT {}, {} \
             FROM hours_left WHERE hour NOT IN (SELECT hour FROM built_hours) \
               AND ({} = ANY (ARRAY(SELECT day FROM unbuilt)) \
                    OR {} = ANY (ARRAY(SELECT day FROM unbuilt)))) \
         {weeks} UNION ALL {built_days} UNION ALL {built_hours} UNION ALL {visits}",
        rollups::week_cover((first, last)),
        begins(&format!("min(day) FILTER (WHERE {before})")) + " - interval '2 hours' AS before_lo",
        begins(&format!(
            "max(day) FILTER (WHERE {before}) + interval '1 day'"
        )) + " + interval '2 hours' AS before_hi",
        begins(&format!("min(day) FILTER (WHERE {after})")) + " - interval '2 hours' AS after_lo",
        begins(&format!(
            "max(day) FILTER (WHERE {after}) + interval '1 day'"
        )) + " + interval '2 hours' AS after_hi",
        bucket("h.hour"),
        bucket("h.hour + interval '1 hour' - interval '1 microsecond'"),
        bucket("h.hour"),
        hours_of("before_lo", "before_hi"),
        hours_of("after_lo", "after_hi"),
        span("before", true),
        span("after", false),
        bucket("hour"),
        bucket("hour + interval '1 hour' - interval '1 microsecond'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::request::Operator;

    fn is(d: VisitDimension, value: &str) -> Filter {
        Filter::Leaf {
            operator: Operator::Is,
            dimension: Dimension::Visit(d),
            values: vec![value.into()],
            case_sensitive: true,
        }
    }

    #[test]
    fn a_filter_on_one_paired_dimension_is_answered_from_cells() {
        use VisitDimension::{Country, Device, EntryPage, Source};
        let visitors = [Metric::Visitors, Metric::Visits, Metric::BounceRate];
        let by = |d| Dimension::Visit(d);
        let day = Dimension::Time(TimeGrain::Day);
        let mobile = [is(Device, "Mobile")];
        assert_eq!(
            answer(&visitors, &[by(Source)], &mobile),
            Some(Pairing {
                filter: Device,
                breakdown: Some(Source)
            })
        );
        let own = Some(Pairing {
            filter: Device,
            breakdown: None,
        });
        assert_eq!(answer(&visitors, &[], &mobile), own);
        assert_eq!(answer(&visitors, std::slice::from_ref(&day), &mobile), own);
        assert_eq!(answer(&visitors, &[by(Device), day.clone()], &mobile), own);
        let either = [Filter::Or(vec![is(Device, "Mobile"), is(Device, "Tablet")])];
        assert_eq!(answer(&visitors, &[], &either), own);
        let negated = [Filter::Not(Box::new(is(Device, "Mobile")))];
        assert_eq!(answer(&visitors, &[], &negated), own);

        // Unfiltered (the rollups' own case), two filter dimensions, a page dimension, a
        // breakdown by day and by another dimension, hours, conversion rates: `visits`.
        assert_eq!(answer(&visitors, &[by(Source)], &[]), None);
        let two = [is(Device, "Mobile"), is(Country, "FR")];
        assert_eq!(answer(&visitors, &[by(Source)], &two), None);
        assert_eq!(
            answer(&visitors, &[by(Source)], &[is(EntryPage, "/")]),
            None
        );
        assert_eq!(answer(&visitors, &[by(EntryPage)], &mobile), None);
        assert_eq!(answer(&visitors, &[by(Source), day], &mobile), None);
        assert_eq!(
            answer(&visitors, &[Dimension::Time(TimeGrain::Hour)], &mobile),
            None
        );
        assert_eq!(answer(&visitors, &[by(Source), by(Country)], &mobile), None);
        assert_eq!(
            answer(&[Metric::ConversionRate], &[by(Source)], &mobile),
            None
        );
    }
}
