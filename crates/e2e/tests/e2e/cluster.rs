//! The loss of a Redis Cluster master under load: a cluster of the test's own (three
//! masters, a replica each, from `scripts/redis-cluster.sh`), one master `kill -9`ed while
//! events pour in.

use crate::helpers::Stack;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/redis-cluster.sh")
}

/// A private cluster on ports `base..base+5`; stopped when dropped.
struct PrivateCluster {
    base: u16,
    url: String,
}

impl PrivateCluster {
    async fn start() -> Self {
        // A base whose six ports and cluster-bus ports (+10000) are free.
        let base = loop {
            let base = 20_000 + (rand_u16() % 400) * 10;
            let free = (0..6).all(|i| {
                std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", base + i + 10_000)).is_ok()
            });
            if free {
                break base;
            }
        };
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &base.to_string()])
            .output()
            .await
            .expect("scripts/redis-cluster.sh runs");
        assert!(
            out.status.success(),
            "the cluster did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(url.starts_with("redis+cluster://"), "{url}");
        Self { base, url }
    }

    async fn cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The master serving the slot of `key`, and its replica.
    async fn master_and_replica_of(&self, key: &str) -> (u16, u16) {
        let slot: u16 = Self::cli(self.base, &["cluster", "keyslot", key])
            .await
            .trim()
            .parse()
            .expect("a slot");
        let nodes = Self::cli(self.base, &["cluster", "nodes"]).await;
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let port_of = |f: &Vec<&str>| -> u16 {
            f[1].split(['@', ':'])
                .nth(1)
                .expect("port")
                .parse()
                .expect("port")
        };
        let master = lines
            .iter()
            .find(|f| {
                f[2].contains("master")
                    && f[8..].iter().any(|range| {
                        let (a, b) = range.split_once('-').unwrap_or((range, range));
                        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                    })
            })
            .expect("a master for the slot");
        let replica = lines
            .iter()
            .find(|f| f[3] == master[0])
            .expect("the master has a replica");
        (port_of(master), port_of(replica))
    }

    /// Waits until the replica on `port` is a master (60 s failure bound).
    async fn wait_promoted(port: u16) {
        domain::testing::eventually(
            Duration::from_secs(60),
            "the replica is promoted",
            || async {
                Self::cli(port, &["role"])
                    .await
                    .starts_with("master")
                    .then_some(())
            },
        )
        .await;
    }

    async fn kill_9(&self, port: u16) {
        let pid_file = std::env::var("TALLY_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tally"))
            .join(format!("cluster-{}/{port}.pid", self.base));
        let pid = std::fs::read_to_string(&pid_file).expect("the node's pid file");
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .args(["stop", &self.base.to_string()])
            .status();
    }
}

fn rand_u16() -> u16 {
    u16::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..2]
            .try_into()
            .expect("2 bytes"),
    )
}

#[derive(Default)]
struct Answers {
    /// Event ids answered 202, and when.
    accepted: Vec<(String, Instant)>,
    unavailable: usize,
    other: Vec<String>,
}

