//! Week cells (migrations 0019, 0021 and 0022) and pair day cells (0024) seen from the
//! query API: every rollup query answers the same through week rows as from day rows alone
//! (or, for pair cells, pair day cells alone, and the visits alone), and the week rows and
//! pair day rows are really read.

use crate::helpers::{Service, Stack, admin_post, assert_visits_match_events};
use crate::query::{SITES, generate, post_all, query};
use domain::testing::eventually;
use serde_json::{Value, json};
use std::time::Duration;

/// The dashboard's rollup queries, and the goal and funnel ones, over `range`.
pub(crate) fn bodies(site: &str, range: (&str, &str)) -> Vec<Value> {
    let base = json!({"site_id": site, "date_range": [range.0, range.1]});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    vec![
        with(
            json!({"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"]}),
        ),
        with(json!({"metrics": ["visitors"], "dimensions": ["time:day"]})),
        with(json!({"metrics": ["visitors", "percentage"], "dimensions": ["visit:source"]})),
        with(json!({"metrics": ["pageviews", "events"], "dimensions": ["event:page"]})),
        with(json!({"metrics": ["visits"], "dimensions": ["visit:entry_page"]})),
        with(json!({"metrics": ["visits"], "dimensions": ["visit:exit_page"]})),
        with(
            json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:device"]}),
        ),
        // Filtered by one kept dimension: pair week cells, and the device's own cells.
        with(
            json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration", "percentage"],
                    "dimensions": ["visit:source"], "filters": [["is", "visit:device", ["mobile"]]]}),
        ),
        with(
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:device"],
                    "filters": [["not", ["is", "visit:source", ["Google"]]]]}),
        ),
        with(
            json!({"metrics": ["visitors", "visits"], "filters": [["is", "visit:device", ["tablet"]]]}),
        ),
        with(
            json!({"metrics": ["visitors", "events", "conversion_rate"], "dimensions": ["event:goal"]}),
        ),
        with(
            json!({"metrics": ["visitors", "conversion_rate"], "dimensions": ["visit:source"],
                    "filters": [["is", "event:goal", ["signup"]]]}),
        ),
    ]
}

/// `body` and the answer to it (a query of `site`), uncached, without its `meta`.
pub(crate) async fn uncached_answer(
    stack: &Stack,
    stats: &Service,
    site: &str,
    body: Value,
) -> Value {
    drop_cached_answers(stack, site).await;
    let (status, mut answer) = query(stats, &body).await;
    assert_eq!(status, 200, "{body}: {answer}");
    answer.as_object_mut().map(|a| a.remove("meta"));
    json!({"body": body, "answer": answer})
}

/// Every answer of `bodies` for every site and range, uncached, and the funnel's.
async fn answers(
    stack: &Stack,
    stats: &Service,
    funnels: &[String],
    ranges: &[(&str, &str)],
) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for ((site, _), funnel) in SITES.iter().zip(funnels) {
        for range in ranges {
            for body in bodies(site, *range) {
                out.push(uncached_answer(stack, stats, site, body).await);
            }
            let funnel = client
                .get(format!(
                    "{}/v1/sites/{site}/funnels/{funnel}?date_range={},{}",
                    stats.url(),
                    range.0,
                    range.1
                ))
                .send()
                .await
                .expect("stats-api reachable");
            assert_eq!(funnel.status(), 200);
            out.push(funnel.json().await.expect("funnel JSON"));
        }
    }
    out
}

