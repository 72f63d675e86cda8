use crate::helpers::{ADMIN_TOKEN, Stack};
use std::collections::BTreeSet;
use std::time::Duration;

/// Parses Prometheus text exposition, panicking on a malformed line; returns metric names.
fn parse_prometheus(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        names.insert(name.to_string());
    }
    names
}

async fn scrape(url: &str) -> BTreeSet<String> {
    let res = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    parse_prometheus(&res.text().await.expect("text"))
}

fn assert_has(names: &BTreeSet<String>, service: &str, wanted: &[&str]) {
    let missing: Vec<&&str> = wanted.iter().filter(|w| !names.contains(**w)).collect();
    assert!(
        missing.is_empty(),
        "{service} lacks {missing:?}; has {names:?}"
    );
}

#[tokio::test]
async fn every_service_exposes_prometheus_metrics_an_operator_alerts_on() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let worker = stack
        .start("batch-worker", &[("REAP_INTERVAL_MS", "200")])
        .await;
    let stats = stack.start("stats-api", &[]).await;
    let gateway = stack.start("sse-gateway", &[]).await;
    let client = reqwest::Client::new();

    // Traffic through every path.
    let event = serde_json::json!({"site_id": "m", "event_type": "page_view", "timestamp": "2025-11-14T10:00:00Z", "path": "/", "user_id": "u"});
    assert_eq!(
        client
            .post(format!("{}/v1/events", ingest.url()))
            .json(&event)
            .send()
            .await
            .expect("sent")
            .status(),
        202
    );
    domain::testing::eventually(Duration::from_secs(20), "event stored", || async {
        (stack.count("SELECT count(*) FROM events").await == 1).then_some(())
    })
    .await;
    let poll: serde_json::Value = client
        .post(format!("{}/v1/polls", ingest.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"question": "q", "options": ["a", "b"]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let poll_id = poll["poll_id"].as_str().expect("id").to_string();
    let stream = client
        .get(format!("{}/v1/polls/{poll_id}/stream", gateway.url()))
        .send()
        .await
        .expect("stream");
    domain::testing::eventually(Duration::from_secs(20), "vote accepted", || {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/polls/{poll_id}/votes", ingest.url()),
        );
        async move {
            let r = client
                .post(url)
                .json(&serde_json::json!({"option_id": "o1", "user_id": "voter"}))
                .send()
                .await
                .ok()?;
            (r.status() == 202 || r.status() == 409).then_some(())
        }
    })
    .await;
    client
        .get(format!("{}/v1/stats?site_id=m", stats.url()))
        .send()
        .await
        .expect("stats");
    client
        .get(format!("{}/v1/stats?site_id=m", stats.url()))
        .send()
        .await
        .expect("stats again (cached)");
    tokio::time::sleep(Duration::from_millis(500)).await; // a reaper pass refreshes the gauges

    assert_has(
        &scrape(&ingest.url()).await,
        "ingest-api",
        &[
            "ingest_api_http_requests_total",
            "ingest_api_http_request_duration_seconds_bucket",
            "ingest_api_events_accepted_total",
            "ingest_api_event_queue_length",
            "ingest_api_votes_total",
        ],
    );
    assert_has(
        &scrape(&worker.url()).await,
        "batch-worker",
        &[
            "batch_worker_batch_size_bucket",
            "batch_worker_flush_duration_seconds_bucket",
            "batch_worker_items_stored_total",
            "batch_worker_queue_length",
            "batch_worker_queue_oldest_age_seconds",
            "batch_worker_dead_letters",
            "batch_worker_heartbeats_total",
            "batch_worker_reaped_items_total",
            "batch_worker_reaped_workers_total",
            "batch_worker_postgres_pool_connections",
        ],
    );
    assert_has(
        &scrape(&stats.url()).await,
        "stats-api",
        &[
            "stats_api_http_requests_total",
            "stats_api_http_request_duration_seconds_bucket",
            "stats_api_cache_requests_total",
            "stats_api_postgres_pool_connections",
        ],
    );
    assert_has(
        &scrape(&gateway.url()).await,
        "sse-gateway",
        &[
            "sse_gateway_open_streams",
            "sse_gateway_streams_opened_total",
            "sse_gateway_redis_messages_total",
            "sse_gateway_http_requests_total",
        ],
    );
    drop(stream);
}
