use crate::helpers::{Harness, message, uuid};
use domain::shutdown::CancellationToken;
use std::time::Duration;

#[tokio::test]
async fn a_dead_workers_batch_is_reaped_and_stored_by_another() {
    let h = Harness::new().await;
    let msgs: Vec<_> = (0..30)
        .map(|i| message(&uuid(i), "s", Some("/"), None, "2025-11-14T10:00:00Z"))
        .collect();
    h.push(&msgs).await;
    let keys = h.keys().events_queue();

    // Worker "dead" claims everything, heartbeats once, and is never heard of again.
    let dead = h.worker("dead");
    let mut conn = h.redis.conn().await;
    dead.sources()[0]
        .heartbeat(&mut conn, Duration::from_millis(300))
        .await
        .expect("heartbeat");
    let claimed = dead.sources()[0]
        .claim(&mut conn, 1000)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 30);
    assert_eq!(h.llen(&keys.queue).await, 0);

    let mut survivor = h.worker("survivor");
    // While the heartbeat lives, the batch is left alone.
    let early = survivor.sources()[0]
        .reap_dead_workers(&mut conn)
        .await
        .expect("reap");
    assert_eq!(early.items, 0);

    let reaped = domain::testing::eventually(Duration::from_secs(30), "heartbeat expiry", || {
        let q = survivor.sources()[0].clone();
        let mut conn = conn.clone();
        async move {
            let o = q.reap_dead_workers(&mut conn).await.expect("reap");
            (o.workers == 1).then_some(o)
        }
    })
    .await;
    assert_eq!(reaped.items, 30);
    assert_eq!(h.llen(&keys.processing("dead")).await, 0);
    assert_eq!(h.drain(&mut survivor).await, 30);
    assert_eq!(h.count("SELECT count(*) FROM events").await, 30);
}

#[tokio::test]
async fn a_restarted_worker_with_a_stable_id_finishes_its_unacknowledged_batch() {
    let h = Harness::new().await;
    h.push(&[message(&uuid(1), "s", None, None, "2025-11-14T10:00:00Z")])
        .await;
    let first = h.worker("pod-0");
    let mut conn = h.redis.conn().await;
    first.sources()[0]
        .claim(&mut conn, 10)
        .await
        .expect("claim");
    drop(first);

    let mut restarted = h.worker("pod-0");
    let outcome = restarted
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.claimed, outcome.stored), (1, 1));
}

#[tokio::test]
async fn with_postgres_unreachable_the_batch_is_kept_and_handed_back_on_shutdown() {
    let h = Harness::new().await;
    let msgs: Vec<_> = (0..20)
        .map(|i| message(&uuid(i), "s", None, None, "2025-11-14T10:00:00Z"))
        .collect();
    h.push(&msgs).await;
    let mut unreachable = h.db.config.clone();
    unreachable.database_url = "postgres://postgres@127.0.0.1:1/nowhere".into();
    unreachable.database_connect_timeout_ms = 200;
    let worker = h.worker_with_pg("w-down", &unreachable);
    let keys = h.keys().events_queue();

    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    domain::testing::eventually(Duration::from_secs(30), "the batch is claimed", || async {
        (h.llen(&keys.processing("w-down")).await == 20).then_some(())
    })
    .await;
    // Retrying, not dropping: still claimed a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.llen(&keys.processing("w-down")).await, 20);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stops promptly")
        .expect("joins");
    assert_eq!(h.llen(&keys.queue).await, 20, "handed back to the queue");
    assert_eq!(h.llen(&keys.processing("w-down")).await, 0);

    let mut healthy = h.worker("w-up");
    assert_eq!(h.drain(&mut healthy).await, 20);
}

#[tokio::test]
async fn two_workers_draining_together_store_everything_exactly_once() {
    let mut h = Harness::new().await;
    h.settings.batch_max_items = 50;
    let msgs: Vec<_> = (0..2000)
        .map(|i| {
            message(
                &uuid(i),
                &format!("site{}", i % 3),
                Some(&format!("/p{}", i % 7)),
                Some(&format!("u{}", i % 50)),
                "2025-11-14T10:00:00Z",
            )
        })
        .collect();
    h.push(&msgs).await;
    let shutdown = CancellationToken::new();
    let a = tokio::spawn(h.worker("a").run(shutdown.clone()));
    let b = tokio::spawn(h.worker("b").run(shutdown.clone()));
    domain::testing::eventually(Duration::from_secs(30), "all stored", || async {
        (h.count("SELECT count(*) FROM events").await == 2000).then_some(())
    })
    .await;
    shutdown.cancel();
    let _ = tokio::join!(a, b);
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        2000
    );
    assert_eq!(
        h.count("SELECT sum(views)::bigint FROM rollup_hourly_paths")
            .await,
        2000
    );
    assert_eq!(
        h.count("SELECT count(*) FROM daily_visitors").await,
        distinct_site_user_pairs()
    );
}

/// The (site, user) pairs the messages above produce: one visitor row each.
fn distinct_site_user_pairs() -> i64 {
    let pairs: std::collections::HashSet<_> = (0..2000).map(|i| (i % 3, i % 50)).collect();
    pairs.len() as i64
}
