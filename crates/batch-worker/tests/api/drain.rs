use crate::helpers::{Harness, message, uuid};
use domain::shutdown::CancellationToken;
use serde_json::json;

#[tokio::test]
async fn a_batch_is_stored_with_its_rollups() {
    let h = Harness::new().await;
    h.push(&[
        message(&uuid(1), "s", Some("/"), Some("u1"), "2025-11-14T10:00:00Z"),
        message(
            &uuid(2),
            "s",
            Some("/pricing"),
            Some("u2"),
            "2025-11-14T10:05:00Z",
        ),
        message(
            &uuid(3),
            "s",
            Some("/pricing"),
            Some("u1"),
            "2025-11-14T11:10:00Z",
        ),
        message(&uuid(4), "s", None, None, "2025-11-15T00:00:00Z"),
    ])
    .await;
    let mut worker = h.worker("w1");
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!(
        (outcome.claimed, outcome.stored, outcome.dead_lettered),
        (4, 4, 0)
    );

    assert_eq!(h.count("SELECT count(*) FROM events").await, 4);
    assert_eq!(
        h.count(
            "SELECT sum(events)::bigint FROM rollup_hourly WHERE bucket = '2025-11-14T10:00:00Z'"
        )
        .await,
        2
    );
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_minutely")
            .await,
        4
    );
    assert_eq!(
        h.count(
            "SELECT sum(views)::bigint FROM rollup_hourly_paths WHERE path = '/pricing' AND bucket >= '2025-11-14' AND bucket < '2025-11-15'"
        )
        .await,
        2
    );
    assert_eq!(
        h.count("SELECT count(*) FROM daily_visitors WHERE day = '2025-11-14'")
            .await,
        2
    );
    // u1 was seen in hours 10 and 11.
    assert_eq!(
        h.count("SELECT hours::bigint FROM daily_visitors WHERE user_id = 'u1'")
            .await,
        (1 << 10) | (1 << 11)
    );
    assert_eq!(
        h.llen(&h.keys().events_queue().processing("w1")).await,
        0,
        "acknowledged"
    );
}

#[tokio::test]
async fn the_same_event_id_twice_is_stored_and_counted_once() {
    let h = Harness::new().await;
    let e = message(&uuid(7), "s", Some("/"), Some("u"), "2025-11-14T10:00:00Z");
    h.push(&[e.clone(), e.clone()]).await;
    let mut worker = h.worker("w1");
    assert_eq!(h.drain(&mut worker).await, 1);
    h.push(&[e]).await;
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.stored, outcome.duplicates), (0, 1));

    assert_eq!(h.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT sum(views)::bigint FROM rollup_hourly_paths")
            .await,
        1
    );
}

#[tokio::test]
async fn one_event_id_on_two_sites_is_two_events_each_counted_once_even_when_replayed() {
    let h = Harness::new().await;
    let a = message(&uuid(8), "a", Some("/"), Some("u"), "2025-11-14T10:00:00Z");
    let b = message(&uuid(8), "b", Some("/"), Some("u"), "2025-11-14T10:00:00Z");
    h.push(&[a.clone(), b.clone(), a.clone()]).await;
    let mut worker = h.worker("w1");
    assert_eq!(h.drain(&mut worker).await, 2);
    h.push(&[b, a]).await;
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.stored, outcome.duplicates), (0, 2));

    for site in ["a", "b"] {
        assert_eq!(
            h.count(&format!(
                "SELECT count(*) FROM events WHERE site_id = '{site}'"
            ))
            .await,
            1,
            "site {site}"
        );
        assert_eq!(
            h.count(&format!(
                "SELECT sum(events)::bigint FROM rollup_hourly WHERE site_id = '{site}'"
            ))
            .await,
            1,
            "site {site}"
        );
    }
    // What a schema distributed by site_id needs: every unique key of every table that
    // holds site data includes site_id.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
             WHERE i.indisunique \
             AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'site_id') \
             AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                             AND a.attname = 'site_id' AND a.attnum = ANY(i.indkey))"
        )
        .await,
        0,
        "a unique key without site_id"
    );
}

