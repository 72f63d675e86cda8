//! Week cells (migration 0019), page week rows (0021), pair week cells (0022) and pair day
//! cells (0024): built from sealed weeks and days, out of date after a late event, built
//! again; never for a week or day still being written.

use crate::helpers::{Harness, message, uuid};
use batch_worker::events::visits::week_cells::build_once;

/// Rows `(week, dimension, value, visits, pageviews, visitors)` that differ between the
/// built week cells of site `s` and a plain aggregation of its stored visits by week
/// (UTC site: the week of each visit's start date), for the totals and entry pages.
/// Written here, independently of the worker and of migration 0019.
const WEEKS_DIFFERING_FROM_VISITS: &str = "
WITH truth AS (
    SELECT date_trunc('week', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS week,
           d.code, coalesce(d.value, '-') AS value, count(*) AS visits, sum(v.pageviews) AS pageviews,
           count(DISTINCT v.visitor) AS visitors
    FROM visits v CROSS JOIN LATERAL (VALUES (0, NULL), (1, v.entry_page)) AS d(code, value)
    WHERE v.site_id = 's'
    GROUP BY 1, 2, 3
), built AS (
    SELECT r.bucket AS week, r.dimension AS code, coalesce(r.value, '-') AS value, r.visits,
           CASE WHEN r.dimension = 1 THEN NULL ELSE r.pageviews END AS pageviews,
           round(hll_cardinality(r.visitors))::bigint AS visitors
    FROM visit_rollups r JOIN visit_rollup_weeks w
      ON w.site_id = r.site_id AND w.week = r.bucket AND w.generation = w.built_generation
    WHERE r.site_id = 's' AND r.span_hours = 168 AND r.dimension IN (0, 1)
)
SELECT count(*) FROM truth t FULL JOIN built b USING (week, code, value)
WHERE coalesce(t.week, b.week) IN (SELECT week FROM built)
  AND (t IS NULL OR b IS NULL OR (t.visits, t.visitors) <> (b.visits, b.visitors)
       OR (t.code = 0 AND t.pageviews <> b.pageviews))
";

/// Rows `(week, type, path, views)` that differ between the page week rows of the built
/// weeks of site `s` and its stored events counted by week (UTC site) and path.
const PAGE_WEEKS_DIFFERING_FROM_EVENTS: &str = "
WITH truth AS (
    SELECT date_trunc('week', e.ts AT TIME ZONE 'UTC')::date AS week, e.event_type, e.path,
           count(*) AS views
    FROM events e WHERE e.site_id = 's' AND e.path IS NOT NULL
    GROUP BY 1, 2, 3
), built AS (
    SELECT p.week, p.event_type, p.path, p.views
    FROM page_week_rollups p JOIN visit_rollup_weeks w
      ON w.site_id = p.site_id AND (w.week AT TIME ZONE 'UTC')::date = p.week
         AND w.generation = w.built_generation
    WHERE p.site_id = 's'
)
SELECT count(*) FROM truth t FULL JOIN built b USING (week, event_type, path)
WHERE coalesce(t.week, b.week) IN (SELECT (week AT TIME ZONE 'UTC')::date FROM visit_rollup_weeks
                                   WHERE site_id = 's' AND generation = built_generation)
  AND (t IS NULL OR b IS NULL OR t.views <> b.views)
";

/// Rows `(week, source, device, visits, visitors)` that differ between the pair week cells
/// of the built weeks of site `s` (source and device) and its stored visits
/// counted by week, source and device (UTC site).
const PAIR_WEEKS_DIFFERING_FROM_VISITS: &str = "
WITH truth AS (
    SELECT date_trunc('week', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS week,
           coalesce(v.source, '-') AS source, coalesce(v.device, '-') AS device,
           count(*) AS visits, sum(v.pageviews) AS pageviews, count(DISTINCT v.visitor) AS visitors
    FROM visits v WHERE v.site_id = 's'
    GROUP BY 1, 2, 3
), built AS (
    SELECT p.week, coalesce(p.first_value, '-') AS source, coalesce(p.second_value, '-') AS device,
           p.visits, p.pageviews, round(hll_cardinality(p.visitors))::bigint AS visitors
    FROM visit_pair_week_rollups p JOIN visit_rollup_weeks w
      ON w.site_id = p.site_id AND w.week = p.week AND w.generation = w.built_generation
    WHERE p.site_id = 's' AND p.first_dimension = 3 AND p.second_dimension = 10
)
SELECT count(*) FROM truth t FULL JOIN built b USING (week, source, device)
WHERE coalesce(t.week, b.week) IN (SELECT week FROM visit_rollup_weeks
                                   WHERE site_id = 's' AND generation = built_generation)
  AND (t IS NULL OR b IS NULL OR (t.visits, t.pageviews, t.visitors) <> (b.visits, b.pageviews, b.visitors))
";

/// Rows `(day, source, device, visits, visitors)` that differ between the pair day cells
/// of the built days of site `s` (source and device) and its stored visits counted by
/// day, source and device (UTC site).
const PAIR_DAYS_DIFFERING_FROM_VISITS: &str = "
WITH truth AS (
    SELECT date_trunc('day', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day,
           coalesce(v.source, '-') AS source, coalesce(v.device, '-') AS device,
           count(*) AS visits, sum(v.events) AS events, count(DISTINCT v.visitor) AS visitors
    FROM visits v WHERE v.site_id = 's'
    GROUP BY 1, 2, 3
), built AS (
    SELECT p.day, coalesce(p.first_value, '-') AS source, coalesce(p.second_value, '-') AS device,
           p.visits, p.events, round(hll_cardinality(p.visitors))::bigint AS visitors
    FROM visit_pair_day_rollups p JOIN visit_rollup_days d
      ON d.site_id = p.site_id AND d.day = p.day AND d.generation = d.built_generation
    WHERE p.site_id = 's' AND p.first_dimension = 3 AND p.second_dimension = 10
)
SELECT count(*) FROM truth t FULL JOIN built b USING (day, source, device)
WHERE coalesce(t.day, b.day) IN (SELECT day FROM visit_rollup_days
                                 WHERE site_id = 's' AND generation = built_generation)
  AND (t IS NULL OR b IS NULL OR (t.visits, t.events, t.visitors) <> (b.visits, b.events, b.visitors))
";

const BUILT_DAYS: &str =
    "SELECT count(*) FROM visit_rollup_days WHERE site_id = 's' AND generation = built_generation";

/// A week's build time limit in these tests (SITE_REBUILD_TIMEOUT_MS in the service).
const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const BUILT_WEEKS: &str =
    "SELECT count(*) FROM visit_rollup_weeks WHERE site_id = 's' AND generation = built_generation";

/// Visits of `visitors` on entry pages `/a` and `/b`, one a day from `first` (a date) for
/// `days` days, two page views each.
fn visits(
    first_id: u32,
    visitors: u32,
    first: chrono::NaiveDate,
    days: u32,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let mut id = first_id;
    for day in 0..days {
        let date = first + chrono::Days::new(day.into());
        for v in 0..visitors {
            let entry = if (v + day) % 3 == 0 { "/a" } else { "/b" };
            for (path, time) in [(entry, "10:00:00"), ("/c", "10:05:00")] {
                events.push(message(
                    &uuid(id),
                    "s",
                    Some(path),
                    Some(&format!("u{v}")),
                    &format!("{date}T{time}Z"),
                ));
                id += 1;
            }
        }
    }
    events
}

#[tokio::test]
async fn a_sealed_weeks_cells_are_its_days_and_a_late_event_makes_them_built_again() {
    let h = Harness::new().await;
    let monday: chrono::NaiveDate = "2025-11-03".parse().expect("date");
    // Two whole weeks and three days of a third, 12 visitors a day.
    h.push(&visits(0, 12, monday, 17)).await;
    h.drain(&mut h.worker("w")).await;
    let round = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!((round.weeks, round.days), (3, 17), "{round:?}");
    assert_eq!(h.count(BUILT_WEEKS).await, 3);
    assert_eq!(h.count(BUILT_DAYS).await, 17);
    assert_eq!(h.count(WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAIR_WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAIR_DAYS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAGE_WEEKS_DIFFERING_FROM_EVENTS).await, 0);
    let again = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!((again.weeks, again.days), (0, 0), "nothing left to build");

    // A late event: a new visitor in the first week. Its writer puts the week out of date
    // in the transaction that changes its days.
    h.push(&[message(
        &uuid(90_000),
        "s",
        Some("/a"),
        Some("late"),
        "2025-11-05T08:00:00Z",
    )])
    .await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 1);
    assert_eq!(
        h.count(BUILT_WEEKS).await,
        2,
        "the first week is out of date"
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_rollup_weeks \
             WHERE site_id = 's' AND week = '2025-11-03T00:00:00Z' AND generation <> built_generation"
        )
        .await,
        1
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_rollup_days \
             WHERE site_id = 's' AND generation <> built_generation"
        )
        .await,
        1,
        "its day alone is out of date"
    );
    let round = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!((round.weeks, round.days), (1, 1), "{round:?}");
    assert_eq!(h.count(BUILT_WEEKS).await, 3);
    assert_eq!(h.count(BUILT_DAYS).await, 17);
    assert_eq!(h.count(WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAIR_WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAIR_DAYS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(
        h.count(
            "SELECT sum(visits)::bigint FROM visit_pair_day_rollups \
             WHERE site_id = 's' AND day = '2025-11-05T00:00:00Z' AND first_dimension = 3 \
               AND second_dimension = 10"
        )
        .await,
        13,
        "the late visit is in its rebuilt day"
    );
    assert_eq!(h.count(PAGE_WEEKS_DIFFERING_FROM_EVENTS).await, 0);
    assert_eq!(
        h.count(
            "SELECT round(hll_cardinality(visitors))::bigint FROM visit_rollups \
             WHERE site_id = 's' AND dimension = 0 AND span_hours = 168 AND bucket = '2025-11-03T00:00:00Z'"
        )
        .await,
        13,
        "the late visitor is in the rebuilt week"
    );

    // A late page view of nobody (no visitor, so no visit cell changes): its page day's
    // writer puts the week out of date all the same.
    h.push(&[message(
        &uuid(90_001),
        "s",
        Some("/late"),
        None,
        "2025-11-12T08:00:00Z",
    )])
    .await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 1);
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_rollup_weeks \
             WHERE site_id = 's' AND week = '2025-11-10T00:00:00Z' AND generation <> built_generation"
        )
        .await,
        1,
        "the second week is out of date"
    );
    assert_eq!(
        build_once(&h.db.pool(), BUILD_TIMEOUT)
            .await
            .expect("build")
            .weeks,
        1
    );
    assert_eq!(h.count(PAGE_WEEKS_DIFFERING_FROM_EVENTS).await, 0);
    assert_eq!(
        h.count(
            "SELECT views FROM page_week_rollups \
             WHERE site_id = 's' AND week = '2025-11-10' AND path = '/late'"
        )
        .await,
        1,
        "the late page view is in the rebuilt week"
    );
}

