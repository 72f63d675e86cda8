//! `POST /v2/query` against ground truth computed here from the raw events: visits by a
//! gaps-and-islands pass in SQL over `events` (never the worker's `visits`), then plain
//! aggregates. Also late events joining and bridging visits, and bad queries.

use crate::helpers::{
    ADMIN_TOKEN, SKETCH_BOUND, Service, Stack, VISITS_FROM_EVENTS, assert_visits_match_events,
};
use domain::testing::eventually;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A fixed-seed generator (PCG-style LCG), so the data set is the same on every run.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

pub(crate) const SITES: [(&str, &str); 3] = [
    ("q-utc", "UTC"),
    ("q-berlin", "Europe/Berlin"),
    ("q-nyc", "America/New_York"),
];

/// Visitors with one to four visits each over ten days of June 2025: a referrer or UTM
/// tag on the first page of a visit, one to six pages minutes apart, sometimes a custom
/// event, phones, tablets and desktops. Returns the events.
pub(crate) fn generate(visitors: usize, seed: u64) -> Vec<Value> {
    let june = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .expect("valid")
        .to_utc();
    generate_from(visitors, seed, &SITES, june, 10 * 86_400)
}

/// [`generate`]'s visitors on `sites`, their first visits starting in the `span_secs`
/// seconds from `base` (later ones up to about 45 hours after).
pub(crate) fn generate_from(
    visitors: usize,
    seed: u64,
    sites: &[(&str, &str)],
    base: chrono::DateTime<chrono::Utc>,
    span_secs: u64,
) -> Vec<Value> {
    let mut rng = Seeded(seed);
    let referrers = [
        None,
        Some("https://www.google.com/search?q=tally"),
        Some("https://news.ycombinator.com/item?id=1"),
        Some("https://twitter.com/someone/status/1"),
        Some("https://blog.example.org/post"),
    ];
    let widths = [375, 800, 1440];
    let mut events = Vec::new();
    for v in 0..visitors {
        let (site, _) = sites[v % sites.len()];
        let width = widths[rng.below(3) as usize];
        let mut t = base + chrono::TimeDelta::seconds(rng.below(span_secs) as i64);
        for _ in 0..=rng.below(4) {
            let referrer = referrers[rng.below(referrers.len() as u64) as usize];
            let utm = if rng.below(5) == 0 {
                "?utm_source=newsletter"
            } else {
                ""
            };
            for page in 0..=rng.below(6) {
                let mut e = json!({
                    "site_id": site,
                    "event_type": "page_view",
                    "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "url": format!("https://{site}.example/p{}{}", rng.below(12), if page == 0 { utm } else { "" }),
                    "screen_width": width,
                    "user_id": format!("visitor-{v}"),
                });
                if page == 0
                    && let Some(r) = referrer
                {
                    e["referrer"] = json!(r);
                }
                events.push(e);
                t += chrono::TimeDelta::milliseconds(rng.below(20 * 60_000) as i64 + 1);
            }
            if rng.below(4) == 0 {
                let mut signup = json!({
                    "site_id": site,
                    "event_type": "signup",
                    "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "user_id": format!("visitor-{v}"),
                });
                // A plan on four signups in five (the fifth has no props).
                if v % 5 != 0 {
                    let plan = ["free", "pro", "team"][(v / 3) % 3];
                    signup["props"] = json!({ "plan": plan });
                }
                events.push(signup);
            }
            t += chrono::TimeDelta::minutes(30 + rng.below(600) as i64);
        }
    }
    events
}

/// A browser's User-Agent: page views without one are dropped as bots.
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

pub(crate) async fn post_all(ingest: &str, events: &[Value]) {
    use futures_util::StreamExt;
    let client = reqwest::Client::builder()
        .user_agent(BROWSER)
        .build()
        .expect("client");
    futures_util::stream::iter(events.chunks(1000))
        .for_each_concurrent(4, |chunk| {
            let client = client.clone();
            async move {
                loop {
                    let res = client
                        .post(format!("{ingest}/v1/events"))
                        .json(&json!({ "events": chunk }))
                        .send()
                        .await
                        .expect("ingest reachable");
                    match res.status().as_u16() {
                        202 => return,
                        429 | 503 => tokio::time::sleep(Duration::from_millis(50)).await,
                        s => panic!(
                            "ingest answered {s}: {}",
                            res.text().await.unwrap_or_default()
                        ),
                    }
                }
            }
        })
        .await;
}

pub(crate) async fn query(stats: &Service, body: &Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/v2/query", stats.url()))
        .json(body)
        .send()
        .await
        .expect("stats-api reachable");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The answer's rows as dimension values → metrics.
pub(crate) fn rows(answer: &Value) -> BTreeMap<Vec<String>, Vec<f64>> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let dims = r["dimensions"]
                .as_array()
                .expect("dimensions")
                .iter()
                .map(|d| d.as_str().expect("text").to_string())
                .collect();
            let metrics = r["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .map(|m| m.as_f64().expect("number"))
                .collect();
            (dims, metrics)
        })
        .collect()
}

/// Ground truth rows of `(path, views)` as the answer's rows.
async fn views_per_path(
    client: &domain::deadpool_postgres::Object,
    sql: &str,
) -> BTreeMap<Vec<String>, Vec<f64>> {
    client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| (vec![r.get::<_, String>(0)], vec![r.get(1)]))
        .collect()
}

