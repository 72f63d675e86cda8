//! Notifications end to end: real ingest-api, batch-worker, stats-api, a real webhook and
//! SMS receiver, a real SMTP server, and the Standard Webhooks reference library.

use crate::helpers::Stack;
use crate::notify::{Notify, WORKER, webhook_notification};
use crate::receiver::Receiver;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Checks signatures with the Standard Webhooks reference library (Python), never with
/// Tally's code: one verdict per request.
async fn verify_independently(secret: &str, requests: &[crate::receiver::Received]) -> Vec<String> {
    let script = domain::testing::workspace_root().join("scripts/testpeers/verify_webhooks.py");
    let mut child = tokio::process::Command::new(domain::testing::test_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut stdin = child.stdin.take().expect("stdin");
    for r in requests {
        let line = json!({
            "secret": secret,
            "id": r.header("webhook-id"),
            "timestamp": r.header("webhook-timestamp"),
            "signature": r.header("webhook-signature"),
            "body": r.body,
        });
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().await.expect("verifier ran");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_webhook_failing_three_times_is_delivered_once_on_the_fourth_attempt_with_one_verifiable_id()
 {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let _worker = stack.start("batch-worker", WORKER).await;
    let receiver = Receiver::start().await;
    let (_, secret) = api
        .endpoint(&receiver.url("/fail/3/hook"), &["deploy.*"])
        .await;
    let id = api.send(&webhook_notification("deploy.finished")).await;

    let status = api
        .wait_state(&id, "delivered", Duration::from_secs(30))
        .await;
    let requests = receiver.received_at("/fail/3/");
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 500, 200],
        "three failures, then exactly one success"
    );
    let webhook_id = requests[0].header("webhook-id");
    assert!(webhook_id.starts_with("msg_"));
    assert!(
        requests
            .iter()
            .all(|r| r.header("webhook-id") == webhook_id),
        "one webhook-id for every attempt"
    );
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same body every time"
    );
    let verdicts = verify_independently(&secret, &requests).await;
    assert_eq!(
        verdicts,
        vec!["ok"; 4],
        "every signature verifies with the reference library"
    );
    let body: Value = serde_json::from_str(&requests[3].body).expect("json");
    assert_eq!(
        (
            body["type"].clone(),
            body["data"]["notification_id"].clone()
        ),
        (json!("deploy.finished"), json!(id))
    );
    let webhook = &status["channels"]["webhook"];
    assert_eq!(
        (webhook["attempts"].clone(), webhook["completed"].clone()),
        (json!(4), json!(1))
    );
    let outcomes: Vec<String> = {
        let client = stack.db.pool().get().await.expect("pg");
        client
            .query(
                "SELECT outcome FROM delivery_attempts ORDER BY attempt",
                &[],
            )
            .await
            .expect("attempts")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(outcomes, ["failed", "failed", "failed", "delivered"]);
}

#[tokio::test]
async fn after_a_secret_rotation_each_delivery_verifies_with_the_old_secret_and_the_new() {
    let stack = Stack::new().await;
    let (api, ingest, _stats) = Notify::start(&stack, &[]).await;
    let _worker = stack.start("batch-worker", WORKER).await;
    let receiver = Receiver::start().await;
    let (endpoint, old) = api.endpoint(&receiver.url("/ok/rotated"), &[]).await;
    let rotated: Value = api
        .client
        .post(format!(
            "{}/v1/webhooks/endpoints/{endpoint}/rotate-secret",
            ingest.url()
        ))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let new = rotated["secret"]
        .as_str()
        .expect("a new secret")
        .to_string();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let id = api.send(&webhook_notification("rotation.test")).await;
    api.wait_state(&id, "delivered", Duration::from_secs(20))
        .await;
    let requests = receiver.received_at("/ok/rotated");
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("webhook-signature").split(' ').count(),
        2,
        "two signatures"
    );
    for secret in [&old, &new] {
        assert_eq!(
            verify_independently(secret, &requests).await,
            vec!["ok"],
            "verifies with {secret}"
        );
    }
    assert_eq!(
        verify_independently(&domain::notify::webhook::new_secret(), &requests).await[0][..4]
            .to_string(),
        "fail",
        "and not with any other secret"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_a_healthy_one() {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    // Sixteen slots: without the per-endpoint share the hanging endpoint would hold them all.
    let mut env = WORKER.to_vec();
    env.extend([
        ("WEBHOOK_CONCURRENCY", "16"),
        ("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", "4"),
        ("WEBHOOK_TIMEOUT_MS", "60000"),
    ]);
    let _worker = stack.start("batch-worker", &env).await;
    let receiver = Receiver::start().await;
    api.endpoint(&receiver.url("/hang/h"), &["slow.*"]).await;
    api.endpoint(&receiver.url("/ok/fast"), &["fast.*"]).await;
    for _ in 0..100 {
        api.send(&webhook_notification("slow.thing")).await;
    }
    domain::testing::eventually(
        Duration::from_secs(20),
        "the hanging endpoint holds its share",
        || async { (receiver.received_at("/hang/").len() >= 4).then_some(()) },
    )
    .await;
    let mut sent_at = HashMap::new();
    for _ in 0..20 {
        let id = api.send(&webhook_notification("fast.thing")).await;
        sent_at.insert(id, Instant::now());
    }
    // The bound this test states: each healthy delivery within 2 s of its request while
    // the other endpoint hangs (typically a few ms; the per-endpoint share and the
    // 250 ms set-aside of the hanging endpoint's deliveries are what keep it so).
    let bound = Duration::from_secs(2);
    let delivered: HashMap<String, Duration> =
        domain::testing::eventually(Duration::from_secs(20), "20 healthy deliveries", || async {
            let got: HashMap<String, Duration> = receiver
                .received_at("/ok/fast")
                .iter()
                .filter_map(|r| {
                    let body: Value = serde_json::from_str(&r.body).ok()?;
                    let id = body["data"]["notification_id"].as_str()?.to_string();
                    Some((id.clone(), sent_at.get(&id)?.elapsed()))
                })
                .collect();
            (got.len() == 20).then_some(got)
        })
        .await;
    // Measured when the test saw them, so an upper bound of the delivery latency.
    let slowest = delivered.values().max().copied().unwrap_or_default();
    assert!(
        slowest < bound + Duration::from_secs(1),
        "a healthy delivery waited {slowest:?}"
    );
    let hanging = receiver.received_at("/hang/").len();
    assert!(
        hanging <= 4,
        "the hanging endpoint got {hanging} requests at once, over its share of 4"
    );
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_and_counted() {
    let stack = Stack::new().await;
    let (api, ingest, _stats) = Notify::start(&stack, &[]).await;
    let worker = stack.start("batch-worker", WORKER).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = api.endpoint(&receiver.url("/gone/x"), &[]).await;
    let first = api.send(&webhook_notification("any.thing")).await;
    let status = api
        .wait_state(&first, "failed", Duration::from_secs(20))
        .await;
    assert!(
        status["channels"]["webhook"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("410")
    );
    let shown: Value = api
        .client
        .get(format!("{}/v1/webhooks/endpoints/{endpoint}", ingest.url()))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (shown["disabled"].clone(), shown["disabled_reason"].clone()),
        (json!(true), json!("gone"))
    );
    let metrics = reqwest::get(format!("{}/metrics", worker.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("batch_worker_endpoints_disabled_total{reason=\"gone\"} 1")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("disabled"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // A disabled endpoint gets nothing more.
    let second = api.send(&webhook_notification("any.thing")).await;
    let status = api
        .wait_state(&second, "delivered", Duration::from_secs(20))
        .await;
    assert_eq!(status["channels"]["webhook"]["total"], 0);
    assert_eq!(receiver.received_at("/gone/").len(), 1);
}

#[tokio::test]
async fn kill_9_of_the_worker_during_10000_webhook_deliveries_delivers_every_one() {
    const TOTAL: usize = 10_000;
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let first = stack.start("batch-worker", WORKER).await;
    let receiver = Receiver::start().await;
    api.endpoint(&receiver.url("/ok/kill"), &[]).await;
    first.kill_9().await;
    let sent: Vec<String> = futures_util::stream::iter(0..TOTAL)
        .map(|_| {
            let api = &api;
            async move { api.send(&webhook_notification("load.test")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(sent.len(), TOTAL);
    let at_least = |n: usize| {
        let receiver = &receiver;
        async move {
            domain::testing::eventually(
                Duration::from_secs(120),
                &format!("{n} deliveries received"),
                || async { (receiver.received_at("/ok/kill").len() >= n).then_some(()) },
            )
            .await;
        }
    };
    for step in 1..=3 {
        let worker = stack.start("batch-worker", WORKER).await;
        at_least(step * TOTAL / 5).await;
        worker.kill_9().await;
    }
    let _last = stack.start("batch-worker", WORKER).await;
    let count = |sql: &'static str| {
        let stack = &stack;
        async move { stack.count(sql).await }
    };
    domain::testing::eventually(
        Duration::from_secs(180),
        "every delivery delivered",
        || async {
            (count("SELECT count(*) FROM deliveries WHERE state = 'delivered'").await
                == TOTAL as i64)
                .then_some(())
        },
    )
    .await;

    let received = receiver.received_at("/ok/kill");
    let mut at_receiver: HashMap<String, i64> = HashMap::new();
    for r in &received {
        *at_receiver
            .entry(r.header("webhook-id").to_string())
            .or_default() += 1;
    }
    assert_eq!(
        at_receiver.len(),
        TOTAL,
        "every delivery reached the receiver"
    );
    let client = stack.db.pool().get().await.expect("pg");
    let rows = client
        .query(
            "SELECT d.delivery_id, count(a.*),
                    count(*) FILTER (WHERE a.outcome = 'delivered'),
                    count(*) FILTER (WHERE a.outcome = 'interrupted'),
                    count(*) FILTER (WHERE a.outcome = 'failed' AND a.status_code IS NULL)
             FROM deliveries d JOIN delivery_attempts a USING (delivery_id)
             GROUP BY d.delivery_id",
            &[],
        )
        .await
        .expect("attempts");
    assert_eq!(rows.len(), TOTAL);
    let mut duplicates = 0;
    let mut interrupted_total = 0;
    for row in &rows {
        let id: String = row.get(0);
        let (attempts, delivered, interrupted, unanswered): (i64, i64, i64, i64) =
            (row.get(1), row.get(2), row.get(3), row.get(4));
        let seen = at_receiver.get(&id).copied().unwrap_or(0);
        assert_eq!(delivered, 1, "{id}: one delivered attempt");
        assert!(
            seen <= attempts,
            "{id}: the receiver saw {seen} requests, PostgreSQL records {attempts} attempts"
        );
        // An attempt the worker was killed in, or one that failed without an answer (a
        // connection the receiver, busy on two shared cores, never accepted in time).
        assert!(
            attempts - seen <= interrupted + unanswered,
            "{id}: {attempts} attempts, {seen} seen: only interrupted or unanswered attempts may be unseen"
        );
        duplicates += seen - 1;
        interrupted_total += interrupted;
    }
    assert!(
        interrupted_total >= 1,
        "the kills hit attempts under way, and their workers' deliveries were taken back"
    );
    // Duplicates only where a worker was killed mid-attempt, each with the same webhook-id.
    assert!(duplicates as usize <= 3 * 512, "{duplicates} duplicates");
    let in_redis = crate::notify::leftovers(&stack).await;
    assert_eq!(in_redis, 0, "nothing left queued, scheduled or in flight");
}

#[tokio::test]
async fn email_and_sms_reach_real_peers_with_their_fields_and_auth() {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let script = domain::testing::workspace_root().join("scripts/testpeers/smtp_sink.py");
    let mut smtp = tokio::process::Command::new(domain::testing::test_python())
        .arg(script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(smtp.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the SMTP server starts")
        .expect("read")
        .expect("a line");
    let port = first
        .strip_prefix("listening ")
        .expect("listening PORT")
        .to_string();
    let receiver = Receiver::start().await;
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let sms_url = receiver.url("");
    let mut env = WORKER.to_vec();
    env.extend([
        ("SMTP_URL", smtp_url.as_str()),
        ("EMAIL_FROM", "Tally <tally@example.com>"),
        ("SMS_API_URL", sms_url.as_str()),
        ("SMS_ACCOUNT_SID", "AC0123"),
        ("SMS_AUTH_TOKEN", "sms-secret"),
        ("SMS_FROM", "+15005550006"),
    ]);
    let _worker = stack.start("batch-worker", &env).await;
    let id = api
        .send(&json!({
            "recipients": [{"user_id": "u1", "email": "u1@example.com", "phone": "+14155550100"}, "u2"],
            "title": "Deploy finished",
            "body": "Version 2 is live.",
            "html": "<p>Version <b>2</b> is live.</p>",
            "channels": ["email", "sms"],
        }))
        .await;
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a message arrives")
        .expect("read")
        .expect("a line");
    let mail: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(mail["to"], json!(["u1@example.com"]));
    assert_eq!(mail["from"], "tally@example.com");
    assert_eq!(mail["subject"], "Deploy finished");
    assert_eq!(
        mail["text"].as_str().map(str::trim),
        Some("Version 2 is live.")
    );
    assert_eq!(
        mail["html"].as_str().map(str::trim),
        Some("<p>Version <b>2</b> is live.</p>")
    );
    assert!(mail["message_id"].as_str().unwrap_or("").contains("msg_"));

    let status = api
        .wait_state(&id, "delivered", Duration::from_secs(20))
        .await;
    assert_eq!(
        status["channels"]["email"]["skipped"], 1,
        "u2 has no address"
    );
    let sms = receiver.received_at("/2010-04-01/Accounts/AC0123/Messages.json");
    assert_eq!(sms.len(), 1);
    let expected_auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "AC0123:sms-secret"
        )
    );
    assert_eq!(sms[0].header("authorization"), expected_auth);
    let form: HashMap<String, String> = url_form(&sms[0].body);
    assert_eq!(form["To"], "+14155550100");
    assert_eq!(form["From"], "+15005550006");
    assert_eq!(form["Body"], "Deploy finished: Version 2 is live.");
}

fn url_form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn a_notification_to_10000_recipients_lands_once_in_every_feed() {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let _worker = stack.start("batch-worker", WORKER).await;
    let users: Vec<String> = (0..10_000).map(|i| format!("member-{i}")).collect();
    let id = api
        .send(&json!({"recipients": users, "title": "All hands", "body": "at 3", "channels": ["in_app"]}))
        .await;
    let status = api
        .wait_state(&id, "delivered", Duration::from_secs(60))
        .await;
    assert_eq!(
        status["progress"],
        json!({"completed": 10_000, "total": 10_000})
    );
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT user_id) FROM feed_items")
            .await,
        10_000
    );
    assert_eq!(stack.count("SELECT count(*) FROM feed_items").await, 10_000);
    let keys = stack.redis.keys();
    let mut conn = stack.redis.conn().await;
    for chunk in users.chunks(1_000) {
        let mut pipe = domain::redis_client::pipe();
        for u in chunk {
            pipe.cmd("ZSCORE").arg(keys.feed(u).items).arg(&id);
            pipe.cmd("ZCARD").arg(keys.feed(u).items);
        }
        let answers: Vec<Option<f64>> = pipe.query_async(&mut conn).await.expect("pipeline");
        for (u, pair) in chunk.iter().zip(answers.chunks(2)) {
            assert_eq!(
                pair,
                [Some(1.0), Some(1.0)],
                "{u}: the item once, first in the feed"
            );
        }
    }
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_listed_retried_once_fixed_and_purged_by_age() {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let _worker = stack.start("batch-worker", WORKER).await;
    let receiver = Receiver::start().await;
    api.endpoint(&receiver.url("/down/dlq"), &["dlq.*"]).await;
    let id = api.send(&webhook_notification("dlq.test")).await;
    api.wait_state(&id, "dead", Duration::from_secs(20)).await;
    assert_eq!(
        receiver.received_at("/down/").len(),
        4,
        "every attempt of the schedule"
    );
    let listed = api
        .admin(
            reqwest::Method::GET,
            "/v1/dead-letters?queue=webhook&reason=retries_exhausted",
            None,
        )
        .await;
    assert_eq!(listed["total"], 1);
    let letter = &listed["dead_letters"][0];
    assert!(
        letter["reason"].as_str().unwrap_or("").contains("HTTP 500"),
        "{letter}"
    );
    assert_eq!(letter["item"]["notification_id"], id.as_str());

    receiver.fix();
    let retried = api
        .admin(
            reqwest::Method::POST,
            "/v1/dead-letters/retry",
            Some(json!({"ids": [letter["id"]]})),
        )
        .await;
    assert_eq!(retried["retried"], 1);
    api.wait_state(&id, "delivered", Duration::from_secs(20))
        .await;
    let ok = receiver
        .received_at("/down/")
        .iter()
        .filter(|r| r.status == 200)
        .count();
    assert_eq!(ok, 1, "delivered once");
    let listed = api
        .admin(reqwest::Method::GET, "/v1/dead-letters?queue=webhook", None)
        .await;
    assert_eq!(listed["total"], 0, "the retried letter left the list");

    // Purge by age: a letter newer than the cutoff stays, an older one goes.
    api.endpoint(&receiver.url("/gone/purge"), &["purge.*"])
        .await;
    let mut conn = stack.redis.conn().await;
    let dead = stack.redis.keys().delivery("webhook").queue.dead;
    for (age_ms, reason) in [(3_600_000, "old"), (0, "new")] {
        let letter = json!({"reason": reason, "item": "{}", "at_ms": chrono::Utc::now().timestamp_millis() - age_ms, "worker_id": "w"});
        let _: () = domain::redis_client::cmd("LPUSH")
            .arg(&dead)
            .arg(letter.to_string())
            .query_async(&mut conn)
            .await
            .expect("LPUSH");
    }
    let purged = api
        .admin(
            reqwest::Method::DELETE,
            "/v1/dead-letters?queue=webhook&older_than=30m",
            None,
        )
        .await;
    assert_eq!(purged["purged"], 1);
    let left = api
        .admin(reqwest::Method::GET, "/v1/dead-letters?queue=webhook", None)
        .await;
    assert_eq!(left["dead_letters"][0]["reason"], "new");
}

#[tokio::test]
async fn an_endpoint_whose_host_resolves_to_an_internal_address_is_refused_at_delivery() {
    let stack = Stack::new().await;
    // Neither ingest-api nor the worker allows internal addresses here.
    let (api, _ingest, _stats) =
        Notify::start(&stack, &[("WEBHOOK_ALLOW_INTERNAL", "false")]).await;
    let env: Vec<(&str, &str)> = WORKER
        .iter()
        .copied()
        .filter(|(k, _)| *k != "WEBHOOK_ALLOW_INTERNAL")
        .collect();
    let _worker = stack.start("batch-worker", &env).await;
    let receiver = Receiver::start().await;
    let refused = api
        .client
        .post(format!("{}/v1/webhooks/endpoints", api.ingest))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"url": receiver.url("/ok/direct")}))
        .send()
        .await
        .expect("sent");
    assert!(matches!(refused.status().as_u16(), 400 | 503));
    // This machine's own name resolves to a loopback address: accepted as a name, refused
    // where it is resolved, at delivery.
    let host = internal_host_name().await;
    let (_, _) = api
        .endpoint(&format!("http://{host}:{}/ok/rebind", receiver.port), &[])
        .await;
    let id = api.send(&webhook_notification("ssrf.test")).await;
    let status = api.wait_state(&id, "dead", Duration::from_secs(20)).await;
    let error = status["channels"]["webhook"]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("loopback, private or link-local"), "{error}");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the internal address"
    );
}

/// A name of this machine that resolves only to internal addresses (its host name, which
/// Debian maps to a loopback address).
async fn internal_host_name() -> String {
    let mut candidates = vec![
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
    ];
    candidates.extend(["ip6-localhost", "ip6-loopback", "localhost6"].map(String::from));
    for name in candidates
        .into_iter()
        .filter(|n| !n.is_empty() && n != "localhost")
    {
        let addrs: Vec<_> = match tokio::net::lookup_host((name.as_str(), 80)).await {
            Ok(addrs) => addrs.collect(),
            Err(_) => continue,
        };
        if !addrs.is_empty()
            && addrs
                .iter()
                .all(|a| domain::notify::webhook::is_internal(a.ip()))
        {
            return name;
        }
    }
    panic!("no name of this machine resolves to a loopback address (check /etc/hosts)");
}

#[tokio::test]
async fn a_notification_reaches_its_users_open_feed_streams_live() {
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let _worker = stack.start("batch-worker", WORKER).await;
    let gateway = stack
        .start(
            "sse-gateway",
            &[("STREAM_TOKEN_SECRET", crate::notify::STREAM_SECRET)],
        )
        .await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let mut streams = Vec::new();
    for user in ["ann", "bob"] {
        let token = domain::stream_token::mint(
            crate::notify::STREAM_SECRET.as_bytes(),
            &format!("feed:{user}"),
            exp,
        );
        let mut res = api
            .client
            .get(format!(
                "{}/v1/users/{user}/feed/stream?token={token}",
                gateway.url()
            ))
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        let mut text = String::new();
        read_until(&mut res, &mut text, "event: snapshot").await;
        streams.push((res, text));
    }
    let id = api
        .send(&json!({"recipients": ["ann", "bob"], "title": "Lunch", "body": "is ready", "channels": ["in_app"]}))
        .await;
    for (res, text) in &mut streams {
        read_until(res, text, "event: notification").await;
        assert!(text.contains(&id), "{text}");
        assert!(text.contains("\"unread\":1"), "{text}");
    }
}

/// Reads `stream` into `text` until it contains `needle` (20 s failure bound).
async fn read_until(stream: &mut reqwest::Response, text: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !text.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time; got {text}"))
            .expect("stream")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn kill_9_of_the_worker_while_it_fills_a_readers_feed_puts_every_notification_there_once() {
    const TOTAL: usize = 20_000;
    let stack = Stack::new().await;
    let (api, _ingest, _stats) = Notify::start(&stack, &[]).await;
    let first = stack.start("batch-worker", WORKER).await;
    // The topics registry is ready once the worker has marked it restored (503 before).
    domain::testing::eventually(Duration::from_secs(20), "the reader subscribed", || async {
        let res = api
            .client
            .post(format!("{}/v1/topics/digest/subscribers", api.ingest))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .json(&json!({"subscribers": ["reader"]}))
            .send()
            .await
            .ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    first.kill_9().await;
    // Queued with no worker, then fanned out in runs of a batch each (one feed call per
    // run), by workers killed one after another.
    let sent: Vec<String> = futures_util::stream::iter(0..TOTAL)
        .map(|i| {
            let api = &api;
            async move {
                api.send(
                    &json!({"topic": "digest", "title": format!("n{i}"), "body": "b",
                                  "channels": ["in_app"]}),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let in_feed = "SELECT count(*) FROM feed_items WHERE user_id = 'reader'";
    for step in 1..=3 {
        let worker = stack.start("batch-worker", WORKER).await;
        domain::testing::eventually(
            Duration::from_secs(120),
            &format!("{step} fifths in the feed"),
            || async { (stack.count(in_feed).await >= (step * TOTAL / 5) as i64).then_some(()) },
        )
        .await;
        worker.kill_9().await;
        eprintln!(
            "killed with {} of {TOTAL} in the feed",
            stack.count(in_feed).await
        );
    }
    let _last = stack.start("batch-worker", WORKER).await;
    domain::testing::eventually(
        Duration::from_secs(180),
        "every notification in the feed",
        || async { (stack.count(in_feed).await >= TOTAL as i64).then_some(()) },
    )
    .await;

    // Once each: PostgreSQL's feed holds exactly the notifications sent.
    let client = stack.db.pool().get().await.expect("pg");
    let stored: Vec<String> = client
        .query(
            "SELECT notification_id::text FROM feed_items WHERE user_id = 'reader'",
            &[],
        )
        .await
        .expect("feed")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(stored_sorted.len(), TOTAL, "one feed item per notification");
    assert_eq!(
        stored_sorted, sent_sorted,
        "the feed holds exactly the notifications sent"
    );
    // Redis keeps the newest ones, each under its own sequence number.
    let keys = stack.redis.keys();
    let feed = keys.feed("reader");
    let kept: Vec<(String, f64)> = domain::redis_client::cmd("ZRANGE")
        .arg(&feed.items)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut stack.redis.conn().await)
        .await
        .expect("feed");
    assert_eq!(kept.len(), domain::notify::feed::FEED_KEEP);
    let sent_set: std::collections::HashSet<&String> = sent.iter().collect();
    assert!(
        kept.iter().all(|(id, _)| sent_set.contains(id)),
        "the live feed holds only notifications sent"
    );
}