#[tokio::test]
async fn batches_are_bounded_by_the_configured_size() {
    let mut h = Harness::new().await;
    h.settings.batch_max_items = 100;
    let msgs: Vec<_> = (0..250)
        .map(|i| message(&uuid(i), "s", Some("/"), None, "2025-11-14T10:00:00Z"))
        .collect();
    h.push(&msgs).await;
    let mut worker = h.worker("w1");
    let shutdown = CancellationToken::new();
    let sizes: Vec<usize> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                worker
                    .run_one_batch(&shutdown)
                    .await
                    .expect("batch")
                    .claimed,
            );
        }
        v
    };
    assert_eq!(sizes, vec![100, 100, 50]);
    assert_eq!(h.count("SELECT count(*) FROM events").await, 250);
}

#[tokio::test]
async fn unparseable_items_are_dead_lettered_with_the_reason_and_the_rest_stored() {
    let h = Harness::new().await;
    h.push(&[message(
        &uuid(1),
        "s",
        Some("/"),
        None,
        "2025-11-14T10:00:00Z",
    )])
    .await;
    h.push_raw(&["not json at all", r#"{"v":99}"#]).await;
    let mut worker = h.worker("w1");
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.stored, outcome.dead_lettered), (1, 2));

    let mut conn = h.redis.conn().await;
    let dead: Vec<String> = domain::redis_client::cmd("LRANGE")
        .arg(h.keys().events_queue().dead)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    assert_eq!(dead.len(), 2);
    for letter in &dead {
        let v: serde_json::Value = serde_json::from_str(letter).expect("dead letters are JSON");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("unparseable queue message"),
            "{v}"
        );
        assert!(v["item"].is_string());
    }
    assert_eq!(h.llen(&h.keys().events_queue().queue).await, 0);
}

#[tokio::test]
async fn rows_postgres_refuses_are_isolated_and_dead_lettered_alone() {
    let h = Harness::new().await;
    let mut msgs: Vec<_> = (0..40)
        .map(|i| message(&uuid(i), "s", Some("/"), None, "2025-11-14T10:00:00Z"))
        .collect();
    // Bypassing ingest validation: longer than the column allows.
    msgs[17]["site_id"] = json!("x".repeat(300));
    h.push(&msgs).await;
    let mut worker = h.worker("w1");
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.stored, outcome.dead_lettered), (39, 1));
    assert_eq!(h.count("SELECT count(*) FROM events").await, 39);
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        39
    );
    let mut conn = h.redis.conn().await;
    let letter: String = domain::redis_client::cmd("LINDEX")
        .arg(h.keys().events_queue().dead)
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("LINDEX");
    assert!(letter.contains("PostgreSQL refused the item"), "{letter}");
    assert!(
        letter.contains(&uuid(17)),
        "the dead letter carries the item"
    );
}

#[tokio::test]
async fn after_a_commit_the_site_cache_generation_moves_on() {
    let h = Harness::new().await;
    h.push(&[message(
        &uuid(1),
        "gen-site",
        Some("/"),
        None,
        "2025-11-14T10:00:00Z",
    )])
    .await;
    let mut worker = h.worker("w1");
    h.drain(&mut worker).await;
    let mut conn = h.redis.conn().await;
    let generation: u64 = domain::redis_client::cmd("GET")
        .arg(h.keys().site_generation("gen-site"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(generation, 1);
}

#[tokio::test]
async fn visitors_go_into_day_sketches_and_a_replayed_batch_adds_them_again() {
    let h = Harness::new().await;
    let msgs: Vec<_> = (0..30)
        .map(|i| {
            let day = if i < 20 { "14" } else { "15" };
            message(
                &uuid(i),
                "s",
                Some("/"),
                Some(&format!("u{}", i % 10)),
                &format!("2025-11-{day}T10:00:00Z"),
            )
        })
        .collect();
    h.push(&msgs).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 30);

    let keys = h.keys();
    let day14 = keys.site_day_visitors("s", "page_view", "2025-11-14");
    let day15 = keys.site_day_visitors("s", "page_view", "2025-11-15");
    let mut conn = h.redis.conn().await;
    let counting = conn.clone();
    let count = |key: String| {
        let mut conn = counting.clone();
        async move {
            let n: i64 = domain::redis_client::cmd("PFCOUNT")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("PFCOUNT");
            n
        }
    };
    assert_eq!(count(day14.clone()).await, 10);
    assert_eq!(count(day15.clone()).await, 10);
    let ttl: i64 = domain::redis_client::cmd("TTL")
        .arg(&day14)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "a sketch the worker creates expires: {ttl}");
    let live: i64 = domain::redis_client::cmd("PFCOUNT")
        .arg(domain::site::recent_visitor_keys(
            &keys,
            "s",
            chrono::Utc::now().timestamp_millis(),
        ))
        .query_async(&mut conn)
        .await
        .expect("PFCOUNT");
    assert_eq!(live, 10, "the same visitors count as live activity");

    // As after a crash between the commit and the acknowledgement: the sketch lacks the
    // batch, which comes back stored already.
    let _: () = domain::redis_client::cmd("DEL")
        .arg(&day14)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    h.push(&msgs[..20]).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 0, "nothing stored twice");
    assert_eq!(count(day14).await, 10, "the replay re-adds its visitors");
}

