use crate::helpers::{ADMIN_TOKEN, PrivateRedis, Service, Stack};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

pub async fn create_poll(
    client: &reqwest::Client,
    ingest: &str,
    options: &[&str],
) -> (String, Vec<String>) {
    let body: serde_json::Value = client
        .post(format!("{ingest}/v1/polls"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"question": "Best?", "options": options}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let ids = body["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| o["id"].as_str().unwrap_or_default().to_string())
        .collect();
    (body["poll_id"].as_str().expect("poll_id").to_string(), ids)
}

/// Waits for the worker to mark every vote shard restored (fresh Redis, empty database).
pub async fn wait_until_restored(stack: &Stack) {
    domain::testing::eventually(
        Duration::from_secs(20),
        "vote shards marked restored",
        || async {
            let mut conn = stack.redis.conn().await;
            let keys = stack.redis.keys();
            for shard in 0..domain::keys::VOTE_SHARDS {
                let present = domain::poll::shard_marker::is_restored(&mut conn, &keys, shard)
                    .await
                    .ok()?;
                if !present {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Sends `requests` votes, `user_count` distinct users each sending `requests / user_count`
/// times, 200 at a time. Returns the status counts.
async fn vote_storm(
    ingest: &str,
    poll: &str,
    options: &[String],
    requests: usize,
    user_count: usize,
    tag: &str,
) -> HashMap<u16, usize> {
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures_util::stream::iter(0..requests)
        .map(|i| {
            let client = client.clone();
            let url = format!("{ingest}/v1/polls/{poll}/votes");
            let body = json!({"option_id": options[(i / user_count) % options.len()], "user_id": format!("{tag}-{}", i % user_count)});
            async move {
                loop {
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        Ok(r) => return r.status().as_u16(),
                        Err(e) => panic!("ingest unreachable: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut counts = HashMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    counts
}

async fn redis_tally(stack: &Stack, poll: &str) -> HashMap<String, i64> {
    let mut conn = stack.redis.conn().await;
    domain::redis_client::cmd("HGETALL")
        .arg(stack.redis.keys().poll(poll).tally)
        .query_async(&mut conn)
        .await
        .expect("HGETALL")
}

async fn pg_tally(stack: &Stack, poll: &str) -> HashMap<String, i64> {
    let client = stack.db.pool().get().await.expect("pg");
    client
        .query(
            "SELECT option_id, votes FROM poll_options WHERE poll_id = $1",
            &[&poll],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn wait_persisted(stack: &Stack, poll: &str, expected: i64) {
    domain::testing::eventually(
        Duration::from_secs(60),
        &format!("{expected} votes persisted"),
        || async {
            let client = stack.db.pool().get().await.ok()?;
            let n: i64 = client
                .query_one("SELECT count(*) FROM votes WHERE poll_id = $1", &[&poll])
                .await
                .ok()?
                .get(0);
            (n == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_hundred_users_voting_five_times_each_are_counted_two_hundred_times_everywhere() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack.start("batch-worker", &[]).await;
    let stats = stack.start("stats-api", &[]).await;
    wait_until_restored(&stack).await;
    let client = reqwest::Client::new();
    let (poll, options) = create_poll(&client, &ingest.url(), &["red", "green", "blue"]).await;

    let statuses = vote_storm(&ingest.url(), &poll, &options, 1000, 200, "u").await;
    assert_eq!(statuses.get(&202), Some(&200), "{statuses:?}");
    assert_eq!(statuses.get(&409), Some(&800), "{statuses:?}");
    wait_persisted(&stack, &poll, 200).await;

    let redis = redis_tally(&stack, &poll).await;
    assert_eq!(redis.values().sum::<i64>(), 200);
    assert_eq!(
        pg_tally(&stack, &poll).await,
        redis,
        "PostgreSQL and Redis agree per option"
    );
    let results: serde_json::Value = client
        .get(format!("{}/v1/polls/{poll}", stats.url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(results["total"], 200);
    assert_eq!(results["closed"], false);
    assert_eq!(results["options"][0]["label"], "red");
    let by_option: i64 = results["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| o["votes"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(by_option, 200);
}

#[tokio::test]
async fn kill_9_of_the_worker_during_a_vote_storm_loses_and_doubles_nothing() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let worker_env = [
        ("HEARTBEAT_TTL_MS", "1000"),
        ("REAP_INTERVAL_MS", "250"),
        ("BATCH_MAX_ITEMS", "200"),
    ];
    let first: Service = stack.start("batch-worker", &worker_env).await;
    wait_until_restored(&stack).await;
    let (poll, options) = create_poll(&reqwest::Client::new(), &ingest.url(), &["a", "b"]).await;

    let storm = tokio::spawn({
        let (url, poll, options) = (ingest.url(), poll.clone(), options.clone());
        async move { vote_storm(&url, &poll, &options, 6000, 3000, "s").await }
    });
    // Kill workers while votes are being persisted, restarting each time.
    let mut worker = first;
    for round in 1..=3 {
        domain::testing::eventually(Duration::from_secs(30), "votes being persisted", || async {
            let client = stack.db.pool().get().await.ok()?;
            let n: i64 = client
                .query_one("SELECT count(*) FROM votes", &[])
                .await
                .ok()?
                .get(0);
            (n >= round * 400).then_some(())
        })
        .await;
        worker.kill_9().await;
        worker = stack.start("batch-worker", &worker_env).await;
    }
    let statuses = storm.await.expect("storm");
    assert_eq!(statuses.get(&202), Some(&3000), "{statuses:?}");
    wait_persisted(&stack, &poll, 3000).await;
    assert_eq!(
        pg_tally(&stack, &poll).await,
        redis_tally(&stack, &poll).await
    );
    assert_eq!(
        pg_tally(&stack, &poll).await.values().sum::<i64>(),
        3000,
        "no vote counted twice"
    );
    drop(worker);
}

#[tokio::test]
async fn after_redis_loses_everything_the_tally_continues_and_voters_stay_voters() {
    let private = PrivateRedis::start().await;
    let stack = Stack::with_redis_url(&private.url).await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack.start("batch-worker", &[]).await;
    wait_until_restored(&stack).await;
    let client = reqwest::Client::new();
    let (poll, options) = create_poll(&client, &ingest.url(), &["a", "b"]).await;
    for (user, option) in [
        ("ann", &options[0]),
        ("ben", &options[0]),
        ("cat", &options[1]),
    ] {
        let r = client
            .post(format!("{}/v1/polls/{poll}/votes", ingest.url()))
            .json(&json!({"option_id": option, "user_id": user}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 202);
    }
    wait_persisted(&stack, &poll, 3).await;

    let mut conn = stack.redis.conn().await;
    let _: () = domain::redis_client::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");

    // Until the worker has restored the poll, votes are "retry later", never a wrong 404.
    let vote = |user: &'static str, option: String| {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/polls/{poll}/votes", ingest.url()),
        );
        async move {
            loop {
                let r = client
                    .post(&url)
                    .json(&json!({"option_id": option, "user_id": user}))
                    .send()
                    .await
                    .expect("sent");
                if r.status() != 503 {
                    return r;
                }
                assert!(r.headers().contains_key("retry-after"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let res = vote("dan", options[1].clone()).await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(
        body["tally"],
        json!({"o1": 2, "o2": 2}),
        "continues from the persisted counts"
    );
    assert_eq!(body["total"], 4);
    assert_eq!(body["seq"], 4, "the sequence continues too");
    assert_eq!(
        vote("ann", options[1].clone()).await.status(),
        409,
        "a voter from before is still a voter"
    );
    wait_persisted(&stack, &poll, 4).await;
}

#[tokio::test]
async fn a_hundred_voters_moving_ten_times_end_on_their_last_choices_live_and_in_postgres() {
    let stack = Stack::new().await;
    let ingest = stack
        .start("ingest-api", &[("VOTE_RATE_LIMIT_PER_POLL_PER_S", "0")])
        .await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    wait_until_restored(&stack).await;
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{}/v1/polls", ingest.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"question": "Best?", "options": ["a", "b", "c", "d"], "allow_change": true, "max_choices": 2}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let poll = body["poll_id"].as_str().expect("poll_id").to_string();
    let url = format!("{}/v1/polls/{poll}/votes", ingest.url());
    // Users concurrently, each user's own moves in order.
    let lasts: Vec<Vec<String>> = futures_util::stream::iter(0..100)
        .map(|u| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let mut choice = Vec::new();
                for round in 0..10 {
                    let first = (u * 7 + round * 3) % 4 + 1;
                    choice = vec![format!("o{first}")];
                    if round % 3 == 0 {
                        choice.push(format!("o{}", first % 4 + 1));
                    }
                    let r = client
                        .post(&url)
                        .json(&json!({"option_ids": choice, "user_id": format!("u{u}")}))
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(r.status(), 202);
                }
                choice
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut expected: HashMap<String, i64> = (1..=4).map(|o| (format!("o{o}"), 0)).collect();
    for choice in lasts {
        for o in choice {
            *expected.entry(o).or_default() += 1;
        }
    }
    assert_eq!(redis_tally(&stack, &poll).await, expected, "live");
    domain::testing::eventually(Duration::from_secs(60), "PostgreSQL's counts", || async {
        (pg_tally(&stack, &poll).await == expected).then_some(())
    })
    .await;
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM votes WHERE poll_id = '{poll}'"
            ))
            .await,
        100,
        "one vote per voter"
    );
}

/// Reads `stream` into `text` until it holds `count` snapshots (30 s failure bound).
async fn read_snapshots(stream: &mut reqwest::Response, text: &mut String, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while text.matches("event: snapshot").count() < count {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_multiplexed_stream_shows_redis_losing_everything_as_new_epochs_equal_to_postgres() {
    let private = PrivateRedis::start().await;
    let stack = Stack::with_redis_url(&private.url).await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let gateway = stack
        .start("sse-gateway", &[("POLL_COALESCE_MS", "0")])
        .await;
    wait_until_restored(&stack).await;
    let client = reqwest::Client::new();
    let mut polls = Vec::new();
    for _ in 0..3 {
        let (poll, options) = create_poll(&client, &ingest.url(), &["a", "b"]).await;
        for (i, user) in ["ann", "ben", "cat"].iter().enumerate() {
            let r = client
                .post(format!("{}/v1/polls/{poll}/votes", ingest.url()))
                .json(&json!({"option_id": options[i % 2], "user_id": user}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 202);
        }
        wait_persisted(&stack, &poll, 3).await;
        polls.push(poll);
    }
    let topics: Vec<String> = polls.iter().map(|p| format!("poll:{p}")).collect();
    let mut stream = client
        .get(format!(
            "{}/v1/stream?topics={}",
            gateway.url(),
            topics.join(",")
        ))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    let snapshots_of = |text: &str| -> HashMap<String, serde_json::Value> {
        text.split("\n\n")
            .filter(|b| b.contains("event: snapshot"))
            .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .map(|v| {
                (
                    v["topic"].as_str().unwrap_or_default().to_string(),
                    v["data"].clone(),
                )
            })
            .collect()
    };
    read_snapshots(&mut stream, &mut text, 3).await;
    let before = snapshots_of(&text);
    assert!(before.values().all(|s| s["epoch"] == 0));
    text.clear();

    let mut conn = stack.redis.conn().await;
    let _: () = domain::redis_client::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
    read_snapshots(&mut stream, &mut text, 3).await;
    let after = snapshots_of(&text);
    for (topic, poll) in topics.iter().zip(&polls) {
        let snapshot = &after[topic];
        assert_ne!(snapshot["epoch"], 0, "{topic}: the restore is a new epoch");
        let mut tally: HashMap<String, i64> = HashMap::new();
        for (o, n) in snapshot["tally"].as_object().expect("tally") {
            tally.insert(o.clone(), n.as_i64().unwrap_or(-1));
        }
        assert_eq!(
            tally,
            pg_tally(&stack, poll).await,
            "{topic}: PostgreSQL's state"
        );
    }
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
async fn memory_comes_back_when_streams_close_round_after_round() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack.start("batch-worker", &[]).await;
    let gateway = stack
        .start(
            "sse-gateway",
            &[("MAX_CONNECTIONS_PER_IP", "5000"), ("HEARTBEAT_S", "60")],
        )
        .await;
    wait_until_restored(&stack).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let (poll, _) = create_poll(&client, &ingest.url(), &["a", "b"]).await;
    let url = format!("{}/v1/polls/{poll}/stream", gateway.url());
    let open_streams = || {
        let (client, url) = (client.clone(), format!("{}/metrics", gateway.url()));
        async move {
            let text = client.get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find(|l| l.starts_with("sse_gateway_open_streams "))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    let mut after = Vec::new();
    for round in 0..10 {
        let streams: Vec<reqwest::Response> = futures_util::stream::iter(0..2_000)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let mut r = client.get(&url).send().await.expect("stream");
                    assert_eq!(r.status(), 200);
                    r.chunk().await.expect("snapshot");
                    r
                }
            })
            .buffer_unordered(200)
            .collect()
            .await;
        assert_eq!(open_streams().await, Some(2_000.0), "round {round}");
        drop(streams);
        let closed = std::time::Instant::now();
        domain::testing::eventually(Duration::from_secs(10), "every stream closed", || async {
            (open_streams().await == Some(0.0)).then_some(())
        })
        .await;
        let took = closed.elapsed();
        after.push((rss_kib(gateway.pid()), took));
    }
    eprintln!("RSS (KiB) and time to 0 open streams after each round: {after:?}");
    // The allocator gives freed memory back in the background (jemalloc's decay, about
    // 10 s): once it has, the gateway is no larger than after the first round.
    let first = after[0].0;
    let settled = std::time::Instant::now();
    let last = domain::testing::eventually(
        Duration::from_secs(60),
        "RSS back within 20% of the first round's",
        || async {
            let now = rss_kib(gateway.pid());
            (now as f64 <= first as f64 * 1.2).then_some(now)
        },
    )
    .await;
    eprintln!(
        "RSS {last} KiB, {:?} after the last round (first round: {first} KiB)",
        settled.elapsed()
    );
}
