//! One SQL statement per query, over the table its dimensions need:
//!
//! - `visit_rollups` (day and hour rows per dashboard dimension, see [`super::rollups`])
//!   for the visit queries they can answer: unfiltered, by at most one kept dimension; and
//!   their goal cells for the `event:goal` breakdown and visits filtered to one goal.
//! - the cells of one kept dimension, or pair week cells and the visits of the days
//!   outside them, for visit queries filtered by that dimension alone (see
//!   [`super::pairs`]).
//! - `visits` (one row per visit, kept by the worker with the events) for visit metrics
//!   by visit dimensions and time, with any filter on visit dimensions. Exact, and one row
//!   per visit rather than per event; `visitors` is a distinct count of those rows.
//! - `page_day_rollups` for `event:page` by days of the site's zone (page views and events
//!   per path, a row per day; whole weeks from `page_week_rollups` unless grouped by
//!   time), unless filtered by visit dimensions or by hour;
//! - `rollup_hourly_paths` for the other `event:page` queries; filtered by
//!   visit dimensions, the range's raw page events joined to their visits (bounded by the
//!   range and `statement_timeout`, like the filters of `/v1/stats`).
//! - `rollup_hourly` for `event:name` (events per name).
//! - the raw events of the range for `event:hostname` and `event:props:<key>` (events,
//!   visitors with such events, page views), filtered by those, pages, names and (joined
//!   to their visits) visit dimensions.
//! - for `event:goal`, the range's events matching a goal joined to their visits (see
//!   [`super::goals`]); a top-level `event:goal` filter on a visit query marks each visit
//!   converted or not, and the metrics count the converted ones.
//!
//! Values come in as parameters, never as SQL text; names (columns, grains) only from
//! the fixed lists below.
//!
//! Distinct visitors are counted `COLLATE "C"` (here and in every other distinct count
//! of visitor ids): the same set under any deterministic collation, but compared as
//! bytes, with abbreviated sort keys, instead of through the database's locale. A
//! filtered breakdown over 3.1 million visits took 1.6 s instead of 2.7 s.

use super::goals::{CONVERSIONS, GoalSet, VISIT_IN_RANGE, goal_rows, matched_ctes};
use super::pairs::{self, Pairing};
use super::request::{Dimension, Filter, Metric, Operator, OrderKey, TimeGrain};
use super::rollups;
use chrono::{DateTime, Utc};
use domain::tokio_postgres::types::ToSql;
use domain::visits::VisitDimension;

/// The table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Visits,
    /// Visit queries `visit_rollups` can answer (see [`super::rollups`]).
    VisitRollups,
    /// Visit queries filtered by one kept dimension: its cells, or pair week cells and
    /// the visits of the other days (see [`super::pairs`]).
    VisitPairs(Pairing),
    /// The `event:goal` breakdown from the goal cells of `visit_rollups`.
    GoalRollups,
    Pages,
    /// `event:page` queries `page_day_rollups` can answer.
    PageDays,
    Names,
    Goals,
    Events,
}

impl Source {
    /// The column holding the time of a row.
    fn time_column(self) -> &'static str {
        match self {
            Self::Visits => "started_at",
            Self::Pages
            | Self::Names
            | Self::VisitRollups
            | Self::VisitPairs(_)
            | Self::GoalRollups => "bucket",
            Self::PageDays => "day",
            Self::Goals => "e.ts",
            Self::Events => "ts",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Visits => "visits",
            Self::Pages => "rollup_hourly_paths",
            Self::PageDays => "page_day_rollups",
            Self::VisitRollups | Self::VisitPairs(_) | Self::GoalRollups => "visit_rollup_cells",
            Self::Names => "rollup_hourly",
            Self::Goals | Self::Events => "events",
        }
    }
}

/// Joins each event `e` to the visit `v` it belongs to.
const EVENT_IN_VISIT: &str = " JOIN visits v ON v.site_id = e.site_id AND v.visitor = e.user_id \
     AND e.ts >= v.started_at AND e.ts <= v.ended_at";

/// What a visit without a value for `d` shows (Plausible's labels).
pub fn none_label(d: VisitDimension) -> &'static str {
    if d == VisitDimension::Source {
        "Direct / None"
    } else {
        "(none)"
    }
}

