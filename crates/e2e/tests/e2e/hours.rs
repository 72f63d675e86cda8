//! Pair hour cells (migration 0025) seen from the query API: over the last days, a
//! breakdown filtered by another dimension answers the same through pair hour cells as
//! from the visits alone, in a zone of whole hours and in one of half hours (whose hours
//! across local midnight are read from visits), and the hour rows are really read.

use crate::helpers::{Stack, admin_post, assert_visits_match_events};
use crate::query::{generate_from, post_all};
use crate::weeks::{bodies, execute, first_metric_of_each_row, uncached_answer};
use chrono::{TimeDelta, Utc};
use domain::testing::eventually;
use serde_json::{Value, json};
use std::time::Duration;

const SITES: [(&str, &str); 3] = [
    ("h-utc", "UTC"),
    ("h-kolkata", "Asia/Kolkata"),
    ("h-nyc", "America/New_York"),
];

/// Every answer of the dashboard's queries (`bodies`) for every site over `range`,
/// uncached.
async fn answers(
    stack: &Stack,
    stats: &crate::helpers::Service,
    range: (&str, &str),
) -> Vec<Value> {
    let mut out = Vec::new();
    for (site, _) in SITES {
        for body in bodies(site, range) {
            out.push(uncached_answer(stack, stats, site, body).await);
        }
    }
    out
}

/// Makes the built rows of `table` (`visit_rollup_hours` or `_days`) unbuilt, or those
/// made unbuilt by this built again, and no other: a row never built (an hour marked but
/// not sealed yet) must not pass for built.
async fn toggle_built(stack: &Stack, table: &str) {
    execute(
        stack,
        &format!(
            "UPDATE {table} SET built_generation = -2 - built_generation \
             WHERE built_generation <> -1"
        ),
    )
    .await;
}

#[tokio::test]
async fn recent_hours_answer_through_pair_hour_cells_as_from_the_visits() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let worker = stack
        .start(
            "batch-worker",
            &[
                ("BATCH_MAX_WAIT_MS", "20"),
                ("VISIT_WEEK_BUILD_INTERVAL_MS", "200"),
            ],
        )
        .await;
    let stats = stack.start("stats-api", &[]).await;
    for (site, zone) in SITES {
        admin_post(
            &ingest,
            "/v1/sites",
            &json!({"site_id": site, "domains": [format!("{site}.example")], "timezone": zone}),
        )
        .await;
        let goals = format!("/v1/sites/{site}/goals");
        admin_post(&ingest, &goals, &json!({"event_name": "signup"})).await;
    }
    eventually(
        Duration::from_secs(30),
        "the goals in PostgreSQL",
        || async {
            (stack
                .count("SELECT count(*) FROM sites WHERE jsonb_array_length(goals) = 1")
                .await
                == 3)
                .then_some(())
        },
    )
    .await;
    // Visits of the last two days and a bit, up to a minute ago.
    let now = Utc::now();
    let until = (now - TimeDelta::minutes(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events: Vec<Value> = generate_from(
        900,
        20_261_207,
        &SITES,
        now - TimeDelta::hours(52),
        40 * 3_600,
    )
    .into_iter()
    .filter(|e| e["timestamp"].as_str().expect("a timestamp") < until.as_str())
    .collect();
    post_all(&ingest.url(), &events).await;
    stack
        .wait_all_stored(
            events.len() as i64,
            Duration::from_secs(300),
            "every event stored",
        )
        .await;
    assert_visits_match_events(&stack).await;
    eventually(
        Duration::from_secs(120),
        "the pair cells of every sealed day and every sealed hour of the last two days built",
        || async {
            (stack
                .count(
                    "SELECT count(*) FROM visit_rollups r \
                     WHERE dimension = 0 AND ( \
                         (span_hours = 1 AND tally_visit_hour_sealed(bucket) \
                          AND tally_visit_hour_readable(bucket) AND NOT EXISTS ( \
                             SELECT 1 FROM visit_rollup_hours h WHERE h.site_id = r.site_id \
                               AND h.hour = r.bucket AND h.generation = h.built_generation)) \
                      OR (span_hours = 24 AND tally_visit_day_sealed(bucket) AND NOT EXISTS ( \
                             SELECT 1 FROM visit_rollup_days d WHERE d.site_id = r.site_id \
                               AND d.day = r.bucket AND d.generation = d.built_generation)))",
                )
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
    // No worker from here on: it would build the hours made out of date below.
    worker.kill_9().await;
    assert!(
        stack
            .count("SELECT count(*) FROM visit_rollup_hours WHERE generation = built_generation")
            .await
            >= 3 * 30,
        "thirty hours of each site built"
    );

    let today = now.date_naive();
    let (first, last) = (
        (today - chrono::Days::new(3)).to_string(),
        (today + chrono::Days::new(1)).to_string(),
    );
    let through_hours = answers(&stack, &stats, (&first, &last)).await;
    toggle_built(&stack, "visit_rollup_hours").await;
    let from_visits = answers(&stack, &stats, (&first, &last)).await;
    for (h, v) in through_hours.iter().zip(&from_visits) {
        assert_eq!(
            h, v,
            "an answer through pair hour rows differs from the visits alone"
        );
    }
    // The same with no day built either: the hours of yesterday too are read from hour rows.
    toggle_built(&stack, "visit_rollup_days").await;
    let from_visits_alone = answers(&stack, &stats, (&first, &last)).await;
    toggle_built(&stack, "visit_rollup_hours").await;
    let through_hours_alone = answers(&stack, &stats, (&first, &last)).await;
    for (h, v) in through_hours_alone.iter().zip(&from_visits_alone) {
        assert_eq!(
            h, v,
            "an answer through pair hour rows, no day built, differs from the visits alone"
        );
    }
    assert_eq!(
        through_hours, from_visits_alone,
        "days or no days, one answer"
    );

    // Hour rows are read: visits added to those of yesterday and today show in the
    // filtered breakdown (no day built: every hour of the range is under two days old).
    let since = (today - chrono::Days::new(1)).to_string();
    let hour_rows = stack
        .count(&format!(
            "SELECT count(*) FROM visit_pair_hour_rollups WHERE site_id = 'h-utc' \
             AND first_dimension = 3 AND second_dimension = 10 AND second_value = 'mobile' \
             AND hour >= '{since}'"
        ))
        .await;
    assert!(hour_rows > 0, "pair hour rows of yesterday and today");
    let body = json!({"site_id": "h-utc", "metrics": ["visits"], "dimensions": ["visit:source"],
                      "date_range": [since, last],
                      "filters": [["is", "visit:device", ["mobile"]]]});
    let before: f64 = first_metric_of_each_row(&stack, &stats, "h-utc", &body)
        .await
        .iter()
        .sum();
    execute(
        &stack,
        &format!(
            "UPDATE visit_pair_hour_rollups SET visits = visits + 1000 \
             WHERE site_id = 'h-utc' AND first_dimension = 3 AND second_dimension = 10 \
               AND second_value = 'mobile' AND hour >= '{since}'"
        ),
    )
    .await;
    let added = first_metric_of_each_row(&stack, &stats, "h-utc", &body)
        .await
        .iter()
        .sum::<f64>()
        - before;
    assert!(
        (added - 1_000.0 * hour_rows as f64).abs() < f64::EPSILON,
        "the built hours of the range are read from pair hour rows: {added} added"
    );
}
