//! Goals and funnels end to end, on a hand-made data set whose answers are worked out
//! below by hand: made on ingest-api, stored by the worker with the site, applied by
//! stats-api to past events, replays included.

use crate::helpers::{Service, Stack, admin_post};
use crate::query::{post_all, query, rows};
use domain::testing::eventually;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SITE: &str = "funnel-shop";

/// One visitor's events: (minutes after 10:00 on 2025-06-02, page path or event name).
/// Names starting with `/` are page views.
fn events_of(site: &str, visitor: &str, steps: &[(i64, &str)], width: u32) -> Vec<Value> {
    let base = chrono::DateTime::parse_from_rfc3339("2025-06-02T10:00:00Z").expect("valid");
    steps
        .iter()
        .enumerate()
        .map(|(i, (minute, what))| {
            let ts = base + chrono::TimeDelta::minutes(*minute);
            let (event_type, path) = if what.starts_with('/') {
                ("page_view", *what)
            } else {
                (*what, "/app")
            };
            // Fixed ids: sending a visitor's events again is a replay.
            let n: u64 = visitor.bytes().map(u64::from).sum::<u64>() * 100 + i as u64;
            json!({"site_id": site, "event_type": event_type,
                   "timestamp": ts.to_rfc3339(), "url": format!("https://{site}.example{path}"),
                   "screen_width": width, "user_id": visitor,
                   "event_id": format!("00000000-0000-4000-8000-{n:012}")})
        })
        .collect()
}

/// The data set. Funnel: Visit /pricing → Signup → Visit /welcome/**, within one visit.
///
/// | visitor | events (minutes)                                   | funnel step |
/// |---------|----------------------------------------------------|-------------|
/// | a (m)   | /pricing 0, Signup 2, /welcome/start 3             | 3           |
/// | b (m)   | /pricing 0, /welcome/x 1, Signup 2                 | 2 (order)   |
/// | c       | Signup 0, /pricing 1                               | 1 (order)   |
/// | d       | /pricing 0; 40 min later: Signup 40, /welcome/a/b 41 | 1 (visits) |
/// | e       | /home 0                                            | 0           |
/// | f       | /pricing 0, Signup 1, /welcome/a 2 (sent twice)    | 3           |
/// | g       | /pricing/extra 0, Signup 1                         | 0 (pattern) |
/// | h       | /pricing 0, Signup 1, Signup 2, /welcome/z 3; 60 min later: /pricing 60, Signup 61 | 3 |
///
/// (m): a phone's screen. Eight visitors; per goal (events, visitors):
/// Visit /pricing (7, 6: a b c d f h, h twice), Signup (9, 7: all but e; h three
/// times), Visit /welcome/** (5, 5: a b d f h).
fn data_set(site: &str) -> Vec<Value> {
    let events_of = |visitor, steps, width| events_of(site, visitor, steps, width);
    let mut events = Vec::new();
    events.extend(events_of(
        "a",
        &[(0, "/pricing"), (2, "Signup"), (3, "/welcome/start")],
        400,
    ));
    events.extend(events_of(
        "b",
        &[(0, "/pricing"), (1, "/welcome/x"), (2, "Signup")],
        400,
    ));
    let desktop = 1400;
    events.extend(events_of("c", &[(0, "Signup"), (1, "/pricing")], desktop));
    events.extend(events_of(
        "d",
        &[(0, "/pricing"), (40, "Signup"), (41, "/welcome/a/b")],
        desktop,
    ));
    events.extend(events_of("e", &[(0, "/home")], desktop));
    events.extend(events_of(
        "f",
        &[(0, "/pricing"), (1, "Signup"), (2, "/welcome/a")],
        desktop,
    ));
    events.extend(events_of(
        "g",
        &[(0, "/pricing/extra"), (1, "Signup")],
        desktop,
    ));
    events.extend(events_of(
        "h",
        &[
            (0, "/pricing"),
            (1, "Signup"),
            (2, "Signup"),
            (3, "/welcome/z"),
            (60, "/pricing"),
            (61, "Signup"),
        ],
        desktop,
    ));
    events
}