/// Types the range's parameters in a statement over day rows, which reads none of them
/// (PostgreSQL cannot infer an unused parameter's type).
const UNUSED_RANGE: &str =
    "$2::timestamptz IS NOT NULL AND $3::timestamptz IS NOT NULL AND $4::text IS NOT NULL";

/// A statement and its parameters (`$1` site, `$2`/`$3` the UTC range, `$4` time zone).
pub struct Statement {
    pub sql: String,
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// Planned without parallel workers: the statement reads a few hours of visits
    /// between bounds it computes itself, which the planner cannot see, so it plans for
    /// tens of thousands of rows and starts two workers (about 8 ms on two loaded cores,
    /// for a scan of 4 ms; bench-query's filtered breakdowns).
    pub serial: bool,
}

impl Statement {
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }
}

/// The SQL of dimension `d`; `qualified` names the events' columns `e.` (inside a join
/// of events to visits, where both have some of the same names).
fn dimension_expr(st: &mut Statement, source: Source, d: &Dimension, qualified: bool) -> String {
    let e = if qualified { "e." } else { "" };
    match d {
        Dimension::Visit(v) if source == Source::VisitRollups => {
            format!("coalesce(value, '{}')", none_label(*v))
        }
        Dimension::Visit(v) => {
            let column = v.column().unwrap_or("NULL");
            // Qualified: in the join of events to visits both have most of these columns.
            let table = if matches!(source, Source::Visits | Source::VisitPairs(_)) {
                ""
            } else {
                "v."
            };
            format!("coalesce({table}{column}, '{}')", none_label(*v))
        }
        Dimension::Page => format!("{e}path"),
        Dimension::Name => format!("{e}event_type"),
        Dimension::Goal => "goal".into(),
        Dimension::Hostname => format!("coalesce({e}hostname, '(none)')"),
        Dimension::Prop(key) => {
            let key = st.bind(key.clone());
            format!("coalesce({e}props->>{key}::text, '(none)')")
        }
        Dimension::Time(grain) => {
            // The local time of the row's UTC hour's midpoint (see local_time); a day row
            // of the rollups is keyed by its local date already.
            let t = source.time_column();
            let local = if source == Source::PageDays {
                format!("{t}::timestamp")
            } else if matches!(source, Source::VisitRollups | Source::VisitPairs(_))
                && *grain != TimeGrain::Hour
            {
                format!("{t} AT TIME ZONE 'UTC'")
            } else {
                format!(
                    "((date_trunc('hour', {t} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + interval '30 minutes') AT TIME ZONE $4"
                )
            };
            let (unit, format) = match grain {
                TimeGrain::Hour => ("hour", "YYYY-MM-DD HH24:00:00"),
                TimeGrain::Day => ("day", "YYYY-MM-DD"),
                TimeGrain::Week => ("week", "YYYY-MM-DD"),
                TimeGrain::Month => ("month", "YYYY-MM-DD"),
            };
            format!("to_char(date_trunc('{unit}', {local}), '{format}')")
        }
    }
}

