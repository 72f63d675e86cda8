//! Exports as jobs: created with an idempotency key on ingest-api, run by batch-workers
//! (one killed mid-job), followed on stats-api, and the CSV checked row by row against the
//! raw events in PostgreSQL.

use crate::helpers::{ADMIN_TOKEN, Service, Stack};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const SITE: &str = "export.test";

/// `rows` events of [`SITE`] over the last ten days (ids `md5('e' || i)`), with values a
/// CSV must quote: commas in paths, quotes and newlines in props; plus rows that must not
/// be exported: another site's, and this site's from 40 days ago.
async fn seed_events(stack: &Stack, rows: i64) {
    let client = stack.db.pool().get().await.expect("pg");
    client
        .batch_execute(
            "SELECT tally_event_partition(d::date) FROM generate_series(now() - interval '41 days', now(), interval '1 day') d",
        )
        .await
        .expect("partitions");
    client
        .execute(
            "INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, props, received_at, \
                                 hostname, referrer_source, utm_source, device, browser, os, country) \
             SELECT md5('e' || i)::uuid, $1, CASE WHEN i % 10 = 0 THEN 'signup' ELSE 'page_view' END, \
                    now() - interval '1 hour' - (i % 864000) * interval '1 second' - (i % 1000) * interval '1 microsecond', \
                    '/p/' || (i % 500) || CASE WHEN i % 97 = 0 THEN ',comma \"q\"' ELSE '' END, \
                    'v' || (i % 50000), \
                    CASE WHEN i % 13 = 0 THEN jsonb_build_object('plan', 'pro \"x\"', 'note', E'two\\nlines, and \"quotes\"') END, \
                    now(), 'example.com', CASE WHEN i % 3 = 0 THEN 'Google' END, NULL, \
                    CASE WHEN i % 2 = 0 THEN 'Desktop' ELSE 'Mobile' END, 'Firefox', 'Linux', 'DE' \
             FROM generate_series(1, $2::bigint) i",
            &[&SITE, &rows],
        )
        .await
        .expect("seed events");
    client
        .batch_execute(&format!(
            "INSERT INTO events (event_id, site_id, event_type, ts, received_at) \
             SELECT md5('other' || i)::uuid, 'other.test', 'page_view', now() - interval '2 hours', now() FROM generate_series(1, 100) i; \
             INSERT INTO events (event_id, site_id, event_type, ts, received_at) \
             SELECT md5('old' || i)::uuid, '{SITE}', 'page_view', now() - interval '40 days', now() FROM generate_series(1, 100) i; \
             ANALYZE events"
        ))
        .await
        .expect("seed other rows");
}