async fn get(stats: &Service, path: &str) -> (u16, Value) {
    let res = reqwest::get(format!("{}{path}", stats.url()))
        .await
        .expect("stats-api reachable");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Makes the site's three goals and its funnel; returns the funnel's id once stored.
async fn make_goals_and_funnel(ingest: &Service, stats: &Service, site: &str) -> String {
    let goals_path = format!("/v1/sites/{site}/goals");
    admin_post(ingest, &goals_path, &json!({"page_path": "/pricing"})).await;
    admin_post(ingest, &goals_path, &json!({"event_name": "Signup"})).await;
    admin_post(ingest, &goals_path, &json!({"page_path": "/welcome/**"})).await;
    let funnel = admin_post(
        ingest,
        &format!("/v1/sites/{site}/funnels"),
        &json!({"name": "Checkout", "steps": ["Visit /pricing", "Signup", "Visit /welcome/**"]}),
    )
    .await;
    let funnel_id = funnel["funnel_id"].as_str().expect("an id").to_string();
    // The worker stores the site with its funnel; stats read it from PostgreSQL.
    let listed = eventually(Duration::from_secs(30), "the funnel stored", || async {
        let (status, body) = get(stats, &format!("/v1/sites/{site}/funnels")).await;
        (status == 200 && body["funnels"].as_array().is_some_and(|f| f.len() == 1)).then_some(body)
    })
    .await;
    assert_eq!(
        listed["funnels"][0]["steps"][2]["display_name"],
        "Visit /welcome/**"
    );
    funnel_id
}

#[tokio::test]
async fn goals_convert_and_a_funnel_drops_off_as_worked_out_by_hand() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    admin_post(&ingest, "/v1/sites", &json!({"site_id": SITE})).await;
    let events = data_set(SITE);
    post_all(&ingest.url(), &events).await;
    // f again: a replay changes nothing.
    post_all(
        &ingest.url(),
        &events_of(
            SITE,
            "f",
            &[(0, "/pricing"), (1, "Signup"), (2, "/welcome/a")],
            1400,
        ),
    )
    .await;
    stack
        .wait_all_stored(
            events.len() as i64,
            Duration::from_secs(30),
            "the data set stored",
        )
        .await;

    // Goals made after the events apply to them.
    let funnel_id = make_goals_and_funnel(&ingest, &stats, SITE).await;
    // The goals' cells answer the queries below: the change of goals built them from the
    // events stored before it, translating page patterns as the query API does.
    assert!(
        stack
            .count("SELECT count(*) FROM visit_rollups WHERE goal_id IS NOT NULL")
            .await
            > 0
    );
    let pg = stack.db.pool().get().await.expect("pg");
    for pattern in [
        "/welcome/**",
        "/a.(b)*",
        "/**/x",
        "/p1*",
        "***",
        r"/x\y[z]{1}^$|?+",
    ] {
        let in_sql: String = pg
            .query_one("SELECT tally_goal_path_regex($1)", &[&pattern])
            .await
            .expect("translating a pattern")
            .get(0);
        assert_eq!(
            in_sql,
            domain::goals::path_pattern_regex(pattern),
            "{pattern}"
        );
    }

    assert_hand_worked_answers(&stats, SITE, &funnel_id).await;
}

/// The same data set on a site whose goals and funnel come first, its events sent one at
/// a time in reverse order: each one converts when it is written, late events join the
/// visits stored before them, and the answers are the same.
#[tokio::test]
async fn goals_made_before_events_sent_backwards_give_the_same_answers() {
    const BACKWARDS: &str = "funnel-shop-backwards";
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "5")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    admin_post(&ingest, "/v1/sites", &json!({"site_id": BACKWARDS})).await;
    let funnel_id = make_goals_and_funnel(&ingest, &stats, BACKWARDS).await;
    let events = data_set(BACKWARDS);
    for (i, event) in events.iter().rev().enumerate() {
        post_all(&ingest.url(), std::slice::from_ref(event)).await;
        stack
            .wait_all_stored(i as i64 + 1, Duration::from_secs(30), "each event stored")
            .await;
    }
    assert_hand_worked_answers(&stats, BACKWARDS, &funnel_id).await;
    crate::helpers::assert_visits_match_events(&stack).await;
}

