//! `POST /v2/query`: Plausible's Stats API v2, answered from what the worker keeps.
//!
//! [`request`] validates the body, [`range`] turns `date_range` into the site's local
//! days, [`sql`] builds one statement over the table the dimensions need; the answer is
//! cached in Redis until the worker commits something new for the site.

pub mod funnel;
pub mod goals;
pub mod pairs;
pub mod request;
pub mod rollups;
pub mod sql;

use crate::error::ApiError;
use crate::local_time::SiteClock;
use crate::startup::AppState;
use chrono::{Datelike, Days, Months, TimeDelta, Utc};
use domain::date_range::{self as range, DayRange};
use domain::tokio_postgres::error::SqlState;
use domain::tokio_postgres::types::ToSql;
use request::{Dimension, Filter, Metric, QueryRequest, TimeGrain};
use serde_json::{Value, json};
use sql::{Shape, Source};

/// Offsets past this are refused (deep pages of a breakdown are not what the API is for).
const MAX_OFFSET: i64 = 1_000_000;

/// The answer to `req`.
///
/// # Errors
/// 400 naming what is wrong with the query; 503 when PostgreSQL is unavailable.
pub async fn answer(state: &AppState, req: QueryRequest) -> Result<Value, ApiError> {
    let bad = ApiError::BadRequest;
    if req.site_id.is_empty() || req.site_id.chars().count() > domain::event::MAX_SITE_ID_CHARS {
        return Err(bad("site_id must be 1..255 characters".into()));
    }
    if req.site_id.contains('\0') {
        return Err(bad("site_id holds a NUL character".into()));
    }
    let (metrics, dimensions, order) = request::parse_lists(&req).map_err(bad)?;
    let mut clauses = 0;
    let filters = req
        .filters
        .iter()
        .map(|f| request::parse_filter(f, &mut clauses))
        .collect::<Result<Vec<Filter>, _>>()
        .map_err(bad)?;
    let (goal_filters, filters) = goals::split_goal_filters(filters).map_err(bad)?;
    let by_goal = dimensions.contains(&Dimension::Goal);
    let goal_filtered = !goal_filters.is_empty() && !by_goal;
    if metrics.contains(&Metric::ConversionRate) && !by_goal && !goal_filtered {
        return Err(bad(
            "metric conversion_rate needs an event:goal dimension or filter".into(),
        ));
    }
    let mut source =
        source_of(&req, &metrics, &dimensions, &filters, goal_filtered).map_err(bad)?;
    let (limit, offset) = (req.pagination.limit, req.pagination.offset);
    if !(1..=request::MAX_LIMIT).contains(&limit) || !(0..=MAX_OFFSET).contains(&offset) {
        return Err(bad(format!(
            "pagination: limit is 1..{}, offset 0..{MAX_OFFSET}",
            request::MAX_LIMIT
        )));
    }
    let grain = dimensions.iter().find_map(|d| match d {
        Dimension::Time(g) => Some(*g),
        _ => None,
    });
    if req.include.time_labels && grain.is_none() {
        return Err(bad("include.time_labels needs a time dimension".into()));
    }
    let settings = crate::sites::settings(&state.pg, &req.site_id)
        .await
        .map_err(ApiError::from_db)?;
    let clock = settings.clock;
    let goal_set = if by_goal || goal_filtered {
        let (site_goals, _) = crate::sites::goals(&state.pg, &req.site_id)
            .await
            .map_err(ApiError::from_db)?;
        let chosen = goals::select(&site_goals, &goal_filters).map_err(bad)?;
        Some(goals::GoalSet::of(chosen))
    } else {
        None
    };
    if state.settings.visit_rollups {
        let one_goal = goal_set.as_ref().is_some_and(|g| g.ids.len() == 1);
        source = match source {
            Source::Visits
                if !goal_filtered && rollups::answer(&metrics, &dimensions, &filters) =>
            {
                Source::VisitRollups
            }
            Source::Visits if !goal_filtered => pairs::answer(&metrics, &dimensions, &filters)
                .map_or(Source::Visits, Source::VisitPairs),
            Source::Visits
                if goal_filtered
                    && one_goal
                    && rollups::answer_converted(&metrics, &dimensions, &filters) =>
            {
                Source::VisitRollups
            }
            Source::Goals if filters.is_empty() => Source::GoalRollups,
            Source::Pages if page_days(&dimensions, &filters) => Source::PageDays,
            other => other,
        };
    }
    let first_visit = if req.date_range == json!("all") {
        first_visit(state, &req.site_id).await?
    } else {
        None
    };
    let range = range::resolve(&req.date_range, clock, Utc::now(), first_visit).map_err(bad)?;
    let echo = json!({
        "site_id": req.site_id,
        "metrics": req.metrics,
        "date_range": [local_time_of(clock, range.first, 0, 0, 0),
                       local_time_of(clock, range.last, 23, 59, 59)],
        "dimensions": req.dimensions,
        "filters": req.filters,
        "order_by": req.order_by,
        "include": req.include,
        "pagination": req.pagination,
    });
    let signature = format!("v2query:{echo}");
    let shape = Shape {
        source,
        metrics: &metrics,
        dimensions: &dimensions,
        filters: &filters,
        order: &order,
        limit,
        offset,
        goals: goal_set.as_ref(),
        day_rows: rollups::day_rows(&range),
    };
    let site_id = req.site_id.clone();
    crate::cache::cached(state, &site_id, &signature, async {
        let (results, total_rows) = rows(state, &shape, &req.site_id, range, clock).await?;
        let mut meta = serde_json::Map::new();
        if req.include.total_rows {
            meta.insert("total_rows".into(), json!(total_rows));
        }
        if let (true, Some(grain)) = (req.include.time_labels, grain) {
            meta.insert(
                "time_labels".into(),
                json!(time_labels(range, grain, clock)),
            );
        }
        Ok(json!({"results": results, "meta": meta, "query": echo}))
    })
    .await
}