fn metric_expr(source: Source, m: Metric, goal_filtered: bool) -> String {
    match source {
        Source::VisitRollups if goal_filtered => return rollups::converted_metric_expr(m),
        Source::VisitRollups | Source::VisitPairs(_) => return rollups::metric_expr(m),
        Source::GoalRollups => return rollups::goal_metric_expr(m),
        _ => {}
    }
    match (source, m) {
        (Source::Visits, Metric::Visitors) if goal_filtered => {
            "count(DISTINCT visitor COLLATE \"C\") FILTER (WHERE converted)::float8"
        }
        (Source::Visits, Metric::Visits) if goal_filtered => {
            "count(*) FILTER (WHERE converted)::float8"
        }
        (Source::Visits, Metric::ConversionRate) => {
            "coalesce(round(100.0 * count(DISTINCT visitor COLLATE \"C\") FILTER (WHERE converted) / nullif(count(DISTINCT visitor COLLATE \"C\"), 0), 2), 0)::float8"
        }
        (Source::Goals, Metric::Visitors) => "count(DISTINCT visitor COLLATE \"C\")::float8",
        (Source::Goals, Metric::ConversionRate) => {
            "coalesce(round(100.0 * count(DISTINCT visitor COLLATE \"C\") / nullif((SELECT n FROM total), 0), 2), 0)::float8"
        }
        (Source::Goals, _) => "count(*)::float8",
        (Source::Events, Metric::Visitors) => "count(DISTINCT user_id COLLATE \"C\")::float8",
        (Source::Events, Metric::Pageviews) => {
            "count(*) FILTER (WHERE event_type = 'page_view')::float8"
        }
        (Source::Events, _) => "count(*)::float8",
        (Source::Visits, Metric::Visitors) => "count(DISTINCT visitor COLLATE \"C\")::float8",
        (Source::Visits, Metric::Visits) => "count(*)::float8",
        (Source::Visits, Metric::Pageviews) => "coalesce(sum(pageviews), 0)::float8",
        (Source::Visits, Metric::Events) => "coalesce(sum(events), 0)::float8",
        (Source::Visits, Metric::ViewsPerVisit) => {
            "coalesce(round(sum(pageviews)::numeric / nullif(count(*), 0), 2), 0)::float8"
        }
        (Source::Visits, Metric::BounceRate) => {
            "coalesce(round(100.0 * count(*) FILTER (WHERE pageviews = 1) / nullif(count(*), 0)), 0)::float8"
        }
        (Source::Visits, Metric::VisitDuration) => {
            "coalesce(round(avg(extract(epoch FROM ended_at - started_at))), 0)::float8"
        }
        (Source::Visits, Metric::Percentage) => {
            "coalesce(round(100.0 * count(DISTINCT visitor COLLATE \"C\") / nullif((SELECT n FROM total), 0), 1), 0)::float8"
        }
        (Source::Pages | Source::PageDays, Metric::Pageviews) => {
            "coalesce(sum(views) FILTER (WHERE event_type = 'page_view'), 0)::float8"
        }
        (Source::Pages | Source::PageDays, _) => "coalesce(sum(views), 0)::float8",
        (Source::Names, _) => "coalesce(sum(events), 0)::float8",
        (Source::VisitRollups | Source::VisitPairs(_) | Source::GoalRollups, _) => {
            unreachable!("answered above")
        }
    }
    .to_string()
}

/// The metrics each source can answer (with a goal filter, or without).
pub fn supports(source: Source, m: Metric, goal_filtered: bool) -> bool {
    match source {
        Source::Visits if goal_filtered => {
            matches!(
                m,
                Metric::Visitors | Metric::Visits | Metric::ConversionRate
            )
        }
        Source::Visits | Source::VisitRollups | Source::VisitPairs(_) => {
            m != Metric::ConversionRate
        }
        Source::Goals | Source::GoalRollups => matches!(
            m,
            Metric::Visitors | Metric::Events | Metric::ConversionRate
        ),
        Source::Pages | Source::PageDays => matches!(m, Metric::Pageviews | Metric::Events),
        Source::Names => m == Metric::Events,
        Source::Events => matches!(m, Metric::Visitors | Metric::Events | Metric::Pageviews),
    }
}

/// The dimensions a source's filters may read.
pub fn filterable(source: Source, d: &Dimension) -> bool {
    match source {
        Source::Visits | Source::Goals | Source::VisitPairs(_) => matches!(d, Dimension::Visit(_)),
        Source::Pages => matches!(d, Dimension::Page | Dimension::Visit(_)),
        Source::PageDays => *d == Dimension::Page,
        Source::Names => *d == Dimension::Name,
        Source::VisitRollups | Source::GoalRollups => false,
        Source::Events => !matches!(d, Dimension::Goal | Dimension::Time(_)),
    }
}