/// Rows of a ground truth statement (`$1` site, `$2` zone, `$3`/`$4` the first and last
/// local day) as the answer's rows: the first column the dimension, then `metrics` numbers.
async fn truth_rows(
    client: &domain::deadpool_postgres::Object,
    sql: &str,
    (site, zone): (&str, &str),
    (first, last): (&str, &str),
    metrics: usize,
) -> BTreeMap<Vec<String>, Vec<f64>> {
    client
        .query(sql, &[&site, &zone, &first, &last])
        .await
        .expect(sql)
        .iter()
        .map(|r| {
            (
                vec![r.get::<_, String>(0)],
                (1..=metrics).map(|i| r.get(i)).collect(),
            )
        })
        .collect()
}

/// Ground truth: `[visitors, visits, pageviews, bounce_rate, visit_duration, percentage]`
/// per value of `column` (a SQL expression over the raw events' visits) for visits of
/// `site` starting on local days `first..=last` and matching `condition`, from
/// `truth_visits` (the raw events' visits by the test's SQL).
async fn truth(
    stack: &Stack,
    site: &str,
    zone: &str,
    (first, last): (&str, &str),
    column: &str,
    condition: &str,
) -> BTreeMap<Vec<String>, Vec<f64>> {
    let sql = format!(
        "WITH f AS (
             SELECT * FROM truth_visits WHERE site_id = $1 AND {condition}
                AND (started_at AT TIME ZONE $2)::date BETWEEN $3::text::date AND $4::text::date)
         SELECT {column}, count(DISTINCT visitor)::float8, count(*)::float8, sum(pageviews)::float8,
                round(100.0 * count(*) FILTER (WHERE pageviews = 1) / count(*))::float8,
                round(avg(extract(epoch FROM ended_at - started_at)))::float8,
                round(100.0 * count(DISTINCT visitor) / (SELECT count(DISTINCT visitor) FROM f), 1)::float8
         FROM f GROUP BY 1"
    );
    let client = stack.db.pool().get().await.expect("pg");
    truth_rows(&client, &sql, (site, zone), (first, last), 6).await
}

fn assert_same_groups(
    got: &BTreeMap<Vec<String>, Vec<f64>>,
    expected: &BTreeMap<Vec<String>, Vec<f64>>,
    what: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: the groups"
    );
}

/// Rows of `[visitors, visits, pageviews, bounce_rate, visit_duration, percentage]`: every
/// count, rate and duration exactly; visitors exactly up to the sketches' exact size
/// (docs/api.md), within 4 standard errors (3.3%) beyond; percentages as their visitors.
fn assert_visit_rows(
    got: &BTreeMap<Vec<String>, Vec<f64>>,
    expected: &BTreeMap<Vec<String>, Vec<f64>>,
    what: &str,
) {
    assert_same_groups(got, expected, what);
    let exact_up_to = domain::visits::EXACT_VISITORS_UP_TO as f64;
    let mut worst: f64 = 0.0;
    for (key, want) in expected {
        let have = &got[key];
        assert_eq!(
            have[1..5],
            want[1..5],
            "{what} {key:?}: visits, page views, bounce rate, duration"
        );
        let (v, t) = (have[0], want[0]);
        if t <= exact_up_to {
            assert_eq!(v, t, "{what} {key:?}: visitors, exact below {exact_up_to}");
        } else {
            let error = (v - t).abs() / t;
            worst = worst.max(error);
            assert!(
                error <= SKETCH_BOUND,
                "{what} {key:?}: visitors {v}, truth {t}"
            );
        }
        // The percentage's total is a sketch's count too.
        if let (Some(have), Some(want)) = (have.get(5), want.get(5)) {
            let allowed = 0.1 + 2.0 * SKETCH_BOUND * want;
            assert!(
                (have - want).abs() <= allowed,
                "{what} {key:?}: percentage {have} against {want}"
            );
        }
    }
    if worst > 0.0 {
        eprintln!("{what}: largest visitors error {:.3}%", worst * 100.0);
    }
}

