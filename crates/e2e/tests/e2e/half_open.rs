//! A Redis that vanishes without closing its sockets (a host crash, a dropped NAT entry):
//! nothing errors, everything just goes quiet. The gateway must notice, say so on
//! /readyz, and recover by itself once Redis is reachable again.
//!
//! The proxy's frozen sockets are still acknowledged by the kernel, so TCP's own timers
//! (keepalive, `TCP_USER_TIMEOUT`), which end a socket to a vanished host within about 20
//! s, never fire here: the test resets the frozen sockets itself at the point the kernel
//! would have, after checking that the gateway noticed on its own.

use crate::helpers::{ADMIN_TOKEN, Stack};
use crate::proxy::{CuttableProxy, pg_host_port, via_port};
use serde_json::json;
use std::time::Duration;

/// Whether any event of `text` carries a tally where `option` has `count` votes.
fn shows(text: &str, option: &str, count: i64) -> bool {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .any(|v| {
            let tally = if v["tally"].is_object() {
                &v["tally"]
            } else {
                &v["data"]["tally"]
            };
            tally[option].as_i64() == Some(count)
        })
}

async fn read_until(
    stream: &mut reqwest::Response,
    text: &mut String,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(text) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("{what}: not seen in 60 s; got {text}"))
            .expect("stream")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn status(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn a_silently_dead_redis_turns_the_gateway_unready_and_it_recovers_by_itself() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    let _worker = stack
        .start("batch-worker", &[("BATCH_MAX_WAIT_MS", "20")])
        .await;
    let proxy = CuttableProxy::start(pg_host_port(&stack.redis.config.redis_url)).await;
    let proxied = via_port(&stack.redis.config.redis_url, proxy.port);
    let gateway = stack
        .start(
            "sse-gateway",
            &[
                ("REDIS_URL", proxied.as_str()),
                ("REDIS_TIMEOUT_MS", "500"),
                ("SUBSCRIPTION_PING_MS", "200"),
                ("POLL_COALESCE_MS", "0"),
            ],
        )
        .await;
    let client = reqwest::Client::new();
    let ready = format!("{}/readyz", gateway.url());
    domain::testing::eventually(Duration::from_secs(20), "gateway ready", || async {
        (status(&client, &ready).await == Some(200)).then_some(())
    })
    .await;
    let body: serde_json::Value = client
        .post(format!("{}/v1/polls", ingest.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"question": "Up?", "options": ["yes", "no"]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let poll = body["poll_id"].as_str().expect("poll_id").to_string();
    let vote = |user: &'static str| {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/polls/{poll}/votes", ingest.url()),
        );
        async move {
            let r = client
                .post(url)
                .json(&json!({"option_id": "o1", "user_id": user}))
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 202);
        }
    };
    let mut stream = client
        .get(format!("{}/v1/polls/{poll}/stream", gateway.url()))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    vote("ann").await;
    read_until(&mut stream, &mut text, "the first vote", |t| {
        shows(t, "o1", 1)
    })
    .await;

    proxy.freeze();
    domain::testing::eventually(Duration::from_secs(30), "/readyz turns 503", || async {
        (status(&client, &ready).await == Some(503)).then_some(())
    })
    .await;
    // The subscription finds out by itself: its PING goes unanswered.
    domain::testing::eventually(
        Duration::from_secs(30),
        "the subscription's unanswered PING counted",
        || async {
            gateway
                .counted(&client, "sse_gateway_redis_ping_failures_total")
                .await?
                .then_some(())
        },
    )
    .await;

    // While Redis is unreachable from the gateway a vote still lands (ingest is direct).
    vote("ben").await;
    proxy.cut();
    proxy.thaw();
    proxy.restore();
    domain::testing::eventually(
        Duration::from_secs(60),
        "/readyz turns 200 again",
        || async { (status(&client, &ready).await == Some(200)).then_some(()) },
    )
    .await;
    // The resubscription sends the browser a fresh snapshot, which holds the vote the
    // gateway missed; a later vote arrives live.
    text.clear();
    read_until(&mut stream, &mut text, "the missed vote", |t| {
        shows(t, "o1", 2)
    })
    .await;
    vote("cat").await;
    read_until(&mut stream, &mut text, "a vote after recovery", |t| {
        shows(t, "o1", 3)
    })
    .await;
}
