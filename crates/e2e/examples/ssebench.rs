//! Benchmark of live streams for `make bench`:
//! `ssebench GATEWAY_URL REDIS_URL KEY_PREFIX GATEWAY_PID STREAMS VOTES_PER_S SECONDS`.
//!
//! Opens STREAMS event streams on one poll, casts votes through the real vote script at
//! VOTES_PER_S, and measures vote-to-browser latency: for every vote and each of up to 200
//! sampled streams, the time from the vote's commit in Redis to the first event carrying
//! it (coalescing included). Also reports the gateway's resident memory per open stream
//! and, as the ceiling, the latency of a bare Redis PUBLISH to a subscriber at the same
//! rate. Prints one JSON object.

use domain::keys::Keys;
use domain::poll::{Ballot, NewPoll, PollOption, VoteOutcome};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SAMPLED: usize = 200;

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

fn percentiles(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!({"samples": 0});
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    serde_json::json!({"samples": v.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(
        a.len() >= 8,
        "usage: ssebench GATEWAY_URL REDIS_URL KEY_PREFIX GATEWAY_PID STREAMS VOTES_PER_S SECONDS"
    );
    let (gateway, redis_url, prefix, pid) =
        (a[1].clone(), a[2].clone(), a[3].clone(), a[4].clone());
    let streams: usize = a[5].parse().expect("STREAMS");
    let rate: f64 = a[6].parse().expect("VOTES_PER_S");
    let seconds: f64 = a[7].parse().expect("SECONDS");
    let keys = Keys::new(prefix);
    let client = domain::redis_client::Client::open(redis_url.as_str()).expect("REDIS_URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    domain::poll::shard_marker::set_all_restored(&mut conn, &keys)
        .await
        .expect("shard markers");
    let poll_id = uuid::Uuid::now_v7().to_string();
    let poll = NewPoll {
        question: "bench".into(),
        options: vec![
            PollOption {
                id: "o1".into(),
                label: "a".into(),
            },
            PollOption {
                id: "o2".into(),
                label: "b".into(),
            },
        ],
        closes_at: None,
        settings: domain::poll::PollSettings::default(),
    };
    domain::poll::create(&mut conn, &keys, &poll_id, &poll, chrono::Utc::now())
        .await
        .expect("create");

    // Open the streams; sampled ones record (id, arrival) of every event.
    let rss_before = rss_kib(&pid);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("{gateway}/v1/polls/{poll_id}/stream");
    type Arrivals = Arc<Mutex<Vec<Vec<(i64, Instant)>>>>;
    let arrivals: Arrivals = Arc::new(Mutex::new(vec![Vec::new(); SAMPLED]));
    let finals: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(vec![0; streams]));
    let opened = futures_util::stream::iter(0..streams)
        .map(|i| {
            let (http, url, arrivals, finals) =
                (http.clone(), url.clone(), arrivals.clone(), finals.clone());
            async move {
                let res = http.get(&url).send().await.ok()?;
                if res.status() != 200 {
                    return None;
                }
                tokio::spawn(async move {
                    let mut body = res.bytes_stream();
                    let mut buf = String::new();
                    while let Some(Ok(chunk)) = body.next().await {
                        let now = Instant::now();
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            if let Some(id) = block
                                .lines()
                                .find_map(|l| l.strip_prefix("id:"))
                                .and_then(|v| v.trim().parse::<i64>().ok())
                            {
                                if i < SAMPLED {
                                    arrivals.lock().expect("lock")[i].push((id, now));
                                }
                                finals.lock().expect("lock")[i] = id;
                            }
                        }
                    }
                });
                Some(())
            }
        })
        .buffer_unordered(256)
        .filter_map(|x| async move { x })
        .count()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_open = rss_kib(&pid);

    // Vote at the rate, recording when each sequence number was committed.
    let committed: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let start = Instant::now();
    let total_votes = (rate * seconds) as u64;
    let voters: Vec<_> = (0..8u64)
        .map(|lane| {
            let (keys, poll_id, committed, client) = (
                keys.clone(),
                poll_id.clone(),
                committed.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("redis");
                let mut n = lane;
                while n < total_votes {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(n as f64 / rate)).into(),
                    )
                    .await;
                    let ballot = Ballot {
                        option_ids: vec![if n % 2 == 0 { "o1".into() } else { "o2".into() }],
                        user_id: format!("v{n}"),
                    };
                    if let Ok(VoteOutcome::Accepted(body)) = domain::poll::vote(
                        &conn,
                        &keys,
                        &domain::poll::Vote::open(poll_id.as_str(), ballot),
                        chrono::Utc::now(),
                    )
                    .await
                    {
                        let now = Instant::now();
                        if let Some(seq) = serde_json::from_str::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|b| b["seq"].as_i64())
                        {
                            committed.lock().expect("lock").insert(seq, now);
                        }
                    }
                    n += 8;
                }
            })
        })
        .collect();
    for v in voters {
        let _ = v.await;
    }
    let last_seq = committed
        .lock()
        .expect("lock")
        .keys()
        .copied()
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while finals
        .lock()
        .expect("lock")
        .iter()
        .take(opened)
        .any(|f| *f < last_seq)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let complete = finals
        .lock()
        .expect("lock")
        .iter()
        .take(opened)
        .filter(|f| **f >= last_seq)
        .count();

    // Per (vote, sampled stream): arrival of the first event with id >= the vote's seq.
    let committed = committed.lock().expect("lock").clone();
    let mut latencies = Vec::new();
    for events in arrivals.lock().expect("lock").iter() {
        for (seq, at) in &committed {
            if let Some((_, arrived)) = events.iter().find(|(id, _)| id >= seq) {
                latencies.push(arrived.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
    }

    // The ceiling: PUBLISH to one subscriber at the same rate.
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let channel = format!("{}:bench:publish", keys.prefix());
    pubsub.subscribe(&channel).await.expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let publisher = {
        let (client, channel) = (client.clone(), channel.clone());
        tokio::spawn(async move {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            let start = Instant::now();
            for n in 0..(rate * 5.0) as u64 {
                tokio::time::sleep_until((start + Duration::from_secs_f64(n as f64 / rate)).into())
                    .await;
                let sent = start.elapsed().as_nanos().to_string();
                let _: i64 = domain::redis_client::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(sent)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
            }
            start
        })
    };
    let mut raw = Vec::new();
    let mut received = Vec::new();
    while raw.len() < (rate * 5.0) as usize {
        match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(m)) => {
                raw.push(Instant::now());
                received.push(m.get_payload::<String>().unwrap_or_default());
            }
            _ => break,
        }
    }
    let pub_start = publisher.await.expect("publisher");
    let publish: Vec<f64> = raw
        .iter()
        .zip(&received)
        .filter_map(|(at, sent)| {
            let sent = Duration::from_nanos(sent.parse().ok()?);
            Some(at.saturating_duration_since(pub_start + sent).as_secs_f64() * 1000.0)
        })
        .collect();

    let out = serde_json::json!({
        "streams_requested": streams,
        "streams_open": opened,
        "streams_with_final_state": complete,
        "votes": committed.len(),
        "votes_per_s": committed.len() as f64 / seconds,
        "vote_to_browser": percentiles(latencies),
        "bare_publish": percentiles(publish),
        "gateway_rss_kib_before": rss_before,
        "gateway_rss_kib_with_streams": rss_open,
        "gateway_kib_per_stream": (rss_open.saturating_sub(rss_before)) as f64 / opened.max(1) as f64,
    });
    println!("{out}");
}