/// The answers worked out by hand for [`data_set`] on `site`.
async fn assert_hand_worked_answers(stats: &Service, site: &str, funnel_id: &str) {
    let day = json!(["2025-06-02", "2025-06-02"]);
    let (status, answer) = query(
        stats,
        &json!({"site_id": site, "date_range": day, "dimensions": ["event:goal"],
                "metrics": ["visitors", "events", "conversion_rate"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let by_goal = |rows: &[(&str, [f64; 3])]| -> BTreeMap<Vec<String>, Vec<f64>> {
        rows.iter()
            .map(|(g, m)| (vec![(*g).to_string()], m.to_vec()))
            .collect()
    };
    assert_eq!(
        rows(&answer),
        by_goal(&[
            ("Visit /pricing", [6.0, 7.0, 75.0]),
            ("Signup", [7.0, 9.0, 87.5]),
            ("Visit /welcome/**", [5.0, 5.0, 62.5]),
        ])
    );
    // The goals of phones' visits (a and b): every one of them converted on all three.
    let (_, phones) = query(
        stats,
        &json!({"site_id": site, "date_range": day, "dimensions": ["event:goal"],
                "metrics": ["visitors", "events", "conversion_rate"],
                "filters": [["is", "visit:device", ["mobile"], {"case_sensitive": false}]]}),
    )
    .await;
    assert_eq!(
        rows(&phones),
        by_goal(&[
            ("Visit /pricing", [2.0, 2.0, 100.0]),
            ("Signup", [2.0, 2.0, 100.0]),
            ("Visit /welcome/**", [2.0, 2.0, 100.0]),
        ])
    );
    // A goal filter on visits: converted visitors and visits (h converted in both of
    // its visits, d only in its second), over all eight visitors.
    let (status, signups) = query(
        stats,
        &json!({"site_id": site, "date_range": day,
                "metrics": ["visitors", "visits", "conversion_rate"],
                "filters": [["is", "event:goal", ["Signup"]]]}),
    )
    .await;
    assert_eq!(status, 200, "{signups}");
    assert_eq!(signups["results"][0]["metrics"], json!([7, 8, 87.5]));

    let (status, report) = get(
        stats,
        &format!("/v1/sites/{site}/funnels/{funnel_id}?date_range=2025-06-02,2025-06-02"),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (
            &report["all_visitors"],
            &report["entering_visitors"],
            &report["never_entering_visitors"],
            &report["conversion_rate"]
        ),
        (&json!(8), &json!(6), &json!(2), &json!(37.5))
    );
    let steps: Vec<(i64, f64, f64, i64, f64)> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["visitors"].as_i64().unwrap_or(-1),
                s["conversion_rate"].as_f64().unwrap_or(-1.0),
                s["conversion_rate_step"].as_f64().unwrap_or(-1.0),
                s["dropoff"].as_i64().unwrap_or(-1),
                s["dropoff_percentage"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (6, 100.0, 100.0, 0, 0.0),
            (4, 66.67, 66.67, 2, 33.33),
            (3, 50.0, 75.0, 1, 25.0),
        ]
    );
    assert_eq!(report["steps"][1]["label"], "Signup");

    // What this version refuses, by name.
    for (body, named) in [
        (json!({"metrics": ["conversion_rate"]}), "conversion_rate"),
        (
            json!({"metrics": ["visitors"], "dimensions": ["event:goal", "time:day"]}),
            "time:day",
        ),
        (
            json!({"metrics": ["bounce_rate"], "dimensions": ["event:goal"]}),
            "bounce_rate",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["is", "event:goal", ["Nope"]]]}),
            "Nope",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["not", ["is", "event:goal", ["Signup"]]]]}),
            "top level",
        ),
    ] {
        let mut body = body;
        body["site_id"] = json!(site);
        body["date_range"] = day.clone();
        let (status, answer) = query(stats, &body).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer.to_string().contains(named), "{body} → {answer}");
    }
    let (status, _) = get(stats, &format!("/v1/sites/{site}/funnels/f_nope")).await;
    assert_eq!(status, 404);
    let (status, _) = get(
        stats,
        &format!("/v1/sites/{site}/funnels/{funnel_id}?date_range=2025-06-03,2025-06-01"),
    )
    .await;
    assert_eq!(status, 400);
}