#[tokio::test]
async fn answers_through_week_rows_equal_those_of_day_rows_alone() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let mut funnels = Vec::new();
    for (site, zone) in SITES {
        admin_post(
            &ingest,
            "/v1/sites",
            &json!({"site_id": site, "domains": [format!("{site}.example")], "timezone": zone}),
        )
        .await;
        let goals = format!("/v1/sites/{site}/goals");
        admin_post(&ingest, &goals, &json!({"page_path": "/p1*"})).await;
        admin_post(&ingest, &goals, &json!({"event_name": "signup"})).await;
        let funnel = admin_post(
            &ingest,
            &format!("/v1/sites/{site}/funnels"),
            &json!({"name": "p1 then signup", "steps": ["Visit /p1*", "signup"]}),
        )
        .await;
        funnels.push(
            funnel["funnel_id"]
                .as_str()
                .expect("a funnel id")
                .to_string(),
        );
    }
    eventually(
        Duration::from_secs(30),
        "the funnels in PostgreSQL",
        || async {
            (stack
                .count("SELECT count(*) FROM sites WHERE jsonb_array_length(funnels) = 1")
                .await
                == 3)
                .then_some(())
        },
    )
    .await;
    let events = generate(1_500, 20_261_206);
    post_all(&ingest.url(), &events).await;
    stack
        .wait_all_stored(
            events.len() as i64,
            Duration::from_secs(300),
            "every event stored",
        )
        .await;
    // Checks the rows against the visits, week rows included, once every week is built.
    assert_visits_match_events(&stack).await;
    let built = "SELECT count(*) FROM visit_rollup_weeks WHERE generation = built_generation";
    assert!(
        stack.count(built).await >= 6,
        "two weeks of each site built"
    );
    // Every day of the ranges below: the days around their whole weeks are read from pair
    // day cells.
    eventually(
        Duration::from_secs(60),
        "the pair day cells of every site's days built",
        || async {
            (stack
                .count(
                    "SELECT count(*) FROM visit_rollups r \
                     WHERE dimension = 0 AND span_hours = 24 AND NOT EXISTS ( \
                         SELECT 1 FROM visit_rollup_days d WHERE d.site_id = r.site_id \
                           AND d.day = r.bucket AND d.generation = d.built_generation)",
                )
                .await
                == 0)
                .then_some(())
        },
    )
    .await;
    // No worker from here on: it would build the weeks made out of date below.
    worker.kill_9().await;

    // A whole week with a day either side, two whole weeks, a range inside one week, and
    // one holding no whole week.
    let ranges = [
        ("2025-06-01", "2025-06-09"),
        ("2025-06-02", "2025-06-15"),
        ("2025-06-03", "2025-06-06"),
        ("2025-05-30", "2025-06-04"),
    ];
    let through_weeks = answers(&stack, &stats, &funnels, &ranges).await;
    execute(
        &stack,
        "UPDATE visit_rollup_weeks SET built_generation = -1",
    )
    .await;
    let from_days = answers(&stack, &stats, &funnels, &ranges).await;
    for (w, d) in through_weeks.iter().zip(&from_days) {
        assert_eq!(
            w, d,
            "an answer through week rows differs from day rows alone"
        );
    }
    // Nor pair day cells: the filtered breakdowns read the visits alone.
    execute(&stack, "UPDATE visit_rollup_days SET built_generation = -1").await;
    let from_visits = answers(&stack, &stats, &funnels, &ranges).await;
    for (w, v) in through_weeks.iter().zip(&from_visits) {
        assert_eq!(
            w, v,
            "an answer through week rows and pair day rows differs from the visits alone"
        );
    }

    // Week rows are read: visits added to them show in a range's totals once they count
    // as built again (and only then).
    execute(
        &stack,
        "UPDATE visit_rollups SET visits = visits + 1000 WHERE span_hours = 168 AND dimension = 0",
    )
    .await;
    execute(
        &stack,
        "UPDATE page_week_rollups SET views = views + 1000 WHERE event_type = 'page_view'",
    )
    .await;
    let before = q_utc_visits(&stack, &stats, ranges[1]).await;
    let pages_before = q_utc_pageviews(&stack, &stats, ranges[1]).await;
    execute(
        &stack,
        "UPDATE visit_rollup_weeks SET built_generation = generation",
    )
    .await;
    execute(
        &stack,
        "UPDATE visit_rollup_days SET built_generation = generation",
    )
    .await;
    assert!(
        (q_utc_visits(&stack, &stats, ranges[1]).await - before - 2_000.0).abs() < f64::EPSILON,
        "the two whole weeks of the range are read from their week rows"
    );
    // Pair week cells are read: visits added to them show in a filtered breakdown.
    let pair_rows = stack
        .count(
            "SELECT count(*) FROM visit_pair_week_rollups WHERE site_id = 'q-utc' \
             AND first_dimension = 3 AND second_dimension = 10 AND second_value = 'mobile' \
             AND week IN ('2025-06-02', '2025-06-09')",
        )
        .await;
    assert!(pair_rows > 0, "pair week rows of the range's weeks");
    let mobile_by_source = || q_utc_mobile_visits_by_source(&stack, &stats, ranges[1]);
    let before: f64 = mobile_by_source().await.iter().sum();
    execute(
        &stack,
        "UPDATE visit_pair_week_rollups SET visits = visits + 1000 \
         WHERE site_id = 'q-utc' AND first_dimension = 3 AND second_dimension = 10 \
           AND second_value = 'mobile'",
    )
    .await;
    let added = mobile_by_source().await.iter().sum::<f64>() - before;
    assert!(
        (added - 1_000.0 * pair_rows as f64).abs() < f64::EPSILON,
        "the range's two whole weeks are read from pair week rows: {added} added"
    );
    // Pair day cells are read: visits added to those of the days around the range's whole
    // week show in the filtered breakdown.
    let day_rows = stack
        .count(
            "SELECT count(*) FROM visit_pair_day_rollups WHERE site_id = 'q-utc' \
             AND first_dimension = 3 AND second_dimension = 10 AND second_value = 'mobile' \
             AND day IN ('2025-06-01', '2025-06-09')",
        )
        .await;
    assert!(day_rows > 0, "pair day rows of the days around the week");
    let before: f64 = q_utc_mobile_visits_by_source(&stack, &stats, ranges[0])
        .await
        .iter()
        .sum();
    execute(
        &stack,
        "UPDATE visit_pair_day_rollups SET visits = visits + 1000 \
         WHERE site_id = 'q-utc' AND first_dimension = 3 AND second_dimension = 10 \
           AND second_value = 'mobile'",
    )
    .await;
    let added = q_utc_mobile_visits_by_source(&stack, &stats, ranges[0])
        .await
        .iter()
        .sum::<f64>()
        - before;
    assert!(
        (added - 1_000.0 * day_rows as f64).abs() < f64::EPSILON,
        "the days around the range's whole week are read from pair day rows: {added} added"
    );
    let week_rows = stack
        .count(
            "SELECT count(*) FROM page_week_rollups \
             WHERE site_id = 'q-utc' AND event_type = 'page_view' AND week IN ('2025-06-02', '2025-06-09')",
        )
        .await;
    assert!(week_rows > 0, "page week rows of the range's weeks");
    let pages_after = q_utc_pageviews(&stack, &stats, ranges[1]).await;
    assert_eq!(pages_after.len(), pages_before.len(), "the same paths");
    let added: f64 = pages_after
        .iter()
        .zip(&pages_before)
        .map(|(after, before)| after - before)
        .sum();
    assert!(
        (added - 1_000.0 * week_rows as f64).abs() < f64::EPSILON,
        "the range's two whole weeks are read from page week rows: {added} added"
    );
}