#[tokio::test]
async fn weeks_still_written_are_not_built_and_a_held_week_stops_the_round() {
    let h = Harness::new().await;
    let today = chrono::Utc::now().date_naive();
    // Yesterday and today: their week is not sealed.
    h.push(&visits(0, 3, today - chrono::Days::new(1), 2)).await;
    h.drain(&mut h.worker("w")).await;
    assert_eq!(
        build_once(&h.db.pool(), BUILD_TIMEOUT)
            .await
            .expect("build")
            .weeks,
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM visit_rollup_weeks").await,
        0,
        "writing an unsealed week marks nothing"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM visit_rollups WHERE span_hours = 168")
            .await,
        0
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_rollup_days \
             WHERE built_generation >= 0 AND NOT tally_visit_day_sealed(day)"
        )
        .await,
        0,
        "no day still written is built"
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_pair_day_rollups WHERE NOT tally_visit_day_sealed(day)"
        )
        .await,
        0
    );

    // Two sealed weeks (their writers made their rows); the first one's row held by
    // another transaction (a late event's writer, say): the round builds neither, since
    // weeks are built in order.
    let monday: chrono::NaiveDate = "2025-11-03".parse().expect("date");
    h.push(&visits(1_000, 3, monday, 14)).await;
    h.drain(&mut h.worker("w")).await;
    let mut holder = h.db.pool().get().await.expect("pg");
    holder
        .execute(
            "INSERT INTO visit_rollup_weeks VALUES ('s', '2025-11-03T00:00:00Z', 1, -1) \
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .expect("the first week's row");
    let hold = holder.transaction().await.expect("begin");
    hold.execute(
        "SELECT 1 FROM visit_rollup_weeks WHERE site_id = 's' FOR UPDATE",
        &[],
    )
    .await
    .expect("holding the first week's row");
    let round = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert!(round.stopped_at_locked && round.weeks == 0, "{round:?}");
    hold.commit().await.expect("commit");
    assert_eq!(
        build_once(&h.db.pool(), BUILD_TIMEOUT)
            .await
            .expect("build")
            .weeks,
        2
    );
    assert_eq!(h.count(BUILT_WEEKS).await, 2);
    assert_eq!(h.count(WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAIR_WEEKS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(h.count(PAGE_WEEKS_DIFFERING_FROM_EVENTS).await, 0);
}