#[tokio::test]
async fn a_master_killed_under_load_costs_503s_during_the_failover_and_nothing_acknowledged_after_it()
 {
    let cluster = PrivateCluster::start().await;
    let mut stack = Stack::with_redis_url(&cluster.url).await;
    stack.redis.config.event_queue_shards = 6;
    let ingest = stack
        .start("ingest-api", &[("RATE_LIMIT_PER_IP_PER_S", "0")])
        .await;
    let _worker = stack
        .start(
            "batch-worker",
            &[("HEARTBEAT_TTL_MS", "1000"), ("REAP_INTERVAL_MS", "250")],
        )
        .await;

    let answers = Arc::new(Mutex::new(Answers::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (answers, stop, url) = (answers.clone(), stop.clone(), ingest.url());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = uuid::Uuid::new_v4().to_string();
                    let mut event = crate::helpers::synthetic_event(7);
                    event["event_id"] = serde_json::json!(id);
                    let answer = client
                        .post(format!("{url}/v1/events"))
                        .json(&event)
                        .send()
                        .await;
                    let mut a = answers.lock().expect("lock");
                    match answer {
                        Ok(r) if r.status() == 202 => a.accepted.push((id, Instant::now())),
                        Ok(r) if r.status() == 503 => a.unavailable += 1,
                        Ok(r) => a.other.push(format!("status {}", r.status())),
                        Err(e) => a.other.push(format!("{e}")),
                    }
                }
            })
        })
        .collect();
    let accepted = || answers.lock().expect("lock").accepted.len();
    domain::testing::eventually(Duration::from_secs(30), "500 events accepted", || async {
        let a = answers.lock().expect("lock");
        assert!(
            a.other.is_empty(),
            "before the failover: {:?}",
            &a.other[..1]
        );
        (a.accepted.len() >= 500).then_some(())
    })
    .await;

    // The master of the first events shard goes.
    let shard = stack.redis.keys().events_queue().queue;
    let (master, replica) = cluster.master_and_replica_of(&shard).await;
    let killed_at = Instant::now();
    cluster.kill_9(master).await;
    PrivateCluster::wait_promoted(replica).await;
    let promoted_at = Instant::now();
    domain::testing::eventually(Duration::from_secs(60), "the cluster is ok", || async {
        PrivateCluster::cli(replica, &["cluster", "info"])
            .await
            .contains("cluster_state:ok")
            .then_some(())
    })
    .await;
    let settled_at = Instant::now();
    // Load goes on after the failover, until ingest has accepted plenty again.
    let before = accepted();
    domain::testing::eventually(
        Duration::from_secs(60),
        "ingest accepts again after the failover, by itself",
        || async { (accepted() >= before + 500).then_some(()) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }

    let answers = std::mem::take(&mut *answers.lock().expect("lock"));
    assert!(
        answers.other.is_empty(),
        "every answer is 202 or 503: {:?}",
        &answers.other[..answers.other.len().min(5)]
    );
    assert!(
        answers.unavailable > 0,
        "writes to the lost master's slots answered 503 while it was replaced"
    );

    // Everything acknowledged once the cluster had settled is stored, exactly once; what
    // was acknowledged before may have been lost with the master (asynchronous
    // replication), and is only counted.
    let after: HashSet<&str> = answers
        .accepted
        .iter()
        .filter(|(_, at)| *at >= settled_at)
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(!after.is_empty());
    let pool = stack.db.pool();
    let stored_after = || async {
        let client = pool.get().await.expect("pg");
        let ids: Vec<String> = after.iter().map(|s| s.to_string()).collect();
        client
            .query_one(
                "SELECT count(*) FROM events WHERE event_id::text = ANY($1)",
                &[&ids],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    domain::testing::eventually(
        Duration::from_secs(60),
        "every event acknowledged after the failover is stored",
        || async { (stored_after().await == after.len() as i64).then_some(()) },
    )
    .await;
    domain::testing::eventually(
        Duration::from_secs(60),
        "the worker drains every shard by itself",
        || async { (stack.items_in_redis().await == 0).then_some(()) },
    )
    .await;
    let total = stack.count("SELECT count(*) FROM events").await;
    let distinct = stack
        .count("SELECT count(DISTINCT event_id) FROM events")
        .await;
    assert_eq!(total, distinct, "nothing stored twice");
    let lost = answers.accepted.len() as i64 - total;
    println!(
        "failover: accepted {}, 503 {}, promoted after {:?}, cluster ok after {:?}, stored {total}, lost before the failover {lost}",
        answers.accepted.len(),
        answers.unavailable,
        promoted_at - killed_at,
        settled_at - killed_at,
    );
    assert!(lost >= 0, "more stored than accepted");
}

/// Reads `stream` into `text` until it holds `needle` (60 s failure bound).
async fn read_until(stream: &mut reqwest::Response, text: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !text.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("{needle} within 60 s; the stream held: {text}"))
            .expect("stream")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// How many subscribers `node` has of sharded channel `channel`.
async fn shard_subscribers(node: u16, channel: &str) -> i64 {
    let out = PrivateCluster::cli(node, &["pubsub", "shardnumsub", channel]).await;
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn live_updates_go_out_on_sharded_channels_a_stream_outlives_its_shards_master_and_unread_ones_are_let_go()
 {
    let cluster = PrivateCluster::start().await;
    let stack = Stack::with_redis_url(&cluster.url).await;
    let ingest = stack
        .start("ingest-api", &[("VOTE_RATE_LIMIT_PER_POLL_PER_S", "0")])
        .await;
    let _worker = stack.start("batch-worker", &[]).await;
    let gateway = stack
        .start("sse-gateway", &[("SUBSCRIPTION_PING_MS", "500")])
        .await;
    crate::polls::wait_until_restored(&stack).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (poll, options) = crate::polls::create_poll(&client, &ingest.url(), &["a", "b"]).await;
    let vote = |user: String| {
        let (client, url, option) = (
            client.clone(),
            format!("{}/v1/polls/{poll}/votes", ingest.url()),
            options[0].clone(),
        );
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"option_ids": [option], "user_id": user}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let mut stream = client
        .get(format!("{}/v1/polls/{poll}/stream", gateway.url()))
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    read_until(&mut stream, &mut text, "\"total\":0").await;
    assert_eq!(vote("u1".into()).await, 202);
    read_until(&mut stream, &mut text, "\"total\":1").await;

    // The gateway listens to the poll's sharded channel at the shard's master, and holds
    // no classic pattern subscription anywhere.
    let keys = stack.redis.keys();
    let channel = domain::channel::Channel::Poll(poll.clone()).name(&keys);
    let (master, replica) = cluster.master_and_replica_of(&channel).await;
    assert_eq!(shard_subscribers(master, &channel).await, 1);
    for node in cluster.base..cluster.base + 6 {
        let patterns = PrivateCluster::cli(node, &["pubsub", "numpat"]).await;
        assert_eq!(patterns.trim(), "0", "node {node}: no pattern subscription");
    }

    // The shard's master goes: the gateway subscribes again at the promoted replica, and
    // the open stream shows a vote cast after the failover.
    cluster.kill_9(master).await;
    PrivateCluster::wait_promoted(replica).await;
    let mut user = 2;
    domain::testing::eventually(
        Duration::from_secs(60),
        "a vote is accepted after the failover",
        || {
            user += 1;
            let voted = vote(format!("u{user}"));
            async move { (voted.await == 202).then_some(()) }
        },
    )
    .await;
    // A vote answered 503 during the failover may have counted too: Redis says how many.
    let total = || async {
        let mut conn = stack.redis.conn().await;
        let total: i64 = domain::redis_client::cmd("HGET")
            .arg(keys.poll(&poll).def)
            .arg("total")
            .query_async(&mut conn)
            .await
            .expect("the poll's total");
        total
    };
    read_until(
        &mut stream,
        &mut text,
        &format!("\"total\":{}", total().await),
    )
    .await;
    domain::testing::eventually(
        Duration::from_secs(30),
        "the gateway listens at the promoted replica",
        || async { (shard_subscribers(replica, &channel).await == 1).then_some(()) },
    )
    .await;
    let ready = format!("{}/readyz", gateway.url());
    domain::testing::eventually(Duration::from_secs(30), "the gateway is ready", || async {
        (client.get(&ready).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert_eq!(vote("u-last".into()).await, 202);
    read_until(
        &mut stream,
        &mut text,
        &format!("\"total\":{}", total().await),
    )
    .await;
    // Once nobody reads the poll here, the gateway lets its channel go.
    drop(stream);
    domain::testing::eventually(
        Duration::from_secs(60),
        "the gateway unsubscribes a channel nobody reads",
        || async { (shard_subscribers(replica, &channel).await == 0).then_some(()) },
    )
    .await;
}