/// The page views per path of site `q-utc` over `range`, uncached, ordered by path.
async fn q_utc_pageviews(stack: &Stack, stats: &Service, range: (&str, &str)) -> Vec<f64> {
    let body = json!({"site_id": "q-utc", "metrics": ["pageviews"], "dimensions": ["event:page"],
                      "date_range": [range.0, range.1], "order_by": [["event:page", "asc"]]});
    first_metric_of_each_row(stack, stats, "q-utc", &body).await
}

/// The visits of mobile devices per source of site `q-utc` over `range`, uncached.
async fn q_utc_mobile_visits_by_source(
    stack: &Stack,
    stats: &Service,
    range: (&str, &str),
) -> Vec<f64> {
    let body = json!({"site_id": "q-utc", "metrics": ["visits"], "dimensions": ["visit:source"],
                      "date_range": [range.0, range.1],
                      "filters": [["is", "visit:device", ["mobile"]]]});
    first_metric_of_each_row(stack, stats, "q-utc", &body).await
}

/// The first metric of each row of the uncached answer to `body` (a query of `site`).
pub(crate) async fn first_metric_of_each_row(
    stack: &Stack,
    stats: &Service,
    site: &str,
    body: &Value,
) -> Vec<f64> {
    drop_cached_answers(stack, site).await;
    let (status, answer) = query(stats, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["metrics"][0].as_f64().expect("a number"))
        .collect()
}

pub(crate) async fn execute(stack: &Stack, sql: &str) {
    let client = stack.db.pool().get().await.expect("pg");
    client.batch_execute(sql).await.expect(sql);
}

/// Drops the answers cached for `site`.
pub(crate) async fn drop_cached_answers(stack: &Stack, site: &str) {
    let mut redis = stack.redis.conn().await;
    let mut pipe = domain::redis_client::pipe();
    domain::cache::bump_sites(&mut pipe, &stack.redis.keys(), [site]);
    pipe.query_async::<()>(&mut redis)
        .await
        .expect("cache dropped");
}

/// The visits of site `q-utc` over `range`, uncached.
async fn q_utc_visits(stack: &Stack, stats: &Service, range: (&str, &str)) -> f64 {
    let body = json!({"site_id": "q-utc", "metrics": ["visits"], "date_range": [range.0, range.1]});
    drop_cached_answers(stack, "q-utc").await;
    let (status, answer) = query(stats, &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["results"][0]["metrics"][0].as_f64().expect("visits")
}