fn like_pattern(value: &str) -> String {
    let mut p = String::with_capacity(value.len() + 2);
    p.push('%');
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn filter_sql(st: &mut Statement, source: Source, f: &Filter, qualified: bool) -> String {
    match f {
        Filter::Leaf {
            operator,
            dimension,
            values,
            case_sensitive,
        } => {
            let raw = dimension_expr(st, source, dimension, qualified);
            // Case-insensitive: both sides lowered (patterns match with ~* instead: lowering
            // one would change its escapes).
            let (expr, values) = if *case_sensitive
                || matches!(operator, Operator::Matches | Operator::MatchesNot)
            {
                (raw, values.clone())
            } else {
                (
                    format!("lower({raw})"),
                    values.iter().map(|v| v.to_lowercase()).collect(),
                )
            };
            let (test, negate) = match operator {
                Operator::Is | Operator::IsNot => {
                    let p = st.bind(values);
                    (
                        format!("{expr} = ANY({p}::text[])"),
                        *operator == Operator::IsNot,
                    )
                }
                Operator::Contains | Operator::ContainsNot => {
                    let p = st.bind(values.iter().map(|v| like_pattern(v)).collect::<Vec<_>>());
                    (
                        format!("{expr} LIKE ANY({p}::text[])"),
                        *operator == Operator::ContainsNot,
                    )
                }
                Operator::Matches | Operator::MatchesNot => {
                    let p = st.bind(values);
                    let op = if *case_sensitive { "~" } else { "~*" };
                    (
                        format!("{expr} {op} ANY({p}::text[])"),
                        *operator == Operator::MatchesNot,
                    )
                }
            };
            if negate {
                format!("NOT ({test})")
            } else {
                test
            }
        }
        Filter::And(fs) | Filter::Or(fs) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts: Vec<String> = fs
                .iter()
                .map(|f| filter_sql(st, source, f, qualified))
                .collect();
            format!("({})", parts.join(joiner))
        }
        Filter::Not(inner) => format!("NOT ({})", filter_sql(st, source, inner, qualified)),
    }
}

/// What the statement is built from.
pub struct Shape<'a> {
    pub source: Source,
    pub metrics: &'a [Metric],
    pub dimensions: &'a [Dimension],
    pub filters: &'a [Filter],
    pub order: &'a [(OrderKey, bool)],
    pub limit: i64,
    pub offset: i64,
    /// The goals of an `event:goal` breakdown, or of a goal-filtered visit query.
    pub goals: Option<&'a GoalSet>,
    /// The range's day rows (see [`rollups::day_rows`]).
    pub day_rows: (DateTime<Utc>, DateTime<Utc>),
}

