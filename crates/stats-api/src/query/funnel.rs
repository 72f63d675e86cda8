//! A funnel's report: how many visitors reached each step, and the drop-off between
//! steps, over a date range.
//!
//! A visit reaches step 1 with an event matching step 1's goal, and step k with an event
//! matching step k's goal after (by time, then event id) the event that reached step k-1
//! in the same visit. Taking the earliest such event at every step is optimal: any later
//! choice leaves fewer events for the steps after it. A visitor counts at step k when any
//! of their visits started in the range reached it.
//!
//! The worker keeps how far each visit got (migration 0015): the funnel's cells of
//! `visit_rollups` answer the report from a row per step and day ([`from_cells`]); with
//! `VISIT_ROLLUPS=false` it is computed from the range's raw events ([`funnel_sql`]), an
//! independent statement of the rule the tests compare the cells against.

use super::goals::{CONVERSIONS, GoalSet, VISIT_IN_RANGE, goal_rows, matched_ctes};
use super::rollups::range_cells;
use crate::error::ApiError;
use crate::startup::AppState;
use domain::date_range::DayRange;
use domain::goals::{Funnel, Goal};
use domain::visits::{FUNNEL_CELL_CODE, VisitDimension};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// The range's visitors (step 0), then the visitors of each step of funnel `$2` reached,
/// from the rows of the days `[$3, $4)` (whole weeks from week rows).
static FROM_CELLS: LazyLock<String> = LazyLock::new(|| {
    let visitors = "round(coalesce(hll_cardinality(hll_union_agg(visitors)), 0))::bigint";
    let days = ("$3", "$4");
    format!(
        "SELECT 0, {visitors} FROM ({all}) a WHERE $2::text IS NOT NULL \
         UNION ALL \
         SELECT value::int, {visitors} FROM ({steps}) s GROUP BY value",
        all = range_cells(
            &format!("dimension = {}", VisitDimension::All.code()),
            days,
            false
        ),
        steps = range_cells(
            &format!("dimension = {FUNNEL_CELL_CODE} AND goal_id = $2"),
            days,
            false
        ),
    )
});

/// The range's visitors and those of each of the funnel's `steps` steps, from its cells.
async fn from_cells(
    client: &domain::deadpool_postgres::Client,
    site_id: &str,
    funnel_id: &str,
    range: DayRange,
    steps: usize,
) -> Result<(i64, Vec<i64>), ApiError> {
    let (first, after) = super::rollups::day_rows(&range);
    let rows = client
        .query(FROM_CELLS.as_str(), &[&site_id, &funnel_id, &first, &after])
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let mut counts = vec![0; steps + 1];
    for r in &rows {
        let step: i32 = r.get(0);
        if let Some(slot) = usize::try_from(step).ok().and_then(|s| counts.get_mut(s)) {
            *slot = r.get(1);
        }
    }
    Ok((counts[0], counts[1..].to_vec()))
}

/// The statement counting visitors per step for `steps` goals (bound at `$4..$6`):
/// one row, all the range's visitors, then one count per step.
fn funnel_sql(steps: usize) -> String {
    let mut ctes = vec![
        matched_ctes(&goal_rows("$4", "$5", "$6")),
        format!(
            "ev AS (SELECT v.visitor, v.started_at AS visit, m.ts, m.event_id, m.step \
             FROM {CONVERSIONS} WHERE {VISIT_IN_RANGE})"
        ),
        "s1 AS (SELECT DISTINCT ON (visitor, visit) visitor, visit, ts, event_id FROM ev \
         WHERE step = 1 ORDER BY visitor, visit, ts, event_id)"
            .to_string(),
    ];
    for k in 2..=steps {
        ctes.push(format!(
            "s{k} AS (SELECT DISTINCT ON (ev.visitor, ev.visit) ev.visitor, ev.visit, ev.ts, ev.event_id \
             FROM ev JOIN s{p} p ON p.visitor = ev.visitor AND p.visit = ev.visit \
             WHERE ev.step = {k} AND (ev.ts, ev.event_id) > (p.ts, p.event_id) \
             ORDER BY ev.visitor, ev.visit, ev.ts, ev.event_id)",
            p = k - 1
        ));
    }
    let counts: Vec<String> = (1..=steps)
        .map(|k| format!("(SELECT count(DISTINCT visitor COLLATE \"C\") FROM s{k})"))
        .collect();
    format!(
        "WITH {} SELECT (SELECT count(DISTINCT visitor COLLATE \"C\") FROM visits \
         WHERE site_id = $1 AND started_at >= $2 AND started_at < $3), {}",
        ctes.join(", "),
        counts.join(", ")
    )
}

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let p = 100.0 * part as f64 / whole as f64;
        (p * 100.0).round() / 100.0
    }
}

/// The report of `funnel` over `range` (without the caller's `date_range` echo).
///
/// # Errors
/// 503 when PostgreSQL is unavailable.
pub async fn report(
    state: &AppState,
    site_id: &str,
    funnel: &Funnel,
    goals: &[Goal],
    range: DayRange,
) -> Result<Value, ApiError> {
    let steps: Vec<&Goal> = funnel
        .steps
        .iter()
        .filter_map(|id| goals.iter().find(|g| g.goal_id == *id))
        .collect();
    let set = GoalSet::of(steps.iter().copied());
    let client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let (all, reached) = if state.settings.visit_rollups {
        from_cells(&client, site_id, &funnel.funnel_id, range, steps.len()).await?
    } else {
        let row = client
            .query_one(
                &funnel_sql(steps.len()),
                &[
                    &site_id,
                    &range.start,
                    &range.end,
                    &set.names,
                    &set.event_names,
                    &set.path_regexes,
                ],
            )
            .await
            .map_err(|e| ApiError::from_db(e.into()))?;
        let all: i64 = row.get(0);
        let reached: Vec<i64> = (1..=steps.len()).map(|i| row.get(i)).collect();
        (all, reached)
    };
    let entering = reached.first().copied().unwrap_or(0);
    let rows: Vec<Value> = steps
        .iter()
        .zip(&reached)
        .enumerate()
        .map(|(i, (goal, &visitors))| {
            let before = if i == 0 { visitors } else { reached[i - 1] };
            json!({
                "goal_id": goal.goal_id,
                "label": goal.display_name,
                "visitors": visitors,
                "conversion_rate": percent(visitors, entering),
                "conversion_rate_step": percent(visitors, before),
                "dropoff": before - visitors,
                "dropoff_percentage": percent(before - visitors, before),
            })
        })
        .collect();
    let completed = reached.last().copied().unwrap_or(0);
    Ok(json!({
        "funnel_id": funnel.funnel_id,
        "name": funnel.name,
        "all_visitors": all,
        "entering_visitors": entering,
        "entering_visitors_percentage": percent(entering, all),
        "never_entering_visitors": all - entering,
        "never_entering_visitors_percentage": percent(all - entering, all),
        "conversion_rate": percent(completed, all),
        "steps": rows,
    }))
}
