//! Sites end to end: registered through ingest-api, stored by the worker, their time zone
//! applied by stats-api to past data; browser events from a real HTTP client whose address
//! and User-Agent end up nowhere.

use crate::helpers::{ADMIN_TOKEN, Stack};
use domain::testing::eventually;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 TallyE2E/7";
const IPS: [&str; 2] = ["203.0.113.77", "198.51.100.88"];

async fn views_on(client: &reqwest::Client, stats: &str, date: &str) -> i64 {
    let body: serde_json::Value = client
        .get(format!("{stats}/v1/stats?site_id=nyc&date={date}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["total_views"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn a_sites_local_days_move_with_its_zone_and_no_trace_of_the_connection_is_kept() {
    let stack = Stack::new().await;
    let ingest = stack
        .start(
            "ingest-api",
            &[
                ("SITES_MODE", "registered"),
                ("TRUSTED_PROXIES", "127.0.0.1/32"),
                ("SITES_REFRESH_MS", "100"),
            ],
        )
        .await;
    let worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let client = reqwest::Client::new();

    // The worker first restores the (empty) registry; until then writes get 503.
    eventually(Duration::from_secs(30), "the site registered", || async {
        let res = client
            .post(format!("{}/v1/sites", ingest.url()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"site_id": "nyc", "domains": ["nyc.example"], "timezone": "America/New_York"}))
            .send()
            .await
            .ok()?;
        (res.status() == 201).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the site in PostgreSQL",
        || async {
            (stack
                .count("SELECT count(*) FROM sites WHERE site_id = 'nyc'")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;
    // Events wait in Redis while no worker runs, so the queue can be inspected.
    worker.terminate().await;

    let send = |ip: &'static str, ts: &'static str, url: &'static str| {
        let client = client.clone();
        let url_to = format!("{}/v1/events", ingest.url());
        async move {
            client
                .post(url_to)
                .header("content-type", "text/plain")
                .header("user-agent", UA)
                .header("x-forwarded-for", ip)
                .body(
                    json!({"site_id": "nyc", "event_type": "page_view", "timestamp": ts, "url": url,
                           "referrer": "https://duckduckgo.com/", "screen_width": 1440})
                    .to_string(),
                )
                .send()
                .await
                .expect("sent")
                .status()
        }
    };
    // 23:30 on the 14th and 00:30 on the 15th, New York time.
    assert_eq!(
        send(IPS[0], "2025-11-15T04:30:00Z", "https://nyc.example/late").await,
        202
    );
    assert_eq!(
        send(
            IPS[1],
            "2025-11-15T05:30:00Z",
            "https://www.nyc.example/early"
        )
        .await,
        202
    );
    assert_eq!(
        send(IPS[0], "2025-11-15T05:40:00Z", "https://elsewhere.example/").await,
        403
    );

    let queued: Vec<String> = stack
        .redis
        .queued_events()
        .await
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(queued.len(), 2);
    for item in &queued {
        for secret in IPS.iter().copied().chain(["TallyE2E", "X11; Linux"]) {
            assert!(
                !item.contains(secret),
                "{secret} is in a queued item: {item}"
            );
        }
    }

    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    stack
        .wait_all_stored(2, Duration::from_secs(60), "both events stored")
        .await;
    assert_eq!(views_on(&client, &stats.url(), "2025-11-14").await, 1);
    assert_eq!(views_on(&client, &stats.url(), "2025-11-15").await, 1);
    assert_eq!(
        stack.count("SELECT count(DISTINCT user_id) FROM events WHERE browser = 'Chrome' AND os = 'Linux' AND device = 'desktop' AND referrer_source = 'DuckDuckGo'").await,
        2,
        "two visitors, enriched"
    );

    // No table holds the address or the User-Agent string.
    let tables: Vec<String> = {
        let pg = stack.db.pool().get().await.expect("pg");
        pg.query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    for table in &tables {
        for secret in IPS.iter().copied().chain(["TallyE2E", "X11; Linux"]) {
            let hits = stack
                .count(&format!(
                    "SELECT count(*) FROM {table} t WHERE to_jsonb(t)::text LIKE '%{secret}%'"
                ))
                .await;
            assert_eq!(hits, 0, "{secret} is stored in {table}");
        }
    }

    // The visit rollups count each visit on its New York day.
    assert_eq!(
        visits_by_day(&stats).await,
        json!([["2025-11-14", 1], ["2025-11-15", 1]])
    );
    crate::helpers::assert_visit_rollups_match_visits(&stack).await;

    // The site moves to UTC: the same stored rows now fall on one UTC day, none rewritten.
    let versions = "SELECT (SELECT string_agg(xmin::text, ',' ORDER BY event_id) FROM events) || '|' || (SELECT string_agg(xmin::text, ',' ORDER BY bucket) FROM rollup_hourly)";
    let pg = stack.db.pool().get().await.expect("pg");
    let before: String = pg.query_one(versions, &[]).await.expect("xmin").get(0);
    let res = client
        .patch(format!("{}/v1/sites/nyc", ingest.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"timezone": "UTC"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    eventually(
        Duration::from_secs(30),
        "the new zone in the answers",
        || async { (views_on(&client, &stats.url(), "2025-11-15").await == 2).then_some(()) },
    )
    .await;
    assert_eq!(views_on(&client, &stats.url(), "2025-11-14").await, 0);
    let after: String = pg.query_one(versions, &[]).await.expect("xmin").get(0);
    assert_eq!(before, after, "stored rows were rewritten");
    // The visit rollups' days were rebuilt in the new zone with the site's change.
    assert_eq!(visits_by_day(&stats).await, json!([["2025-11-15", 2]]));
    crate::helpers::assert_visit_rollups_match_visits(&stack).await;
}

/// `nyc`'s visits per day on the 14th and 15th (from the visit rollups), as `[day, visits]`.
async fn visits_by_day(stats: &crate::helpers::Service) -> serde_json::Value {
    let (status, answer) = crate::query::query(
        stats,
        &json!({"site_id": "nyc", "metrics": ["visits"], "dimensions": ["time:day"],
                "date_range": ["2025-11-14", "2025-11-15"]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| json!([r["dimensions"][0], r["metrics"][0]]))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn gzip_bombs_get_413_without_the_memory_growing_past_the_limit() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    // 200 MB of one byte: about 200 KB compressed, well under the 2 MiB body limit.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'{'; 1 << 20];
    for _ in 0..200 {
        e.write_all(&chunk).expect("gzip");
    }
    let bomb = e.finish().expect("gzip");
    assert!(
        bomb.len() < 2 * 1024 * 1024,
        "{} bytes compressed",
        bomb.len()
    );
    let client = reqwest::Client::new();
    let before = rss_kib(ingest.pid());
    let mut peak = before;
    for _ in 0..10 {
        let sends = (0..10).map(|_| {
            client
                .post(format!("{}/v1/events", ingest.url()))
                .header("content-type", "text/plain")
                .header("content-encoding", "gzip")
                .body(bomb.clone())
                .send()
        });
        for res in futures_util::future::join_all(sends).await {
            assert_eq!(res.expect("sent").status(), 413);
        }
        peak = peak.max(rss_kib(ingest.pid()));
    }
    // Ten requests at once may each hold the compressed body and 2 MiB of output.
    let bound_kib = 10 * 2 * 2 * 1024 + 32 * 1024;
    assert!(
        peak.saturating_sub(before) < bound_kib,
        "RSS grew from {before} KiB to {peak} KiB (bound: {bound_kib} KiB more)"
    );
    assert_eq!(stack.items_in_redis().await, 0);
}
