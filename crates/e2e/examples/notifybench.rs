//! Benchmarks of notifications for `make bench`, printing one JSON object.
//!
//! `notifybench webhooks INGEST_URL ADMIN_TOKEN RECEIVER_URL RECEIVER_STATUS_URL ENDPOINTS NOTIFICATIONS WORKER_PID`:
//! registers ENDPOINTS webhook endpoints on RECEIVER_URL (an nginx answering 204, whose
//! `stub_status` is at RECEIVER_STATUS_URL) and sends NOTIFICATIONS notifications, each
//! delivered to every endpoint; measures the deliveries the receiver gets per second while
//! the backlog lasts (between 10% and 90% of them), and the worker's CPU time.
//!
//! `notifybench fanout INGEST_URL GATEWAY_URL ADMIN_TOKEN STREAM_SECRET REDIS_URL KEY_PREFIX DATABASE_URL GATEWAY_PID SUBSCRIBERS STREAMS`:
//! subscribes SUBSCRIBERS users to a topic, opens STREAMS poll streams and then STREAMS
//! feed streams of subscribers (gateway memory per stream of each kind), sends one
//! notification to the topic and measures its 202, when every open feed stream got it,
//! and when PostgreSQL holds all SUBSCRIBERS feed items.
//!
//! `notifybench feeds INGEST_URL ADMIN_TOKEN REDIS_URL KEY_PREFIX DATABASE_URL NOTIFICATIONS`:
//! subscribes one user to a topic and accepts NOTIFICATIONS notifications to it in Redis
//! at once, as the worker accepts a batch's triggers (`goal.converted` to one subscriber):
//! measures how soon PostgreSQL holds every one of them in the user's feed.

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn postgres(url: &str) -> domain::tokio_postgres::Client {
    let (client, connection) = domain::tokio_postgres::connect(url, domain::tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    client
}

async fn redis(url: &str) -> domain::redis_client::aio::MultiplexedConnection {
    domain::redis_client::Client::open(url)
        .expect("REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({"samples": 0});
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    json!({"samples": v.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> (u16, Value) {
    let res = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// POSTs until the answer is not 503 (a registry being restored at start).
async fn post_ready(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> (u16, Value) {
    for _ in 0..200 {
        let (status, answer) = post(http, url, token, body).await;
        if status != 503 {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} kept answering 503");
}

async fn nginx_requests(http: &reqwest::Client, status_url: &str) -> u64 {
    let text = http
        .get(status_url)
        .send()
        .await
        .expect("stub_status")
        .text()
        .await
        .unwrap_or_default();
    // "server accepts handled requests\n A B C"
    text.lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn webhooks(a: &[String]) -> Value {
    let (ingest, admin, receiver, status_url) = (&a[2], &a[3], &a[4], &a[5]);
    let endpoints: usize = a[6].parse().expect("ENDPOINTS");
    let notifications: usize = a[7].parse().expect("NOTIFICATIONS");
    let worker_pid = &a[8];
    let http = reqwest::Client::new();
    for _ in 0..endpoints {
        let (status, _) = post_ready(
            &http,
            &format!("{ingest}/v1/webhooks/endpoints"),
            admin,
            &json!({"url": receiver, "event_types": ["bench.*"]}),
        )
        .await;
        assert_eq!(status, 201, "endpoint creation");
    }
    // Let every worker see the endpoints before the first fan-out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (endpoints * notifications) as u64;
    let base = nginx_requests(&http, status_url).await;
    let cpu0 = cpu_s(worker_pid);
    let started = Instant::now();
    let sent = futures_util::stream::iter(0..notifications)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{ingest}/v1/notifications"));
            let body = json!({"topic": "nobody", "title": format!("bench {i}"), "body": "a signed webhook of about three hundred bytes", "event_type": "bench.delivery", "channels": ["webhook"]});
            async move { post(&http, &url, admin, &body).await.0 }
        })
        .buffer_unordered(16)
        .filter(|s| std::future::ready(*s == 202))
        .count()
        .await;
    assert_eq!(sent, notifications, "every notification accepted");
    // Samples of (time, deliveries received).
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = nginx_requests(&http, status_url).await.saturating_sub(base);
        samples.push((started.elapsed().as_secs_f64(), got));
        if got >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_s(worker_pid) - cpu0;
    let at = |fraction: f64| {
        samples
            .iter()
            .find(|(_, n)| *n as f64 >= fraction * total as f64)
            .copied()
            .unwrap_or((0.0, 0))
    };
    let ((t10, n10), (t90, n90)) = (at(0.1), at(0.9));
    let (elapsed, received) = samples.last().copied().unwrap_or((0.0, 0));
    json!({
        "endpoints": endpoints,
        "notifications": notifications,
        "deliveries": total,
        "received": received,
        "seconds": elapsed,
        "steady_deliveries_per_s": (n90 - n10) as f64 / (t90 - t10).max(1e-6),
        "overall_deliveries_per_s": received as f64 / elapsed.max(1e-6),
        "worker_cpu_s": cpu,
        "deliveries_per_worker_cpu_s": received as f64 / cpu.max(1e-6),
    })
}

/// Opens `n` event streams at `urls(i)`, waiting for each one's first event; returns the
/// readers' receipt times of the first `notification` event (filled in as they come).
async fn open_streams(
    http: &reqwest::Client,
    n: usize,
    url: impl Fn(usize) -> String,
    arrivals: Arc<Mutex<Vec<Option<Instant>>>>,
) -> usize {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, url, arrivals) = (http.clone(), url(i), arrivals.clone());
            async move {
                let res = http.get(&url).send().await.ok()?;
                if res.status() != 200 {
                    return None;
                }
                let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(async move {
                    let mut first = Some(first_tx);
                    let mut body = res.bytes_stream();
                    let mut buf = String::new();
                    while let Some(Ok(chunk)) = body.next().await {
                        let now = Instant::now();
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        if buf.contains("\n\n")
                            && let Some(tx) = first.take()
                        {
                            let _ = tx.send(());
                        }
                        if buf.contains("event: notification") {
                            arrivals.lock().expect("lock")[i].get_or_insert(now);
                            buf.clear();
                        }
                        if buf.len() > 65_536 {
                            buf.clear();
                        }
                    }
                });
                first_rx.await.ok()
            }
        })
        .buffer_unordered(256)
        .filter_map(|x| async move { x })
        .count()
        .await
}

async fn fanout(a: &[String]) -> Value {
    let (ingest, gateway, admin, secret) = (&a[2], &a[3], &a[4], &a[5]);
    let (redis_url, prefix, database_url, gateway_pid) = (&a[6], &a[7], &a[8], &a[9]);
    let subscribers: usize = a[10].parse().expect("SUBSCRIBERS");
    let streams: usize = a[11].parse().expect("STREAMS");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let topic = format!("bench-{}", uuid::Uuid::now_v7().simple());
    for chunk in (0..subscribers).collect::<Vec<_>>().chunks(10_000) {
        let users: Vec<String> = chunk.iter().map(|i| format!("fan-{i}")).collect();
        let (status, _) = post_ready(
            &http,
            &format!("{ingest}/v1/topics/{topic}/subscribers"),
            admin,
            &json!({"subscribers": users}),
        )
        .await;
        assert_eq!(status, 200, "subscribing");
    }

    // Memory per stream: poll streams first, then feed streams, on the same gateway.
    let keys = domain::keys::Keys::new(prefix.clone());
    let mut conn = redis(redis_url).await;
    domain::poll::shard_marker::set_all_restored(&mut conn, &keys)
        .await
        .expect("markers");
    let poll_id = uuid::Uuid::now_v7().to_string();
    let poll = domain::poll::NewPoll {
        question: "bench".into(),
        options: vec![
            domain::poll::PollOption {
                id: "o1".into(),
                label: "a".into(),
            },
            domain::poll::PollOption {
                id: "o2".into(),
                label: "b".into(),
            },
        ],
        closes_at: None,
        settings: domain::poll::PollSettings::default(),
    };
    domain::poll::create(&mut conn, &keys, &poll_id, &poll, chrono::Utc::now())
        .await
        .expect("poll");
    let unused: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; streams]));
    let rss0 = rss_kib(gateway_pid);
    let polls_open = open_streams(
        &http,
        streams,
        |_| format!("{gateway}/v1/polls/{poll_id}/stream"),
        unused,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(gateway_pid);
    let arrivals: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; streams]));
    let exp = chrono::Utc::now().timestamp() + 3600;
    let feeds_open = open_streams(
        &http,
        streams,
        |i| {
            let user = format!("fan-{i}");
            let token = domain::stream_token::mint(secret.as_bytes(), &format!("feed:{user}"), exp);
            format!("{gateway}/v1/users/{user}/feed/stream?token={token}")
        },
        arrivals.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = rss_kib(gateway_pid);

    // 202s of small notifications (the accept step does not depend on the audience).
    let mut small = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let (status, _) = post(&http, &format!("{ingest}/v1/notifications"), admin, &json!({"recipients": [format!("solo-{i}")], "title": "t", "body": "b", "channels": ["in_app"]})).await;
        assert_eq!(status, 202);
        small.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let pg = postgres(database_url).await;
    // Wait until the small ones are fanned out, so they do not share the measurement.
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .query_one(
            "SELECT count(*) FROM feed_items WHERE user_id LIKE 'solo-%'",
            &[],
        )
        .await
        .expect("count")
        .get::<_, i64>(0)
        < 200
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let start = Instant::now();
    let (status, answer) = post(&http, &format!("{ingest}/v1/notifications"), admin, &json!({"topic": topic, "title": "To everyone", "body": "a fan-out", "channels": ["in_app"]})).await;
    let accepted_ms = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 202);
    let id: uuid::Uuid = answer["notification_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let mut stored_ms = None;
    let mut streamed_ms = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (stored_ms.is_none() || streamed_ms.is_none()) && Instant::now() < deadline {
        if streamed_ms.is_none() {
            let got = arrivals
                .lock()
                .expect("lock")
                .iter()
                .take(feeds_open)
                .filter(|a| a.is_some())
                .count();
            if got >= feeds_open {
                streamed_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if stored_ms.is_none() {
            let n: i64 = pg
                .query_one(
                    "SELECT count(*) FROM feed_items WHERE notification_id = $1",
                    &[&id],
                )
                .await
                .expect("count")
                .get(0);
            if n as usize >= subscribers {
                stored_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stream_latency: Vec<f64> = arrivals
        .lock()
        .expect("lock")
        .iter()
        .flatten()
        .map(|t| t.saturating_duration_since(start).as_secs_f64() * 1000.0)
        .collect();
    json!({
        "subscribers": subscribers,
        "accepted_ms": accepted_ms,
        "small_accept": percentiles(small),
        "all_feed_items_stored_ms": stored_ms,
        "feed_streams_open": feeds_open,
        "all_open_streams_got_it_ms": streamed_ms,
        "stream_arrival": percentiles(stream_latency),
        "poll_streams_open": polls_open,
        "gateway_kib_per_poll_stream": rss1.saturating_sub(rss0) as f64 / polls_open.max(1) as f64,
        "gateway_kib_per_feed_stream": rss2.saturating_sub(rss1) as f64 / feeds_open.max(1) as f64,
    })
}

async fn feeds(a: &[String]) -> Value {
    let (ingest, admin, redis_url, prefix, database_url) = (&a[2], &a[3], &a[4], &a[5], &a[6]);
    let notifications: usize = a[7].parse().expect("NOTIFICATIONS");
    let http = reqwest::Client::new();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("bench-feeds-{run}");
    let user = format!("one-{run}");
    let (status, _) = post_ready(
        &http,
        &format!("{ingest}/v1/topics/{topic}/subscribers"),
        admin,
        &json!({"subscribers": [user]}),
    )
    .await;
    assert_eq!(status, 200, "subscribing");
    let keys = domain::keys::Keys::new(prefix.clone());
    let conn = redis(redis_url).await;
    let pg = postgres(database_url).await;
    let subjects: Vec<String> = (0..notifications)
        .map(|i| format!("bench.converted:{run}:{i}"))
        .collect();
    let notices: Vec<domain::notify::Notification> = subjects
        .iter()
        .map(|subject| domain::notify::Notification {
            notification_id: domain::notify::accept::trigger_id(subject),
            event_type: "bench.converted".into(),
            title: subject.clone(),
            body: String::new(),
            html: None,
            data: Value::Null,
            channels: vec![domain::notify::ChannelKind::InApp],
            priority: domain::notify::Priority::Normal,
            recipients: Vec::new(),
            topic: Some(topic.clone()),
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            queued_at_ms: 0,
            idempotency_key: Some(subject.clone()),
            traceparent: None,
        })
        .collect();
    let start = Instant::now();
    for chunk in notices.chunks(500).zip(subjects.chunks(500)) {
        let pairs: Vec<(&domain::notify::Notification, &str)> = chunk
            .0
            .iter()
            .zip(chunk.1)
            .map(|(n, s)| (n, s.as_str()))
            .collect();
        domain::notify::accept::accept_many(&conn, &keys, &pairs)
            .await
            .expect("accepted");
    }
    let accepted_ms = start.elapsed().as_secs_f64() * 1000.0;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut stored_ms = None;
    while stored_ms.is_none() && Instant::now() < deadline {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM feed_items WHERE user_id = $1",
                &[&user],
            )
            .await
            .expect("count")
            .get(0);
        if n as usize >= notifications {
            stored_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    json!({
        "notifications": notifications,
        "accepted_ms": accepted_ms,
        "all_in_the_feed_ms": stored_ms,
        "notifications_per_s": stored_ms.map(|ms| notifications as f64 / (ms / 1000.0)),
    })
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let out = match a.get(1).map(String::as_str) {
        Some("webhooks") if a.len() >= 9 => webhooks(&a).await,
        Some("fanout") if a.len() >= 12 => fanout(&a).await,
        Some("feeds") if a.len() >= 8 => feeds(&a).await,
        _ => panic!("usage: see the module documentation of notifybench"),
    };
    println!("{out}");
}