async fn create_export(
    ingest: &Service,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/sites/{SITE}/exports", ingest.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("ingest");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

async fn job_status(stats: &Service, job_id: &str) -> Value {
    let res = reqwest::get(format!("{}/v1/jobs/{job_id}", stats.url()))
        .await
        .expect("stats");
    assert_eq!(res.status(), 200, "status of {job_id}");
    res.json().await.expect("json")
}

async fn wait_done(stats: &Service, job_id: &str, limit: Duration) -> Value {
    domain::testing::eventually(limit, "the export is done", || async {
        let s = job_status(stats, job_id).await;
        assert_ne!(s["state"], "failed", "{s}");
        (s["state"] == "done").then_some(s)
    })
    .await
}

/// Checks the CSV against the raw rows of the range: the same events, each once, with the
/// same time, path and props, in time order.
async fn assert_csv_matches_events(
    stack: &Stack,
    csv: &[u8],
    first_day: &str,
    last_day: &str,
) -> usize {
    let client = stack.db.pool().get().await.expect("pg");
    let rows = client
        .query(
            "SELECT event_id::text, (extract(epoch FROM ts) * 1000000)::bigint, path, props::text FROM events \
             WHERE site_id = $1 AND ts >= $2::text::date::timestamptz AND ts < ($3::text::date + 1)::timestamptz",
            &[&SITE, &first_day, &last_day],
        )
        .await
        .expect("ground truth");
    let truth: HashMap<String, (i64, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let mut reader = csv::Reader::from_reader(csv);
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(header[..4], ["event_id", "timestamp", "name", "visitor_id"]);
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (c_id, c_ts, c_path, c_props) =
        (col("event_id"), col("timestamp"), col("path"), col("props"));
    let mut seen = HashSet::with_capacity(truth.len());
    let mut last_ts = i64::MIN;
    for record in reader.records() {
        let record = record.expect("a well-formed CSV record");
        let id = record[c_id].to_string();
        let (ts, path, props) = truth
            .get(&id)
            .unwrap_or_else(|| panic!("{id} is not an event of the range"));
        let exported_ts =
            chrono::NaiveDateTime::parse_from_str(&record[c_ts], "%Y-%m-%d %H:%M:%S%.f")
                .expect("a UTC timestamp")
                .and_utc()
                .timestamp_micros();
        assert_eq!(exported_ts, *ts, "time of {id}");
        assert!(exported_ts >= last_ts, "rows in time order");
        last_ts = exported_ts;
        assert_eq!(
            Some(&record[c_path]),
            path.as_deref().or(Some("")),
            "path of {id}"
        );
        match props {
            Some(p) => assert_eq!(
                serde_json::from_str::<Value>(&record[c_props]).expect("props JSON"),
                serde_json::from_str::<Value>(p).expect("stored props"),
                "props of {id}"
            ),
            None => assert_eq!(&record[c_props], "", "no props for {id}"),
        }
        assert!(seen.insert(id), "an event exported twice");
    }
    assert_eq!(seen.len(), truth.len(), "every event of the range exported");
    seen.len()
}

async fn download(stats: &Service, job_id: &str) -> Vec<u8> {
    let res = reqwest::get(format!("{}/v1/jobs/{job_id}/download", stats.url()))
        .await
        .expect("download");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        disposition.contains(&format!("{SITE}-events-")),
        "{disposition}"
    );
    let declared: usize = res.headers()["content-length"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    let body = res.bytes().await.expect("body").to_vec();
    assert_eq!(body.len(), declared);
    body
}

#[tokio::test]
async fn an_export_of_a_million_events_survives_kill_9_of_its_worker_and_completes_once() {
    const ROWS: i64 = 1_000_000;
    let stack = Stack::new().await;
    seed_events(&stack, ROWS).await;
    let ingest = stack.start("ingest-api", &[]).await;
    let stats = stack.start("stats-api", &[]).await;
    let body = json!({"date_range": "30d", "format": "csv"});
    let (status, created, headers) = create_export(&ingest, &body, Some("nightly-1")).await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(headers["location"], format!("/v1/jobs/{job_id}").as_str());
    // The same key again: the same job, said to be a replay.
    let (status, again, headers) = create_export(&ingest, &body, Some("nightly-1")).await;
    assert_eq!((status, &again["job_id"]), (202, &created["job_id"]));
    assert_eq!(headers["idempotent-replayed"], "true");
    // The same key for another export: refused.
    let other = json!({"date_range": "7d"});
    let (status, refused, _) = create_export(&ingest, &other, Some("nightly-1")).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(job_status(&stats, &job_id).await["state"], "queued");

    // Watch the progress the whole time, as a client would.
    let watcher = {
        let (url, job_id) = (stats.url(), job_id.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seen: Vec<(String, u64)> = Vec::new();
            loop {
                let s: Value = client
                    .get(format!("{url}/v1/jobs/{job_id}"))
                    .send()
                    .await
                    .expect("stats")
                    .json()
                    .await
                    .expect("json");
                let state = s["state"].as_str().unwrap_or_default().to_string();
                seen.push((state.clone(), s["completed"].as_u64().unwrap_or(0)));
                if state == "done" || state == "failed" {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let worker_env = [
        ("EXPORT_PAGE_ROWS", "10000"),
        ("EXPORT_LEASE_MS", "1500"),
        ("EXPORT_POLL_INTERVAL_MS", "100"),
        ("EXPORT_PART_BYTES", "65536"),
    ];
    let first = stack.start("batch-worker", &worker_env).await;
    domain::testing::eventually(
        Duration::from_secs(120),
        "the export is under way",
        || async {
            let s = job_status(&stats, &job_id).await;
            (s["state"] == "running" && s["completed"].as_u64().unwrap_or(0) >= 100_000)
                .then_some(())
        },
    )
    .await;
    first.kill_9().await;
    let mid = job_status(&stats, &job_id).await;
    assert_eq!(mid["state"], "running", "killed mid-job: {mid}");
    let _second = stack.start("batch-worker", &worker_env).await;
    let done = wait_done(&stats, &job_id, Duration::from_secs(180)).await;
    assert!(
        done["attempts"].as_u64().unwrap_or(0) >= 2,
        "taken over: {done}"
    );
    assert_eq!(done["progress"], 100.0);
    assert_eq!(done["completed"], done["total"]);
    assert_eq!(done["completed"].as_i64(), Some(ROWS));
    let seen = watcher.await.expect("watcher");
    for pair in seen.windows(2) {
        assert!(pair[1].1 >= pair[0].1, "progress went back: {pair:?}");
    }

    let csv = download(&stats, &job_id).await;
    let range = &done["export"]["date_range"];
    let exported = assert_csv_matches_events(
        &stack,
        &csv,
        range[0].as_str().expect("first day"),
        range[1].as_str().expect("last day"),
    )
    .await;
    assert_eq!(exported as i64, ROWS);
    // Written once: no page twice, whatever the kill interrupted.
    assert_eq!(
        stack
            .count("SELECT coalesce(sum(rows), 0)::bigint FROM export_parts")
            .await,
        ROWS
    );
    // A retry after the job ended still names it.
    let (status, replay, _) = create_export(&ingest, &body, Some("nightly-1")).await;
    assert_eq!(
        (status, replay["job_id"].as_str(), replay["state"].as_str()),
        (202, Some(job_id.as_str()), Some("done"))
    );
}

/// Reads a job's Server-Sent Events until the stream ends: (event, id, data).
async fn read_stream(url: &str) -> Vec<(String, String, Value)> {
    use futures_util::StreamExt;
    let res = reqwest::get(url).await.expect("stream");
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), body.next())
        .await
        .expect("the stream moves within a minute")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(String::from))
            };
            Some((
                field("event")?,
                field("id")?,
                serde_json::from_str(&field("data")?).ok()?,
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_job_streams_its_progress_until_done_and_visits_export_too() {
    let stack = Stack::new().await;
    seed_events(&stack, 30_000).await;
    let client = stack.db.pool().get().await.expect("pg");
    client
        .batch_execute(&format!(
            "INSERT INTO visits (site_id, visitor, started_at, ended_at, first_event_id, events, pageviews, entry_page, exit_page, source) \
             SELECT '{SITE}', 'v' || i, now() - interval '3 hours' + i * interval '1 second', now() - interval '3 hours' + i * interval '1 second' + (i % 7) * interval '1500 milliseconds', \
                    md5('visit' || i)::uuid, 1 + i % 4, 1 + i % 3, '/in', '/out', CASE WHEN i % 2 = 0 THEN 'Google' END \
             FROM generate_series(1, 5000) i"
        ))
        .await
        .expect("seed visits");
    let ingest = stack.start("ingest-api", &[]).await;
    let stats = stack.start("stats-api", &[]).await;
    let (status, created, _) = create_export(&ingest, &json!({"date_range": "7d"}), None).await;
    assert_eq!(status, 202);
    let job_id = created["job_id"].as_str().expect("job_id").to_string();
    let stream = tokio::spawn({
        let url = format!("{}/v1/jobs/{job_id}/stream", stats.url());
        async move { read_stream(&url).await }
    });
    let _worker = stack
        .start(
            "batch-worker",
            &[
                ("EXPORT_PAGE_ROWS", "2000"),
                ("EXPORT_POLL_INTERVAL_MS", "100"),
            ],
        )
        .await;
    let events = stream.await.expect("stream");
    let (last_name, _, last) = events.last().expect("events").clone();
    assert_eq!(last_name, "done", "{events:?}");
    assert_eq!(last["completed"], 30_000);
    assert!(last["download_url"].is_string());
    let ids: Vec<u64> = events
        .iter()
        .map(|(_, id, _)| id.parse().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] >= w[0]),
        "ids never go back: {ids:?}"
    );
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|(n, _, _)| n == "progress")
    );

    // Visits: one row per visit of the range, duration and bounce as stored.
    let (status, created, _) = create_export(
        &ingest,
        &json!({"date_range": "day", "kind": "visits"}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().expect("job_id");
    let done = wait_done(&stats, job_id, Duration::from_secs(60)).await;
    let res = reqwest::get(format!("{}/v1/jobs/{job_id}/download", stats.url()))
        .await
        .expect("download");
    let csv = res.bytes().await.expect("body");
    let mut reader = csv::Reader::from_reader(csv.as_ref());
    let header = reader.headers().expect("header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let expected = stack
        .count("SELECT count(*) FROM visits WHERE started_at >= current_date::timestamptz")
        .await;
    let mut rows = 0;
    for record in reader.records() {
        let r = record.expect("record");
        let i: i64 = r[col("visitor_id")][1..].parse().expect("visitor number");
        let duration: f64 = r[col("duration_s")].parse().expect("duration");
        assert!(
            (duration - (i % 7) as f64 * 1.5).abs() < 1e-9,
            "duration of visit {i}"
        );
        let bounce = (1 + i % 3) == 1;
        assert_eq!(&r[col("bounce")], if bounce { "true" } else { "false" });
        rows += 1;
    }
    assert_eq!(rows, expected);
    assert_eq!(done["completed"].as_i64(), Some(expected));
}

#[tokio::test]
async fn exports_are_capped_per_client_and_bad_requests_are_named() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let stats = stack.start("stats-api", &[("STATS_TOKEN", "st")]).await;
    // No worker: jobs stay queued, and a client has at most three.
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, created, _) = create_export(
            &ingest,
            &json!({"date_range": "7d"}),
            Some(&format!("k{n}")),
        )
        .await;
        assert_eq!(status, 202, "{created}");
        ids.push(created["job_id"].as_str().expect("id").to_string());
    }
    let (status, refused, headers) =
        create_export(&ingest, &json!({"date_range": "7d"}), Some("k3")).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (429, Some("too_many_jobs"))
    );
    assert!(headers.contains_key("retry-after"));
    // A replay of a queued job is not a new job: still answered.
    let (status, _, _) = create_export(&ingest, &json!({"date_range": "7d"}), Some("k0")).await;
    assert_eq!(status, 202);

    for (body, key, named) in [
        (
            json!({"date_range": "7d", "format": "xlsx"}),
            None,
            "format",
        ),
        (
            json!({"date_range": ["2026-02-01", "2026-01-01"]}),
            None,
            "reversed",
        ),
        (
            json!({"date_range": ["2000-01-01", "2026-01-01"]}),
            None,
            "at most",
        ),
        (
            json!({"date_range": "7d", "kind": "sessions"}),
            None,
            "kind",
        ),
        (json!({"format": "csv"}), None, "date_range"),
        (
            json!({"date_range": "7d"}),
            Some("has space"),
            "Idempotency-Key",
        ),
    ] {
        let (status, answer, _) = create_export(&ingest, &body, key).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(named), "{named}: {answer}");
    }
    let res = reqwest::Client::new()
        .post(format!("{}/v1/sites/{SITE}/exports", ingest.url()))
        .json(&json!({"date_range": "7d"}))
        .send()
        .await
        .expect("ingest");
    assert_eq!(res.status(), 401, "exports need the admin token");

    // Status: the stats token or the admin token; unknown jobs 404; no file before done.
    let client = reqwest::Client::new();
    let status_url = format!("{}/v1/jobs/{}", stats.url(), ids[0]);
    assert_eq!(
        client
            .get(&status_url)
            .send()
            .await
            .expect("stats")
            .status(),
        401
    );
    for token in ["st", ADMIN_TOKEN] {
        let res = client
            .get(&status_url)
            .bearer_auth(token)
            .send()
            .await
            .expect("stats");
        assert_eq!(res.status(), 200);
        let s: Value = res.json().await.expect("json");
        assert_eq!(
            (s["state"].as_str(), s["progress"].as_f64()),
            (Some("queued"), Some(0.0))
        );
    }
    for unknown in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".into()] {
        let res = client
            .get(format!("{}/v1/jobs/{unknown}", stats.url()))
            .bearer_auth("st")
            .send()
            .await
            .expect("stats");
        assert_eq!(res.status(), 404, "{unknown}");
    }
    let res = client
        .get(format!("{status_url}/download"))
        .bearer_auth("st")
        .send()
        .await
        .expect("stats");
    assert_eq!(res.status(), 404, "not started: nothing stored yet");
}
