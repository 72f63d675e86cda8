//! Pair hour cells (migration 0025): built for the sealed hours of the last two days from
//! their visits, never for an hour still being written, out of date after a late event
//! changes one of its visits, built again; hours past reading dropped.

use crate::helpers::{Harness, message, uuid};
use batch_worker::events::visits::week_cells::build_once;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Rows `(hour, device, country, visits, events, visitors)` that differ between the pair
/// hour cells of the built hours of site `s` (device and country) and its stored visits
/// counted by UTC hour of their start, device and country. Written here, independently of
/// the worker and of migration 0025.
const PAIR_HOURS_DIFFERING_FROM_VISITS: &str = "
WITH truth AS (
    SELECT date_trunc('hour', v.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
           coalesce(v.device, '-') AS device, coalesce(v.country, '-') AS country,
           count(*) AS visits, sum(v.events) AS events, count(DISTINCT v.visitor) AS visitors
    FROM visits v WHERE v.site_id = 's'
    GROUP BY 1, 2, 3
), built AS (
    SELECT p.hour, coalesce(p.first_value, '-') AS device, coalesce(p.second_value, '-') AS country,
           p.visits, p.events, round(hll_cardinality(p.visitors))::bigint AS visitors
    FROM visit_pair_hour_rollups p JOIN visit_rollup_hours h
      ON h.site_id = p.site_id AND h.hour = p.hour AND h.generation = h.built_generation
    WHERE p.site_id = 's' AND p.first_dimension = 10 AND p.second_dimension = 13
)
SELECT count(*) FROM truth t FULL JOIN built b USING (hour, device, country)
WHERE coalesce(t.hour, b.hour) IN (SELECT hour FROM visit_rollup_hours
                                   WHERE site_id = 's' AND generation = built_generation)
  AND (t IS NULL OR b IS NULL OR (t.visits, t.events, t.visitors) <> (b.visits, b.events, b.visitors))
";

const BUILT_HOURS: &str =
    "SELECT count(*) FROM visit_rollup_hours WHERE site_id = 's' AND generation = built_generation";

/// A build's time limit in these tests.
const BUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Two page views, five minutes apart, of visitor `visitor` from `start`, on a phone or a
/// desktop in one of three countries.
fn visit(id: u32, visitor: &str, start: DateTime<Utc>, n: u32) -> Vec<serde_json::Value> {
    [0, 5]
        .iter()
        .enumerate()
        .map(|(k, minutes)| {
            let mut m = message(
                &uuid(id + k as u32),
                "s",
                Some("/"),
                Some(visitor),
                &(start + TimeDelta::minutes(*minutes)).to_rfc3339(),
            );
            m["device"] = serde_json::json!(if n.is_multiple_of(2) {
                "mobile"
            } else {
                "desktop"
            });
            m["country"] = serde_json::json!(["FR", "DE", "US"][n as usize % 3]);
            m
        })
        .collect()
}

#[tokio::test]
async fn recent_sealed_hours_get_pair_cells_and_a_late_event_makes_its_hour_built_again() {
    let h = Harness::new().await;
    let this_hour = Utc::now()
        .duration_trunc(TimeDelta::hours(1))
        .expect("an hour");
    let hour = |back: i64| this_hour - TimeDelta::hours(back);
    // Three visitors in the last hour (not sealed whenever the test runs: sealed three
    // hours after it began), and in each of the 27 hours from four to thirty hours back
    // (sealed however long the test takes).
    let mut events = Vec::new();
    let mut id = 0;
    for back in std::iter::once(1).chain(4..=30) {
        for v in 0..3 {
            let n = u32::try_from(back).expect("small") + v;
            events.extend(visit(
                id,
                &format!("u{back}-{v}"),
                hour(back) + TimeDelta::minutes(10),
                n,
            ));
            id += 2;
        }
    }
    h.push(&events).await;
    h.drain(&mut h.worker("w")).await;
    assert_eq!(h.count(BUILT_HOURS).await, 0, "nothing built by writing");
    // Written after they were marked, so their writer made their rows; live traffic is
    // written before, leaving no row: the builder finds those hours from their cells.
    h.db.pool()
        .get()
        .await
        .expect("pg")
        .batch_execute("DELETE FROM visit_rollup_hours WHERE hour < now() - interval '10 hours'")
        .await
        .expect("rows dropped");
    let round = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!(round.hours, 27, "{round:?}");
    assert_eq!(h.count(BUILT_HOURS).await, 27);
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visit_rollup_hours \
             WHERE built_generation >= 0 AND NOT tally_visit_hour_sealed(hour)"
        )
        .await,
        0,
        "no hour still written is built"
    );
    assert_eq!(h.count(PAIR_HOURS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(
        build_once(&h.db.pool(), BUILD_TIMEOUT)
            .await
            .expect("build")
            .hours,
        0,
        "nothing left to build"
    );

    // Late events: a new visitor five hours back, and a page view going on a visit six
    // hours back (a changed visit, no new one). Their writer puts exactly those two hours
    // out of date in the transaction that changes their visits; an event of four days
    // back marks nothing (no reader uses its hour's cells).
    let mut late = visit(10_000, "late", hour(5) + TimeDelta::minutes(20), 0);
    late.push(message(
        &uuid(10_100),
        "s",
        Some("/more"),
        Some("u6-0"),
        &(hour(6) + TimeDelta::minutes(20)).to_rfc3339(),
    ));
    late.push(message(
        &uuid(10_101),
        "s",
        Some("/old"),
        Some("old"),
        &(hour(96) + TimeDelta::minutes(20)).to_rfc3339(),
    ));
    h.push(&late).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 4);
    let out_of_date = |at: DateTime<Utc>| {
        format!(
            "SELECT count(*) FROM visit_rollup_hours \
             WHERE site_id = 's' AND hour = '{}' AND generation <> built_generation",
            at.to_rfc3339()
        )
    };
    assert_eq!(h.count(&out_of_date(hour(5))).await, 1);
    assert_eq!(h.count(&out_of_date(hour(6))).await, 1);
    assert_eq!(h.count(BUILT_HOURS).await, 25, "the other hours stay built");
    assert_eq!(
        h.count("SELECT count(*) FROM visit_rollup_hours WHERE hour < now() - interval '3 days'")
            .await,
        0
    );
    let round = build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!(round.hours, 2, "{round:?}");
    assert_eq!(h.count(BUILT_HOURS).await, 27);
    assert_eq!(h.count(PAIR_HOURS_DIFFERING_FROM_VISITS).await, 0);
    assert_eq!(
        h.count(&format!(
            "SELECT sum(visits)::bigint FROM visit_pair_hour_rollups \
             WHERE site_id = 's' AND hour = '{}' AND first_dimension = 10 AND second_dimension = 13",
            hour(5).to_rfc3339()
        ))
        .await,
        4,
        "the late visit is in its rebuilt hour"
    );
    assert_eq!(
        h.count(&format!(
            "SELECT sum(events)::bigint FROM visit_pair_hour_rollups \
             WHERE site_id = 's' AND hour = '{}' AND first_dimension = 10 AND second_dimension = 13",
            hour(6).to_rfc3339()
        ))
        .await,
        7,
        "the page view is in its visit's rebuilt hour"
    );

    // An hour past reading (a row and a cell left from three days ago) is dropped by the
    // next round.
    h.db.pool()
        .get()
        .await
        .expect("pg")
        .batch_execute(&format!(
            "INSERT INTO visit_rollup_hours VALUES ('s', '{0}', 0, 0); \
             INSERT INTO visit_pair_hour_rollups \
             SELECT site_id, first_dimension, second_dimension, '{0}', first_key, second_key, \
                    first_value, second_value, visits, pageviews, events, bounces, duration_us, visitors \
             FROM visit_pair_hour_rollups WHERE site_id = 's' AND hour = '{1}'",
            hour(80).to_rfc3339(),
            hour(5).to_rfc3339()
        ))
        .await
        .expect("an old hour");
    build_once(&h.db.pool(), BUILD_TIMEOUT)
        .await
        .expect("build");
    assert_eq!(
        h.count(&format!(
            "SELECT (SELECT count(*) FROM visit_rollup_hours WHERE hour = '{0}') \
                  + (SELECT count(*) FROM visit_pair_hour_rollups WHERE hour = '{0}')",
            hour(80).to_rfc3339()
        ))
        .await,
        0,
        "the old hour's row and cells are dropped"
    );
    assert_eq!(h.count(BUILT_HOURS).await, 27);
}