/// The statement answering `shape`. Its rows: the dimensions as text, then the metrics
/// as float8, then the number of rows before pagination.
pub fn build(shape: &Shape<'_>, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Statement {
    let mut st = Statement {
        sql: String::new(),
        params,
        serial: false,
    };
    let source = shape.source;
    let t = source.time_column();
    let mut read = Vec::new();
    shape.filters.iter().for_each(|f| f.dimensions(&mut read));
    let by_visit = read.iter().any(|d| matches!(d, Dimension::Visit(_)));
    let joined = source == Source::Pages && by_visit;
    let (site, time) = if joined || source == Source::Events {
        ("e.site_id", "e.ts")
    } else {
        ("site_id", t)
    };
    // Goals matched against the raw events (the rollups' goal cells need no matching).
    let raw_goals = matches!(source, Source::Goals | Source::Visits);
    let goals = shape.goals.filter(|_| raw_goals).map(|g| {
        let names = st.bind(g.names.clone());
        let events = st.bind(g.event_names.clone());
        let regexes = st.bind(g.path_regexes.clone());
        goal_rows(&names, &events, &regexes)
    });
    let goal_filtered = source == Source::Visits && goals.is_some();
    let converted = source == Source::VisitRollups && shape.goals.is_some();
    let mut filters = Vec::new();
    let qualified = joined || source == Source::Events;
    for f in shape.filters {
        filters.push(filter_sql(&mut st, source, f, qualified));
    }
    // $4 (the zone) is typed here because only time dimensions read it.
    let mut conditions = vec![if source == Source::Goals {
        format!("{VISIT_IN_RANGE} AND $4::text IS NOT NULL")
    } else {
        format!("{site} = $1 AND {time} >= $2 AND {time} < $3 AND $4::text IS NOT NULL")
    }];
    conditions.extend(filters.iter().cloned());
    // The page rows' key begins (site, event type, time): page views alone are an index
    // range of their type's rows, where without the type the site's every row of every
    // type is scanned (26 ms for top pages over 91 days in bench-query, 12 ms with it).
    let page_views_only = shape.metrics.iter().all(|m| *m == Metric::Pageviews);
    if matches!(source, Source::Pages | Source::PageDays) && !joined && page_views_only {
        conditions.push(format!("event_type = '{}'", domain::event::PAGE_VIEW));
    }
    let mut ctes = Vec::new();
    if let Some(goals) = &goals {
        ctes.push(matched_ctes(goals));
    }
    let filtered = if source == Source::Goals {
        format!(
            "SELECT m.name AS goal, m.user_id AS visitor FROM {CONVERSIONS} WHERE {}",
            conditions.join(" AND ")
        )
    } else if source == Source::Events {
        let visits = if by_visit { EVENT_IN_VISIT } else { "" };
        format!(
            "SELECT e.* FROM events e{visits} WHERE {}",
            conditions.join(" AND ")
        )
    } else if joined {
        // Each page event of the range with the visit it belongs to, shaped like a row of
        // the path rollup (one view each).
        format!(
            "SELECT e.site_id, e.event_type, e.ts AS bucket, e.path, 1::bigint AS views \
             FROM events e{EVENT_IN_VISIT} WHERE e.path IS NOT NULL AND {}",
            conditions.join(" AND ")
        )
    } else if source == Source::VisitRollups {
        let first = st.bind(shape.day_rows.0);
        let last = st.bind(shape.day_rows.1);
        let hours = shape
            .dimensions
            .iter()
            .any(|d| matches!(d, Dimension::Time(TimeGrain::Hour)));
        let by_day = rollups::groups_by_time(shape.dimensions);
        let dimension = rollups::dimension_of(shape.dimensions);
        let all = rollups::cells(VisitDimension::All.code(), (&first, &last), false, false);
        ctes.push(format!(
            "total AS (SELECT round({})::numeric AS n FROM ({all}) a)",
            rollups::VISITORS
        ));
        let cells = match shape.goals.and_then(|g| g.ids.first()) {
            Some(goal) => {
                let goal = st.bind(goal.clone());
                rollups::converted_cells(dimension, &goal, (&first, &last), by_day)
            }
            None => rollups::cells(dimension.code(), (&first, &last), hours, by_day),
        };
        // Day rows need neither the range's instants nor its zone, but every statement
        // binds them: typed here, as PostgreSQL cannot infer an unused parameter's type.
        format!("SELECT * FROM ({cells}) c WHERE {UNUSED_RANGE}")
    } else if let Source::VisitPairs(pairing) = source {
        let first = st.bind(shape.day_rows.0);
        let last = st.bind(shape.day_rows.1);
        let by_day = rollups::groups_by_time(shape.dimensions);
        let rows = pairs::rows(pairing, (&first, &last), &filters.join(" AND "), by_day);
        st.serial = pairing.breakdown.is_some();
        format!("SELECT * FROM ({rows}) r WHERE {UNUSED_RANGE}")
    } else if source == Source::PageDays {
        let first = st.bind(shape.day_rows.0);
        let last = st.bind(shape.day_rows.1);
        let by_day = rollups::groups_by_time(shape.dimensions);
        conditions[0] = UNUSED_RANGE.to_string();
        format!(
            "SELECT * FROM ({}) p WHERE {}",
            rollups::page_rows((&first, &last), by_day),
            conditions.join(" AND ")
        )
    } else if source == Source::GoalRollups {
        let by_day = rollups::groups_by_time(shape.dimensions);
        let first = st.bind(shape.day_rows.0);
        let last = st.bind(shape.day_rows.1);
        let set = shape.goals.cloned().unwrap_or_default();
        let ids = st.bind(set.ids);
        let names = st.bind(set.names);
        let all = rollups::cells(VisitDimension::All.code(), (&first, &last), false, false);
        ctes.push(format!(
            "total AS (SELECT round({})::numeric AS n FROM ({all}) a)",
            rollups::VISITORS
        ));
        format!(
            "SELECT * FROM ({}) c WHERE {UNUSED_RANGE}",
            rollups::goal_cells(&ids, &names, (&first, &last), by_day)
        )
    } else if goal_filtered {
        // The range's converted visits, from the converting events (few), never a search
        // of every visit's events.
        ctes.push(format!(
            "converted AS (SELECT DISTINCT v.visitor AS converted_visitor, v.started_at AS converted_start \
             FROM {CONVERSIONS} WHERE {VISIT_IN_RANGE})"
        ));
        format!(
            "SELECT visits.*, c.converted_visitor IS NOT NULL AS converted FROM visits \
             LEFT JOIN converted c ON c.converted_visitor = visits.visitor \
                 AND c.converted_start = visits.started_at \
             WHERE {}",
            conditions.join(" AND ")
        )
    } else {
        format!(
            "SELECT * FROM {} WHERE {}",
            source.table(),
            conditions.join(" AND ")
        )
    };
    let dims: Vec<String> = shape
        .dimensions
        .iter()
        .map(|d| dimension_expr(&mut st, source, d, false))
        .collect();
    let metrics: Vec<String> = shape
        .metrics
        .iter()
        .map(|m| metric_expr(source, *m, goal_filtered || converted))
        .collect();
    let select: Vec<String> = dims
        .iter()
        .cloned()
        .chain(metrics.iter().cloned())
        .chain(["count(*) OVER ()".to_string()])
        .collect();
    let group_by = if dims.is_empty() {
        String::new()
    } else {
        format!(
            " GROUP BY {}",
            (1..=dims.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut order: Vec<String> = shape
        .order
        .iter()
        .map(|(key, desc)| {
            let position = match key {
                OrderKey::Dimension(i) => i + 1,
                OrderKey::Metric(i) => dims.len() + i + 1,
            };
            format!("{position} {}", if *desc { "DESC" } else { "ASC" })
        })
        .collect();
    if shape.order.is_empty() {
        if let Some(i) = shape
            .dimensions
            .iter()
            .position(|d| matches!(d, Dimension::Time(_)))
        {
            order.push(format!("{} ASC", i + 1));
        } else if !dims.is_empty() {
            order.push(format!("{} DESC", dims.len() + 1));
        }
    }
    order.extend((1..=dims.len()).map(|i| format!("{i} ASC")));
    let order_by = if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    };
    // A goal-filtered breakdown lists the groups that converted.
    let having = if goal_filtered && !dims.is_empty() {
        " HAVING count(*) FILTER (WHERE converted) > 0"
    } else if converted && !dims.is_empty() {
        rollups::CONVERTED_GROUPS
    } else if matches!(
        source,
        Source::VisitRollups | Source::VisitPairs(_) | Source::GoalRollups
    ) && !dims.is_empty()
    {
        // Rows whose visits all moved away (late events) stay, at zero.
        " HAVING sum(visits) > 0"
    } else {
        ""
    };
    let limit = st.bind(shape.limit);
    let offset = st.bind(shape.offset);
    let total = match source {
        Source::Visits => "SELECT count(DISTINCT visitor COLLATE \"C\") AS n FROM base".to_string(),
        // Conversion rates are over every visitor of the range (the visit filters apply).
        Source::Goals => format!(
            "SELECT count(DISTINCT v.visitor COLLATE \"C\") AS n FROM visits v \
             WHERE v.site_id = $1 AND v.started_at >= $2 AND v.started_at < $3{}",
            filters
                .iter()
                .map(|f| format!(" AND {f}"))
                .collect::<String>()
        ),
        Source::Pages | Source::PageDays | Source::Names | Source::Events => {
            "SELECT 1 AS n".to_string()
        }
        // The filtered visits' visitors: the union of every row's sketch.
        Source::VisitPairs(_) => format!(
            "SELECT round({})::numeric AS n FROM base",
            rollups::VISITORS
        ),
        Source::VisitRollups | Source::GoalRollups => String::new(),
    };
    ctes.push(format!("base AS ({filtered})"));
    if !matches!(source, Source::VisitRollups | Source::GoalRollups) {
        ctes.push(format!("total AS ({total})"));
    }
    st.sql = format!(
        "WITH {} \
         SELECT {} FROM base{group_by}{having}{order_by} LIMIT {limit} OFFSET {offset}",
        ctes.join(", "),
        select.join(", "),
    );
    st
}