/// `day` at `h:m:s` on the site's clock, RFC 3339 with its offset (the earliest, where the
/// clock repeats; the first instant after, where it skips).
pub(crate) fn local_time_of(
    clock: SiteClock,
    day: chrono::NaiveDate,
    h: u32,
    m: u32,
    s: u32,
) -> String {
    use chrono::TimeZone;
    let naive = day.and_hms_opt(h, m, s).unwrap_or_default();
    clock
        .tz
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            clock
                .tz
                .from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })
        .map_or_else(|| format!("{naive}"), |t| t.to_rfc3339())
}

/// Whether `page_day_rollups` answers an `event:page` query: no filter on visit
/// dimensions (those join raw page views to their visits) and no hours.
fn page_days(dimensions: &[Dimension], filters: &[Filter]) -> bool {
    let mut read = Vec::new();
    filters.iter().for_each(|f| f.dimensions(&mut read));
    !read.iter().any(|d| matches!(d, Dimension::Visit(_)))
        && !dimensions
            .iter()
            .any(|d| matches!(d, Dimension::Time(TimeGrain::Hour)))
}

/// Which table answers the query, or what makes it unanswerable.
fn source_of(
    req: &QueryRequest,
    metrics: &[Metric],
    dimensions: &[Dimension],
    filters: &[Filter],
    goal_filtered: bool,
) -> Result<Source, String> {
    let source = if dimensions.contains(&Dimension::Goal) {
        Source::Goals
    } else if dimensions
        .iter()
        .any(|d| matches!(d, Dimension::Hostname | Dimension::Prop(_)))
    {
        Source::Events
    } else if dimensions.contains(&Dimension::Page) {
        Source::Pages
    } else if dimensions.contains(&Dimension::Name) {
        Source::Names
    } else {
        Source::Visits
    };
    let label = |s: Source| match s {
        Source::Pages | Source::PageDays => "event:page",
        Source::Names => "event:name",
        Source::Visits | Source::VisitRollups | Source::VisitPairs(_) => "visit dimensions",
        Source::Goals | Source::GoalRollups => "event:goal",
        Source::Events => "event:hostname and event:props",
    };
    for (d, name) in dimensions.iter().zip(&req.dimensions) {
        let fits = match d {
            Dimension::Time(_) => source != Source::Goals,
            Dimension::Visit(_) => matches!(
                source,
                Source::Visits | Source::VisitRollups | Source::VisitPairs(_)
            ),
            Dimension::Goal => source == Source::Goals,
            Dimension::Hostname | Dimension::Prop(_) => source == Source::Events,
            Dimension::Page => source == Source::Pages,
            Dimension::Name => source == Source::Names,
        };
        if !fits {
            return Err(format!(
                "dimension {name} cannot be combined with {} in this version",
                label(source)
            ));
        }
    }
    for (m, name) in metrics.iter().zip(&req.metrics) {
        if !sql::supports(source, *m, goal_filtered) {
            let with = if goal_filtered {
                "an event:goal filter"
            } else {
                label(source)
            };
            return Err(format!(
                "metric {name} is not available with {with} in this version"
            ));
        }
    }
    let mut read = Vec::new();
    filters.iter().for_each(|f| f.dimensions(&mut read));
    if let Some(d) = read.iter().find(|d| !sql::filterable(source, d)) {
        return Err(format!(
            "a filter on {} cannot be combined with {} in this version",
            dimension_name(d),
            label(source)
        ));
    }
    Ok(source)
}

fn dimension_name(d: &Dimension) -> String {
    match d {
        Dimension::Visit(v) => v.api_name().unwrap_or("visit").to_string(),
        Dimension::Page => "event:page".into(),
        Dimension::Name => "event:name".into(),
        Dimension::Goal => "event:goal".into(),
        Dimension::Hostname => "event:hostname".into(),
        Dimension::Prop(key) => format!("event:props:{key}"),
        Dimension::Time(_) => "time".into(),
    }
}

pub(crate) async fn first_visit(
    state: &AppState,
    site_id: &str,
) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
    let client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let row = client
        .query_one(
            "SELECT min(started_at) FROM visits WHERE site_id = $1",
            &[&site_id],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    Ok(row.get(0))
}

