//! A batch-worker is ready only once Redis holds what writes need: the migrations applied
//! and the site registry, the webhook endpoints and topic subscriptions and every vote
//! shard's polls in Redis (put back from PostgreSQL by it or by another worker). Before,
//! `/readyz` answered 200 as soon as Redis and PostgreSQL answered a ping, and a client
//! starting right after `make up` got 503 "restoring" for its first write.

use crate::helpers::Stack;
use domain::keys::VOTE_SHARDS;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_worker_is_ready_only_once_redis_holds_the_registries() {
    let stack = Stack::new().await;
    let keys = stack.redis.keys();
    let mut redis = stack.redis.conn().await;
    // Another worker holds the site registry's restore lock (and, say, died restoring):
    // until the lock expires nobody puts the registry back.
    let _: () = domain::redis_client::cmd("SET")
        .arg(keys.sites_restoring())
        .arg("another-worker")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("SET");
    let worker = stack.start("batch-worker", &[]).await;
    let client = reqwest::Client::new();
    let ready = || async {
        let res = client
            .get(format!("{}/readyz", worker.url()))
            .send()
            .await
            .expect("worker reachable");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    };
    // Several restore checks (every 200 ms here) go by: never ready.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(1_500) {
        let (status, body) = ready().await;
        assert_eq!(status, 503, "ready without the site registry: {body}");
    }
    // The lock released: the worker restores, and is ready only once every marker is set.
    let _: () = domain::redis_client::cmd("DEL")
        .arg(keys.sites_restoring())
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let started = Instant::now();
    loop {
        let (status, body) = ready().await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready after 60 s: {body}"
        );
    }
    let mut markers = vec![
        keys.sites_restored(),
        keys.endpoints_restored(),
        keys.topics_restored(),
    ];
    markers.extend((0..VOTE_SHARDS).map(|s| keys.vote_shard_restored(s)));
    for marker in markers {
        let set: bool = domain::redis_client::cmd("EXISTS")
            .arg(&marker)
            .query_async(&mut redis)
            .await
            .expect("EXISTS");
        assert!(set, "ready before {marker} was set");
    }
}