#[tokio::test]
async fn a_dead_letter_list_keeps_the_newest_ten_thousand() {
    let h = Harness::new().await;
    let dead_key = h.keys().events_queue().dead;
    let mut conn = h.redis.conn().await;
    let mut fill = domain::redis_client::pipe();
    for i in 0..domain::queue::MAX_DEAD_LETTERS {
        fill.cmd("RPUSH")
            .arg(&dead_key)
            .arg(format!("old {i}"))
            .ignore();
    }
    let () = fill.query_async(&mut conn).await.expect("filled");
    h.push_raw(&["new poison 1", "new poison 2", "new poison 3"])
        .await;
    let outcome = h
        .worker("w1")
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!(outcome.dead_lettered, 3);
    assert_eq!(
        h.llen(&dead_key).await,
        domain::queue::MAX_DEAD_LETTERS as u64,
        "bounded"
    );
    let newest: Vec<String> = domain::redis_client::cmd("LRANGE")
        .arg(&dead_key)
        .arg(0)
        .arg(2)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    assert!(
        newest.iter().all(|l| l.contains("new poison")),
        "{newest:?}"
    );
    let oldest_kept: String = domain::redis_client::cmd("LINDEX")
        .arg(&dead_key)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LINDEX");
    assert_eq!(
        oldest_kept,
        format!("old {}", domain::queue::MAX_DEAD_LETTERS - 4)
    );
}

/// A cell's sketch past 1 KB takes a batch's new visitors as a queued row (migration
/// 0017): readers count them at once, and a fold merges them into the cell.
#[tokio::test]
async fn visitors_of_a_large_sketch_are_queued_counted_and_folded_in() {
    use batch_worker::events::visits::sketch_fold::fold_once;
    let h = Harness::new().await;
    let visits = |visitors: std::ops::Range<u32>, first_id: u32| {
        visitors
            .enumerate()
            .map(|(n, v)| {
                message(
                    &uuid(first_id + n as u32),
                    "s",
                    Some("/"),
                    Some(&format!("u{v}")),
                    "2025-11-14T10:00:00Z",
                )
            })
            .collect::<Vec<_>>()
    };
    let totals = |table: &str| {
        format!(
            "SELECT coalesce(round(hll_cardinality(hll_union_agg(visitors))), 0)::bigint FROM {table} \
             WHERE site_id = 's' AND dimension = 0 AND span_hours = 24"
        )
    };
    let queued = "SELECT count(*) FROM visit_rollup_pending";
    h.push(&visits(0..200, 0)).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 200);
    fold_once(&h.db.pool()).await.expect("fold");
    assert_eq!(h.count(queued).await, 0);
    assert_eq!(h.count(&totals("visit_rollups")).await, 200);

    // 500 new visitors and 50 of the first ones again, 12 hours later (new visits).
    let mut more = visits(200..700, 1_000);
    more.extend(visits(0..50, 2_000));
    for m in &mut more {
        m["ts"] = serde_json::json!("2025-11-14T22:00:00Z");
    }
    h.push(&more).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 550);
    assert!(h.count(queued).await > 0, "the new visitors are queued");
    assert_eq!(
        h.count(&totals("visit_rollups")).await,
        200,
        "the large sketch is not rewritten per batch"
    );
    assert_eq!(h.count(&totals("visit_rollup_cells")).await, 700);

    assert!(fold_once(&h.db.pool()).await.expect("fold") > 0);
    assert_eq!(h.count(queued).await, 0);
    assert_eq!(h.count(&totals("visit_rollups")).await, 700);
    assert_eq!(h.count(&totals("visit_rollup_cells")).await, 700);
}