#[tokio::test]
async fn the_query_api_matches_ground_truth_from_the_raw_events() {
    // 110,000 visitors make a little over a million events (TALLY_QUERY_VISITORS makes a
    // smaller set while developing).
    let chosen: Option<usize> = std::env::var("TALLY_QUERY_VISITORS")
        .ok()
        .and_then(|v| v.parse().ok());
    let visitors = chosen.unwrap_or(110_000);
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    // Batches written in two visitor-disjoint parts (not the default): the split must
    // give the same visits and rollups as whole batches.
    let _worker = stack
        .start(
            "batch-worker",
            &[("BATCH_MAX_WAIT_MS", "20"), ("EVENT_WRITE_PARTS", "2")],
        )
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let client = reqwest::Client::new();
    for (site, zone) in SITES {
        eventually(Duration::from_secs(30), "the site registered", || async {
            let res = client
                .post(format!("{}/v1/sites", ingest.url()))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"site_id": site, "domains": [format!("{site}.example")], "timezone": zone}))
                .send()
                .await
                .ok()?;
            (res.status() == 201).then_some(())
        })
        .await;
    }
    let events = generate(visitors, 20_251_205);
    assert!(
        chosen.is_some() || events.len() >= 1_000_000,
        "{} events",
        events.len()
    );
    post_all(&ingest.url(), &events).await;
    stack
        .wait_all_stored(
            events.len() as i64,
            Duration::from_secs(600),
            "every event stored",
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "the sites in PostgreSQL",
        || async { (stack.count("SELECT count(*) FROM sites").await == 3).then_some(()) },
    )
    .await;
    assert_visits_match_events(&stack).await;
    // The raw events' visits, computed once by the test's own SQL.
    let client_pg = stack.db.pool().get().await.expect("pg");
    client_pg
        .execute(
            &format!("CREATE TABLE truth_visits AS {VISITS_FROM_EVENTS}"),
            &[],
        )
        .await
        .expect("truth_visits");
    client_pg
        .batch_execute(
            "CREATE INDEX ON truth_visits (site_id, visitor, started_at); ANALYZE truth_visits; ANALYZE events;",
        )
        .await
        .expect("truth_visits indexed");

    // The range's whole week built (its cells and pair cells) for every site, so the
    // queries below read them.
    eventually(
        Duration::from_secs(120),
        "the week of June 2 built",
        || async {
            let built = stack
                .count(
                    "SELECT count(*) FROM visit_rollup_weeks \
                 WHERE week = '2025-06-02T00:00:00Z' AND generation = built_generation",
                )
                .await;
            (built == 3).then_some(())
        },
    )
    .await;
    let pairs = "SELECT count(DISTINCT site_id) FROM visit_pair_week_rollups \
                 WHERE week = '2025-06-02T00:00:00Z' AND first_dimension = 3 AND second_dimension = 10";
    assert_eq!(
        stack.count(pairs).await,
        3,
        "pair cells of source and device"
    );
    let range = ("2025-06-02", "2025-06-09");
    let metrics = json!([
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
        "percentage"
    ]);
    let breakdowns = [
        ("visit:source", "coalesce(source, 'Direct / None')"),
        ("visit:device", "coalesce(device, '(none)')"),
        ("visit:entry_page", "coalesce(entry_page, '(none)')"),
        ("visit:exit_page", "coalesce(exit_page, '(none)')"),
        ("visit:utm_source", "coalesce(utm_source, '(none)')"),
        (
            "time:day",
            "to_char(started_at AT TIME ZONE $2, 'YYYY-MM-DD')",
        ),
    ];
    for (site, zone) in SITES {
        for (dimension, column) in breakdowns {
            let (status, answer) = query(
                &stats,
                &json!({"site_id": site, "metrics": metrics, "date_range": [range.0, range.1],
                        "dimensions": [dimension]}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let expected = truth(&stack, site, zone, range, column, "true").await;
            assert!(
                expected.len() > 1,
                "{site} {dimension}: too little data to compare"
            );
            assert_visit_rows(&rows(&answer), &expected, &format!("{site} by {dimension}"));
        }
        // The totals (the dashboard's top row), from the day rows and the hours of the
        // range's partial UTC days (Berlin and New York).
        let (status, answer) = query(
            &stats,
            &json!({"site_id": site, "metrics": metrics.as_array().expect("list")[..5],
                    "date_range": [range.0, range.1]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let expected: BTreeMap<Vec<String>, Vec<f64>> =
            truth(&stack, site, zone, range, "'all'", "true")
                .await
                .into_values()
                .map(|m| (vec![], m[..5].to_vec()))
                .collect();
        assert_visit_rows(&rows(&answer), &expected, &format!("{site} totals"));
        // Filtered: one device's visits by source (pair week cells for the range's whole
        // week, its last day from visits), everything but one source (the source cells),
        // and two dimensions at once (visits).
        for (filter, condition) in [
            (
                json!(["is", "visit:device", ["mobile"]]),
                "device = 'mobile'",
            ),
            (
                json!(["not", ["is", "visit:source", ["Google"]]]),
                "coalesce(source, 'Direct / None') <> 'Google'",
            ),
            (
                json!([
                    "or",
                    [
                        ["contains", "visit:entry_page", ["p1"]],
                        ["is", "visit:device", ["tablet"]]
                    ]
                ]),
                "(entry_page LIKE '%p1%' OR device = 'tablet')",
            ),
            (
                json!(["contains", "visit:source", ["GOOGLE", "news"], {"case_sensitive": false}]),
                "(lower(coalesce(source, 'Direct / None')) LIKE '%google%' \
                 OR lower(coalesce(source, 'Direct / None')) LIKE '%news%')",
            ),
        ] {
            let (status, answer) = query(
                &stats,
                &json!({"site_id": site, "metrics": metrics, "date_range": [range.0, range.1],
                        "dimensions": ["visit:source"], "filters": [filter]}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let expected = truth(
                &stack,
                site,
                zone,
                range,
                "coalesce(source, 'Direct / None')",
                condition,
            )
            .await;
            assert_visit_rows(
                &rows(&answer),
                &expected,
                &format!("{site} filtered by {filter}"),
            );
        }
        // Filtered by one kept dimension, other breakdowns: devices of visits from two
        // sources (one of them none: the label matches), visitors per day of all but
        // desktops (the device day cells), and the filtered totals.
        for (filter, condition, dimension, column) in [
            (
                json!(["is", "visit:source", ["Google", "Direct / None"]]),
                "coalesce(source, 'Direct / None') IN ('Google', 'Direct / None')",
                Some("visit:device"),
                "coalesce(device, '(none)')",
            ),
            (
                json!(["is_not", "visit:device", ["desktop"]]),
                "coalesce(device, '(none)') <> 'desktop'",
                Some("time:day"),
                "to_char(started_at AT TIME ZONE $2, 'YYYY-MM-DD')",
            ),
            (
                json!(["is", "visit:device", ["mobile"]]),
                "device = 'mobile'",
                None,
                "'all'",
            ),
        ] {
            let dimensions: Vec<&str> = dimension.into_iter().collect();
            let all = metrics.as_array().expect("list");
            // A percentage needs a breakdown.
            let metrics = if dimension.is_some() {
                &all[..]
            } else {
                &all[..5]
            };
            let (status, answer) = query(
                &stats,
                &json!({"site_id": site, "metrics": metrics, "date_range": [range.0, range.1],
                        "dimensions": dimensions, "filters": [filter]}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let mut expected = truth(&stack, site, zone, range, column, condition).await;
            if dimension.is_none() {
                expected = expected.into_values().map(|m| (vec![], m)).collect();
            }
            assert!(!expected.is_empty(), "{site} {filter}: no data to compare");
            assert_visit_rows(
                &rows(&answer),
                &expected,
                &format!("{site} by {dimensions:?} filtered by {filter}"),
            );
        }
    }
    // Page views per page come from the path rollups: against a count of raw page views.
    let (status, answer) = query(
        &stats,
        &json!({"site_id": "q-utc", "metrics": ["pageviews"], "date_range": [range.0, range.1],
                "dimensions": ["event:page"], "include": {"total_rows": true}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let expected = views_per_path(&client_pg, "SELECT path, count(*)::float8 FROM events WHERE site_id = 'q-utc' AND event_type = 'page_view'
               AND path IS NOT NULL AND ts >= '2025-06-02T00:00:00Z' AND ts < '2025-06-10T00:00:00Z'
             GROUP BY 1").await;
    assert_eq!(rows(&answer), expected);
    assert_eq!(answer["meta"]["total_rows"], json!(expected.len()));
    // Filtered by a visit dimension: the page views of visits from Google.
    let (status, answer) = query(
        &stats,
        &json!({"site_id": "q-utc", "metrics": ["pageviews"], "date_range": [range.0, range.1],
                "dimensions": ["event:page"], "filters": [["is", "visit:source", ["Google"]]]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let expected = views_per_path(&client_pg, "SELECT e.path, count(*)::float8 FROM events e JOIN truth_visits t
               ON t.site_id = e.site_id AND t.visitor = e.user_id AND e.ts BETWEEN t.started_at AND t.ended_at
             WHERE e.site_id = 'q-utc' AND e.event_type = 'page_view' AND e.path IS NOT NULL
               AND t.source = 'Google' AND e.ts >= '2025-06-02T00:00:00Z' AND e.ts < '2025-06-10T00:00:00Z'
             GROUP BY 1").await;
    assert!(!expected.is_empty());
    assert_eq!(rows(&answer), expected);
    conversions_match_ground_truth(&stack, &ingest, &stats, range).await;
    props_and_hosts_match_ground_truth(&stack, &stats, range).await;
}

/// `event:props:<key>` and `event:hostname` against the raw events of the range's local
/// days: plain, filtered by a prop, and filtered by a visit dimension.
async fn props_and_hosts_match_ground_truth(stack: &Stack, stats: &Service, range: (&str, &str)) {
    let pg = stack.db.pool().get().await.expect("pg");
    let cases = [
        (
            json!(["event:props:plan"]),
            json!([]),
            "coalesce(e.props->>'plan', '(none)')",
            "true",
        ),
        (
            json!(["event:hostname"]),
            json!([]),
            "coalesce(e.hostname, '(none)')",
            "true",
        ),
        (
            json!(["event:props:plan"]),
            json!([["is_not", "event:props:plan", ["free"]]]),
            "coalesce(e.props->>'plan', '(none)')",
            "coalesce(e.props->>'plan', '(none)') <> 'free'",
        ),
        (
            json!(["event:props:plan"]),
            json!([["is", "visit:device", ["mobile"]]]),
            "coalesce(e.props->>'plan', '(none)')",
            "EXISTS (SELECT 1 FROM truth_visits t WHERE t.site_id = e.site_id AND t.visitor = e.user_id
                 AND e.ts BETWEEN t.started_at AND t.ended_at AND t.device = 'mobile')",
        ),
    ];
    for (site, zone) in SITES {
        for (dimensions, filters, column, condition) in &cases {
            let (status, answer) = query(
                stats,
                &json!({"site_id": site, "date_range": [range.0, range.1], "dimensions": dimensions,
                        "metrics": ["visitors", "events", "pageviews"], "filters": filters}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let sql = format!(
                "SELECT {column}, count(DISTINCT e.user_id)::float8, count(*)::float8,
                        count(*) FILTER (WHERE e.event_type = 'page_view')::float8
                 FROM events e WHERE e.site_id = $1 AND {condition}
                   AND (e.ts AT TIME ZONE $2)::date BETWEEN $3::text::date AND $4::text::date
                 GROUP BY 1"
            );
            let expected = truth_rows(&pg, &sql, (site, zone), range, 3).await;
            assert!(
                expected.len() > 1,
                "{site} {dimensions}: too little to compare"
            );
            assert_eq!(
                rows(&answer),
                expected,
                "{site} by {dimensions} filtered by {filters}"
            );
        }
    }
}

/// The dashboard's goal queries against the raw events: goals made after the events
/// (a page pattern, a custom event), conversions per goal, and visits by source filtered to
/// those that converted. A conversion is a goal's event within a visit starting in the range
/// (`truth_visits`); the page pattern is matched here with LIKE, not the code's regex.
async fn conversions_match_ground_truth(
    stack: &Stack,
    ingest: &Service,
    stats: &Service,
    range: (&str, &str),
) {
    let client = reqwest::Client::new();
    for (site, _) in SITES {
        for goal in [
            json!({"page_path": "/p1*"}),
            json!({"event_name": "signup"}),
        ] {
            let res = client
                .post(format!("{}/v1/sites/{site}/goals", ingest.url()))
                .bearer_auth(ADMIN_TOKEN)
                .json(&goal)
                .send()
                .await
                .expect("ingest reachable");
            assert_eq!(res.status(), 201);
        }
    }
    // Each change recounts the site's stored events; six of them, on a box running other
    // tests.
    eventually(
        Duration::from_secs(120),
        "the goals in PostgreSQL",
        || async {
            let n = stack
                .count("SELECT count(*) FROM sites WHERE jsonb_array_length(goals) = 2")
                .await;
            (n == 3).then_some(())
        },
    )
    .await;
    let pg = stack.db.pool().get().await.expect("pg");
    let in_range = "WITH f AS (SELECT * FROM truth_visits WHERE site_id = $1
                       AND (started_at AT TIME ZONE $2)::date BETWEEN $3::text::date AND $4::text::date),
                   ev AS (SELECT e.user_id, e.event_type, e.path, f.started_at FROM events e JOIN f
                       ON f.site_id = e.site_id AND f.visitor = e.user_id
                       AND e.ts BETWEEN f.started_at AND f.ended_at WHERE e.site_id = $1)";
    for (site, zone) in SITES {
        let (status, answer) = query(
            stats,
            &json!({"site_id": site, "date_range": [range.0, range.1], "dimensions": ["event:goal"],
                    "metrics": ["visitors", "events", "conversion_rate"]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let sql = format!(
            "{in_range}, m AS (
                 SELECT 'Visit /p1*' AS goal, user_id FROM ev
                 WHERE event_type = 'page_view' AND path LIKE '/p1%' AND path NOT LIKE '/p1%/%'
                 UNION ALL SELECT 'signup', user_id FROM ev WHERE event_type = 'signup')
             SELECT goal, count(DISTINCT user_id)::float8, count(*)::float8,
                    round(100.0 * count(DISTINCT user_id) / (SELECT count(DISTINCT visitor) FROM f), 2)::float8
             FROM m GROUP BY 1"
        );
        let expected = truth_rows(&pg, &sql, (site, zone), range, 3).await;
        assert_eq!(expected.len(), 2, "{site}: both goals convert somewhere");
        assert_conversion_rows(
            &rows(&answer),
            &expected,
            [0, 2],
            &format!("{site} by event:goal"),
        );

        let (status, answer) = query(
            stats,
            &json!({"site_id": site, "date_range": [range.0, range.1], "dimensions": ["visit:source"],
                    "metrics": ["visitors", "visits", "conversion_rate"],
                    "filters": [["is", "event:goal", ["signup"]]]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let sql = format!(
            "{in_range}, converted AS (SELECT DISTINCT user_id, started_at FROM ev WHERE event_type = 'signup'),
                 c AS (SELECT f.*, converted.user_id IS NOT NULL AS converted FROM f LEFT JOIN converted
                       ON converted.user_id = f.visitor AND converted.started_at = f.started_at)
             SELECT coalesce(source, 'Direct / None'),
                    count(DISTINCT visitor) FILTER (WHERE converted)::float8,
                    count(*) FILTER (WHERE converted)::float8,
                    round(100.0 * count(DISTINCT visitor) FILTER (WHERE converted) / count(DISTINCT visitor), 2)::float8
             FROM c GROUP BY 1 HAVING count(*) FILTER (WHERE converted) > 0"
        );
        let expected = truth_rows(&pg, &sql, (site, zone), range, 3).await;
        assert!(
            expected.len() > 1,
            "{site}: conversions from several sources"
        );
        assert_conversion_rows(
            &rows(&answer),
            &expected,
            [0, 2],
            &format!("{site} by source, converted visits"),
        );
    }
    assert!(
        stack
            .count("SELECT count(*) FROM visit_rollups WHERE goal_id IS NOT NULL")
            .await
            > 0,
        "the goals' cells (which answer these queries) were built"
    );
}

/// Asserts conversion rows: the same groups, counts exact, the visitors (at `rated[0]`)
/// exact up to the sketches' exact size and within 4 standard errors above, and the
/// conversion rate (at `rated[1]`, a ratio of two such counts) within twice that.
fn assert_conversion_rows(
    got: &BTreeMap<Vec<String>, Vec<f64>>,
    expected: &BTreeMap<Vec<String>, Vec<f64>>,
    rated: [usize; 2],
    what: &str,
) {
    assert_same_groups(got, expected, what);
    let exact_up_to = domain::visits::EXACT_VISITORS_UP_TO as f64;
    for (key, want) in expected {
        let have = &got[key];
        for (i, (h, w)) in have.iter().zip(want).enumerate() {
            if i == rated[0] && *w > exact_up_to {
                assert!(
                    (h - w).abs() <= SKETCH_BOUND * w,
                    "{what} {key:?}: visitors {h}, truth {w}"
                );
            } else if i == rated[1] {
                assert!(
                    (h - w).abs() <= 0.01 + 2.0 * SKETCH_BOUND * w,
                    "{what} {key:?}: conversion rate {h}, truth {w}"
                );
            } else {
                assert_eq!(h, w, "{what} {key:?}: metric {i}");
            }
        }
    }
}

/// Sites whose time zones and goals change while their events drain: every day row of
/// the visit rollups ends in the site's last zone, and every visit's conversions and goal
/// cell are those of its last goals (each change rebuilds what it touches while the
/// writers of its events wait, and writers after it use the new settings).
#[tokio::test]
async fn zones_and_goals_changed_while_events_drain_leave_every_cell_of_the_last_ones() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start(
            "batch-worker",
            &[("BATCH_MAX_WAIT_MS", "20"), ("BATCH_MAX_ITEMS", "500")],
        )
        .await;
    let client = reqwest::Client::new();
    let set_zone = |site: &'static str, zone: &'static str, create: bool| {
        let client = client.clone();
        let base = ingest.url();
        async move {
            let req = if create {
                client
                    .post(format!("{base}/v1/sites"))
                    .json(&json!({"site_id": site, "domains": [format!("{site}.example")], "timezone": zone}))
            } else {
                client
                    .patch(format!("{base}/v1/sites/{site}"))
                    .json(&json!({"timezone": zone}))
            };
            let res = req.bearer_auth(ADMIN_TOKEN).send().await.ok()?;
            res.status().is_success().then_some(())
        }
    };
    for (site, zone) in SITES {
        eventually(Duration::from_secs(30), "the site registered", || {
            set_zone(site, zone, true)
        })
        .await;
    }
    let add_goal = |site: &'static str, goal: Value| {
        let client = client.clone();
        let base = ingest.url();
        async move {
            let res = client
                .post(format!("{base}/v1/sites/{site}/goals"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&goal)
                .send()
                .await
                .ok()?;
            (res.status() == 201).then_some(())?;
            let body: Value = res.json().await.ok()?;
            body["goal_id"].as_str().map(str::to_string)
        }
    };
    let events = generate(6_000, 7);
    let total = events.len() as i64;
    // Two thirds of the events are sent at once, the rest once the first change is stored:
    // so it lands mid-drain however fast the drain is.
    let first_change_stored = std::sync::Arc::new(tokio::sync::Notify::new());
    let posting = tokio::spawn({
        let url = ingest.url();
        let first_change_stored = first_change_stored.clone();
        async move {
            let (before, after) = events.split_at(events.len() * 2 / 3);
            post_all(&url, before).await;
            first_change_stored.notified().await;
            post_all(&url, after).await;
        }
    });
    // Each site changes zone three times while its events are being stored, the last
    // time to Chatham (UTC+12:45 in June: its days start at a quarter past the UTC hour).
    let zones = ["Asia/Tokyo", "America/Los_Angeles", "Pacific/Chatham"];
    let mut first_goals = Vec::new();
    let mut funnels = Vec::new();
    for (round, zone) in zones.iter().enumerate() {
        let stored_at_least = total * (round as i64 + 1) / 4;
        eventually(Duration::from_secs(120), "events being stored", || async {
            (stack.count("SELECT count(*) FROM events").await >= stored_at_least).then_some(())
        })
        .await;
        for (site, _) in SITES {
            eventually(Duration::from_secs(30), "the zone changed", || {
                set_zone(site, zone, false)
            })
            .await;
            // Goals come and go too: a page pattern, a custom event, then the first one
            // removed and another page pattern made.
            let goal = [
                json!({"page_path": "/p1*"}),
                json!({"event_name": "signup"}),
                json!({"page_path": "/p2**"}),
            ][round]
                .clone();
            let id = eventually(Duration::from_secs(30), "the goal made", || {
                add_goal(site, goal.clone())
            })
            .await;
            if round == 0 {
                first_goals.push((site, id));
            }
            if round == 2 {
                // A funnel, made while the events drain: a /p2 page, then a signup.
                let res = client
                    .post(format!("{}/v1/sites/{site}/funnels", ingest.url()))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(
                        &json!({"name": "p2, then signed up", "steps": ["Visit /p2**", "signup"]}),
                    )
                    .send()
                    .await
                    .expect("ingest reachable");
                assert_eq!(res.status(), 201, "the funnel made");
                let body: Value = res.json().await.expect("json");
                funnels.push((site, body["funnel_id"].as_str().expect("an id").to_string()));
            }
        }
        if round == 2 {
            for (site, id) in &first_goals {
                let res = client
                    .delete(format!("{}/v1/sites/{site}/goals/{id}", ingest.url()))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .expect("ingest reachable");
                assert_eq!(res.status(), 204, "the first goal removed");
            }
        }
        let in_pg = format!("SELECT count(*) FROM sites WHERE timezone = '{zone}'");
        // The change waits for the transactions writing the sites' events, then recounts.
        eventually(
            Duration::from_secs(120),
            "the zone in PostgreSQL",
            || async { (stack.count(&in_pg).await == 3).then_some(()) },
        )
        .await;
        if round == 0 {
            let stored = stack.count("SELECT count(*) FROM events").await;
            assert!(
                stored < total,
                "the first change should land mid-drain ({stored} of {total} stored)"
            );
            first_change_stored.notify_one();
        }
    }
    posting.await.expect("posted");
    stack
        .wait_all_stored(total, Duration::from_secs(300), "every event stored")
        .await;
    eventually(
        Duration::from_secs(30),
        "the last zones and goals in PostgreSQL",
        || async {
            (stack
                .count(
                    "SELECT count(*) FROM sites WHERE timezone = 'Pacific/Chatham' \
                     AND jsonb_array_length(goals) = 2 AND goals::text LIKE '%/p2**%' \
                     AND jsonb_array_length(funnels) = 1",
                )
                .await
                == 3)
                .then_some(())
        },
    )
    .await;
    assert!(
        stack
            .count(
                "SELECT count(DISTINCT goal_id) FROM visit_rollups \
                 WHERE goal_id IS NOT NULL AND dimension < 200"
            )
            .await
            == 6,
        "two goals of each site convert"
    );
    assert!(
        stack
            .count("SELECT count(*) FROM visit_rollups WHERE span_hours = 24")
            .await
            > 0
    );
    assert_visits_match_events(&stack).await;
    // Each funnel's report from its cells against the same report from the raw events.
    let from_events = stack
        .start("stats-api", &[("VISIT_ROLLUPS", "false")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let mut completed = 0;
    for (site, funnel) in &funnels {
        let path = format!("/v1/sites/{site}/funnels/{funnel}?date_range=2025-05-30,2025-06-15");
        let report = |service: &Service| {
            let url = format!("{}{path}", service.url());
            async move {
                let res = reqwest::get(url).await.expect("stats reachable");
                assert_eq!(res.status(), 200);
                res.json::<Value>().await.expect("json")
            }
        };
        let (cells, events) = (report(&stats).await, report(&from_events).await);
        assert_eq!(
            cells["steps"], events["steps"],
            "{site}: steps from cells and from events"
        );
        let (all, truth) = (
            cells["all_visitors"].as_f64().expect("a count"),
            events["all_visitors"].as_f64().expect("a count"),
        );
        assert!(
            (all - truth).abs() <= SKETCH_BOUND * truth,
            "{site}: all visitors {all}, from events {truth}"
        );
        completed += events["steps"][1]["visitors"].as_i64().expect("a count");
    }
    assert!(completed > 0, "some visitors completed the funnels");
}

/// A repaired sketch invalidates the answers cached while it over-counted: no batch may
/// come after it to do that.
#[tokio::test]
async fn a_repaired_sketch_replaces_the_cached_answer_that_counted_a_moved_visitor() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let event = json!({"site_id": "fix", "event_type": "page_view", "timestamp": "2025-06-01T10:00:00Z",
                       "path": "/", "user_id": "v", "referrer": "https://www.google.com/"});
    post_all(&ingest.url(), &[event]).await;
    stack
        .wait_all_stored(1, Duration::from_secs(30), "the event stored")
        .await;
    let visitors = async || {
        let (status, answer) = query(
            &stats,
            &json!({"site_id": "fix", "date_range": ["2025-06-01", "2025-06-01"], "metrics": ["visitors"]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        answer["results"][0]["metrics"][0]
            .as_f64()
            .expect("visitors")
    };
    // A visitor the day's sketch still holds after their visit moved away (as a late
    // event leaves it until the repair), answered and cached.
    let pg = stack.db.pool().get().await.expect("pg");
    pg.batch_execute(
        "UPDATE visit_rollups SET visitors = hll_add(visitors, hll_hash_text('moved'))
         WHERE site_id = 'fix' AND dimension = 0 AND span_hours = 24",
    )
    .await
    .expect("sketch");
    assert!((visitors().await - 2.0).abs() < f64::EPSILON);
    assert!(
        (visitors().await - 2.0).abs() < f64::EPSILON,
        "the answer is cached"
    );
    pg.batch_execute(
        "INSERT INTO visit_rollup_stale
         SELECT site_id, dimension, span_hours, bucket, value_key, value FROM visit_rollups
         WHERE site_id = 'fix' AND dimension = 0 AND span_hours = 24",
    )
    .await
    .expect("marked stale");
    eventually(Duration::from_secs(30), "the repaired answer", || async {
        ((visitors().await - 1.0).abs() < f64::EPSILON).then_some(())
    })
    .await;
}

#[tokio::test]
async fn late_events_join_bridge_and_start_visits() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let mut sent = std::collections::BTreeSet::new();
    let mut send = async |minute: i64, page: &str| {
        let ts = chrono::DateTime::parse_from_rfc3339("2025-06-01T10:00:00Z").expect("valid")
            + chrono::TimeDelta::minutes(minute);
        // The event id is the minute's: sending a minute twice is a replay.
        let event_id = format!("00000000-0000-4000-8000-{:012}", minute + 1000);
        let event = json!({"site_id": "late", "event_type": "page_view", "timestamp": ts.to_rfc3339(),
                           "path": page, "user_id": "v", "event_id": event_id});
        post_all(&ingest.url(), &[event]).await;
        sent.insert(minute);
        stack
            .wait_all_stored(
                sent.len() as i64,
                Duration::from_secs(30),
                "the event stored",
            )
            .await;
    };
    let visits = async || {
        let (status, answer) = query(
            &stats,
            &json!({"site_id": "late", "date_range": ["2025-06-01", "2025-06-01"],
                    "metrics": ["visits", "pageviews", "bounce_rate", "visit_duration"],
                    "dimensions": ["visit:entry_page", "visit:exit_page"]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        rows(&answer)
    };
    let row = |entry: &str, exit: &str, m: [f64; 4]| {
        (vec![entry.to_string(), exit.to_string()], m.to_vec())
    };

    send(0, "/a").await;
    send(40, "/b").await;
    assert_eq!(
        visits().await,
        BTreeMap::from([
            row("/a", "/a", [1.0, 1.0, 100.0, 0.0]),
            row("/b", "/b", [1.0, 1.0, 100.0, 0.0])
        ])
    );
    // Arriving late, 20 minutes in: it bridges the two into one 40-minute visit.
    send(20, "/c").await;
    assert_eq!(
        visits().await,
        BTreeMap::from([row("/a", "/b", [1.0, 3.0, 0.0, 2400.0])])
    );
    // An hour before the first: a visit of its own.
    send(-60, "/d").await;
    // 29 minutes before the first: it joins, and becomes the entry page.
    send(-29, "/e").await;
    assert_eq!(
        visits().await,
        BTreeMap::from([
            row("/d", "/d", [1.0, 1.0, 100.0, 0.0]),
            row("/e", "/b", [1.0, 4.0, 0.0, 69.0 * 60.0])
        ])
    );
    let before = visits().await;
    // Replayed: the same event again (as a retry or a reaped batch would) changes nothing.
    send(20, "/c").await;
    assert_eq!(
        stack.count("SELECT count(*) FROM events").await,
        5,
        "stored once"
    );
    assert_eq!(visits().await, before);
    let (status, answer) = query(
        &stats,
        &json!({"site_id": "late", "metrics": ["visits", "visitors"], "date_range": "all"}),
    )
    .await;
    assert_eq!(
        (status, &answer["results"]),
        (200, &json!([{"metrics": [2, 1], "dimensions": []}]))
    );
    assert_visits_match_events(&stack).await;
}

#[tokio::test]
async fn bad_queries_get_400_naming_the_problem() {
    let stack = Stack::new().await;
    let stats = stack.start("stats-api", &[]).await;
    let base = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d"});
    let with = |key: &str, value: Value| {
        let mut q = base.clone();
        q[key] = value;
        q
    };
    let many: Vec<String> = (0..10_000).map(|i| format!("v{i}")).collect();
    let cases = [
        (with("metrics", json!(["visitors", "revenue"])), "revenue"),
        (with("dimensions", json!(["visit:planet"])), "visit:planet"),
        (
            with("filters", json!([["resembles", "visit:source", ["x"]]])),
            "resembles",
        ),
        (
            with("date_range", json!(["2025-02-01", "2025-01-01"])),
            "reversed",
        ),
        (
            with("date_range", json!(["2000-01-01", "2025-01-01"])),
            "at most",
        ),
        (with("date_range", json!("fortnight")), "fortnight"),
        (
            with("filters", json!([["is", "visit:source", many]])),
            "10000 values",
        ),
        (
            with(
                "filters",
                json!([["matches", "visit:source", ["(unclosed"]]]),
            ),
            "regular expression",
        ),
        (
            with("dimensions", json!(["event:page", "visit:source"])),
            "cannot be combined",
        ),
        (with("metrics", json!(["conversion_rate"])), "event:goal"),
        (with("dimensions", json!(["event:props:"])), "property name"),
        (
            with("filters", json!([["is", "event:props:plan", ["pro"]]])),
            "event:props:plan cannot be combined",
        ),
        (
            with("dimensions", json!(["event:hostname", "visit:source"])),
            "cannot be combined",
        ),
        (
            with("order_by", json!([["bounce_rate", "desc"]])),
            "bounce_rate",
        ),
        (with("pagination", json!({"limit": 0})), "limit"),
        (with("colour", json!("blue")), "colour"),
        (
            with("dimensions", json!(["time:day", "time:hour"])),
            "one time dimension",
        ),
        (
            with(
                "filters",
                json!([["is", "visit:os", ["Linux"], {"loud": true}]]),
            ),
            "modifier",
        ),
        (
            with("date_range", json!(["-5000-1-1", "2025-01-01"])),
            "date_range[0]",
        ),
        (with("site_id", json!("a\u{0}b")), "NUL"),
        (
            with("filters", json!([["is", "visit:os", ["\u{0}"]]])),
            "NUL",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = query(&stats, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer.to_string();
        assert!(
            message.contains(needle),
            "{body}: {message} does not name {needle:?}"
        );
    }
    let (status, answer) = query(&stats, &base).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["results"],
        json!([{"metrics": [0], "dimensions": []}])
    );
}
