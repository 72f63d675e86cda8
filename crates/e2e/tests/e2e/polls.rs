use crate::helpers::{ADMIN_TOKEN, PrivateRedis, Service, Stack};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

async fn create_poll(
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
async fn wait_until_restored(stack: &Stack) {
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