/// Statements a connection keeps prepared at most: the dashboard's shapes are a few dozen,
/// but filters with many values make statements of their own, and a client must not grow
/// the cache (nor PostgreSQL's prepared statements) without bound.
pub const PREPARED_PER_CONNECTION: usize = 256;

/// `sql` prepared on `client` once and kept: PostgreSQL then parses and rewrites it once
/// (the views it reads expand into several branches each), and each execution is one
/// round trip instead of two. It is still planned for each execution's parameters (see
/// [`domain::postgres::query_pool`]).
pub async fn prepared(
    client: &domain::deadpool_postgres::Client,
    sql: &str,
) -> Result<domain::tokio_postgres::Statement, domain::tokio_postgres::Error> {
    if client.statement_cache.size() >= PREPARED_PER_CONNECTION {
        client.statement_cache.clear();
    }
    client.prepare_cached(sql).await
}

/// The result rows, and how many there are before pagination.
async fn rows(
    state: &AppState,
    shape: &Shape<'_>,
    site_id: &str,
    range: DayRange,
    clock: SiteClock,
) -> Result<(Vec<Value>, i64), ApiError> {
    let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(site_id.to_string()),
        Box::new(range.start),
        Box::new(range.end),
        Box::new(clock.tz.name().to_string()),
    ];
    let st = sql::build(shape, params);
    let mut client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let mut patterns = Vec::new();
    shape.filters.iter().for_each(|f| f.patterns(&mut patterns));
    if !patterns.is_empty() {
        // Compiled once here, so a bad one is refused even where no row would test it.
        client
            .query_one(
                "SELECT count(*) FROM unnest($1::text[]) AS p WHERE '' ~ p",
                &[&patterns],
            )
            .await
            .map_err(regex_or_db)?;
    }
    let params: Vec<&(dyn ToSql + Sync)> = st
        .params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let statement = prepared(&client, &st.sql).await.map_err(regex_or_db)?;
    let found = if st.serial {
        let db = |e: domain::tokio_postgres::Error| ApiError::from_db(e.into());
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
            .await
            .map_err(db)?;
        let found = tx.query(&statement, &params).await.map_err(regex_or_db)?;
        tx.commit().await.map_err(db)?;
        found
    } else {
        client
            .query(&statement, &params)
            .await
            .map_err(regex_or_db)?
    };
    let nd = shape.dimensions.len();
    let mut total = found
        .first()
        .map_or(0, |r| r.get::<_, i64>(nd + shape.metrics.len()));
    if found.is_empty() && shape.offset > 0 {
        // Paged past the end: the count of rows comes from the first page.
        let first = Shape {
            offset: 0,
            limit: 1,
            ..*shape
        };
        total = Box::pin(rows(state, &first, site_id, range, clock))
            .await?
            .1;
    }
    let results = found
        .iter()
        .map(|r| {
            let dimensions: Vec<String> = (0..nd).map(|i| r.get(i)).collect();
            let metrics: Vec<Value> = shape
                .metrics
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let v: f64 = r.get(nd + i);
                    match m {
                        Metric::ViewsPerVisit | Metric::Percentage | Metric::ConversionRate => {
                            json!(v)
                        }
                        #[allow(clippy::cast_possible_truncation)]
                        _ => json!(v.round() as i64),
                    }
                })
                .collect();
            json!({"metrics": metrics, "dimensions": dimensions})
        })
        .collect();
    Ok((results, total))
}

fn regex_or_db(e: domain::tokio_postgres::Error) -> ApiError {
    if e.code() == Some(&SqlState::INVALID_REGULAR_EXPRESSION) {
        ApiError::BadRequest(format!(
            "a matches filter holds an invalid regular expression: {}",
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        ))
    } else {
        ApiError::from_db(e.into())
    }
}

/// Every bucket of `grain` in the range, labelled as the time dimension's values are.
fn time_labels(range: DayRange, grain: TimeGrain, clock: SiteClock) -> Vec<String> {
    let mut labels = Vec::new();
    match grain {
        TimeGrain::Hour => {
            let mut h = range.start;
            while h < range.end {
                let local = (h + TimeDelta::minutes(30)).with_timezone(&clock.tz);
                labels.push(local.format("%Y-%m-%d %H:00:00").to_string());
                h += TimeDelta::hours(1);
            }
        }
        TimeGrain::Day | TimeGrain::Week | TimeGrain::Month => {
            let mut d = match grain {
                TimeGrain::Day => Some(range.first),
                TimeGrain::Week => range.first.checked_sub_days(Days::new(u64::from(
                    range.first.weekday().num_days_from_monday(),
                ))),
                _ => range.first.with_day(1),
            };
            while let Some(day) = d.filter(|day| *day <= range.last) {
                labels.push(day.format("%Y-%m-%d").to_string());
                d = match grain {
                    TimeGrain::Day => day.checked_add_days(Days::new(1)),
                    TimeGrain::Week => day.checked_add_days(Days::new(7)),
                    _ => day.checked_add_months(Months::new(1)),
                };
            }
        }
    }
    // A zone's repeated hour (autumn) labels two UTC hours alike; the rows merge too.
    labels.dedup();
    labels
}
