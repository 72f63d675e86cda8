//! One connection for many topics, presence over several gateways, and browsers that hang
//! up noticed at once.

use crate::helpers::{SseClient, SseEvent, spawn_gateway, spawn_second_gateway};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn topic_of(e: &SseEvent) -> String {
    e.data["topic"].as_str().unwrap_or_default().to_string()
}

/// Reads until every poll of `polls` has sent its event at `seq` or later.
async fn until_each_at(client: &mut SseClient, polls: &[String], seq: i64) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    let mut done: HashMap<String, bool> = HashMap::new();
    while polls
        .iter()
        .any(|p| !done.get(&format!("poll:{p}")).copied().unwrap_or(false))
    {
        let e = client
            .next_event(WAIT)
            .await
            .expect("an event of every topic");
        if e.data["data"]["seq"].as_i64().is_some_and(|s| s >= seq) {
            done.insert(topic_of(&e), true);
        }
        seen.push(e);
    }
    seen
}

#[tokio::test]
async fn one_stream_carries_three_polls_and_resumes_all_of_them_with_exactly_what_was_missed() {
    let gw = spawn_gateway(|c| c.gateway.poll_coalesce_ms = 0).await;
    let polls: Vec<String> = [
        gw.create_poll(&["a", "b"]).await,
        gw.create_poll(&["a", "b"]).await,
        gw.create_poll(&["a", "b"]).await,
    ]
    .to_vec();
    let mut conn = gw.conn().await;
    for p in &polls {
        gw.vote(&mut conn, p, "o1", "first").await;
    }
    let url = format!(
        "{}/v1/stream?topics={}",
        gw.address,
        polls
            .iter()
            .map(|p| format!("poll:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut client = SseClient::connect(&url, None).await;
    let first = until_each_at(&mut client, &polls, 1).await;
    assert!(first.iter().all(|e| e.event == "snapshot"), "{first:?}");
    let last_id = first.last().and_then(|e| e.raw_id.clone()).expect("an id");
    assert_eq!(
        last_id.split(';').count(),
        3,
        "the id carries every topic: {last_id}"
    );
    drop(client);

    // Twenty votes on each poll while the browser is away.
    for p in &polls {
        for u in 0..20 {
            gw.vote(
                &mut conn,
                p,
                if u % 2 == 0 { "o1" } else { "o2" },
                &format!("u{u}"),
            )
            .await;
        }
    }
    let mut back = SseClient::connect_raw(&url, Some(&last_id)).await;
    let missed = until_each_at(&mut back, &polls, 21).await;
    for p in &polls {
        let seqs: Vec<i64> = missed
            .iter()
            .filter(|e| topic_of(e) == format!("poll:{p}"))
            .map(|e| {
                assert_eq!(e.event, "tally", "replayed, not a snapshot");
                e.data["data"]["seq"].as_i64().unwrap_or(-1)
            })
            .collect();
        assert_eq!(
            seqs,
            (2..=21).collect::<Vec<_>>(),
            "poll {p}: exactly the missed ones"
        );
        let last = missed
            .iter()
            .rev()
            .find(|e| topic_of(e) == format!("poll:{p}"))
            .expect("last");
        assert_eq!(last.data["data"]["total"], 21);
    }
}

#[tokio::test]
async fn bad_topic_lists_are_400() {
    let gw = spawn_gateway(|c| c.gateway.max_topics_per_stream = 2).await;
    for query in [
        "",
        "topics=",
        "topics=feeds:1",
        "topics=user:u",
        "topics=poll:a,poll:b,poll:c",
        "topics=nonsense",
    ] {
        let res = reqwest::get(format!("{}/v1/stream?{query}", gw.address))
            .await
            .expect("sent");
        assert_eq!(res.status(), 400, "{query}");
    }
    gw.create_poll(&["a", "b"]).await; // sets the shard markers: unknown is then 404
    let unknown = reqwest::get(format!("{}/v1/stream?topics=poll:nobody", gw.address))
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn presence_counts_browsers_on_every_gateway() {
    let a = spawn_gateway(|c| c.gateway.presence_interval_ms = 100).await;
    let b = spawn_second_gateway(&a, |c| c.gateway.presence_interval_ms = 100).await;
    let poll = a.create_poll(&["a", "b"]).await;
    let mut clients = Vec::new();
    for i in 0..30 {
        let gw = if i % 2 == 0 { &a } else { &b };
        clients.push(
            SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await,
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let mut watchers = 0;
        while watchers != 30 {
            let e = client
                .next_event(WAIT)
                .await
                .unwrap_or_else(|| panic!("browser {i}: no presence of 30 (last saw {watchers})"));
            if e.event == "presence" {
                watchers = e.data["watchers"].as_i64().unwrap_or(0);
            }
        }
    }
    let mut conn = a.conn().await;
    let total = domain::presence::count(
        &mut conn,
        &a.keys,
        &domain::channel::Channel::Poll(poll.clone()),
        chrono::Utc::now().timestamp_millis(),
    )
    .await
    .expect("count");
    assert_eq!(total, 30);
}

async fn open_streams(address: &str) -> f64 {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("sse_gateway_open_streams "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn a_browser_that_hangs_up_frees_its_place_without_waiting_for_a_heartbeat() {
    // Heartbeats a minute apart: only noticing the hang-up itself frees places soon.
    let gw = spawn_gateway(|c| c.gateway.heartbeat_s = 60).await;
    let poll = gw.create_poll(&["a", "b"]).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut c =
            SseClient::connect(&format!("{}/v1/polls/{poll}/stream", gw.address), None).await;
        c.next_event(WAIT).await.expect("snapshot");
        clients.push(c);
    }
    let multi = SseClient::connect(
        &format!("{}/v1/stream?topics=poll:{poll}", gw.address),
        None,
    )
    .await;
    clients.push(multi);
    assert_eq!(open_streams(&gw.address).await, 51.0);
    let closed_at = std::time::Instant::now();
    drop(clients);
    domain::testing::eventually(Duration::from_secs(5), "every place freed", || async {
        (open_streams(&gw.address).await == 0.0).then_some(())
    })
    .await;
    eprintln!(
        "50 streams freed {:?} after their browsers hung up",
        closed_at.elapsed()
    );
}
