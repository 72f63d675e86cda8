use crate::helpers::{Harness, message, uuid};
use batch_worker::events::retention;
use chrono::{TimeDelta, Utc};
use domain::shutdown::CancellationToken;
use std::time::Duration;

/// Three events Tally received in 2025 and two received now, all drained.
async fn drained_old_and_new() -> Harness {
    let h = Harness::new().await;
    let now_ms = Utc::now().timestamp_millis();
    let mut msgs: Vec<_> = (0..3)
        .map(|i| {
            message(
                &uuid(i),
                "s",
                Some("/old"),
                Some("u1"),
                "2025-11-14T10:00:00Z",
            )
        })
        .collect();
    for i in 3..5 {
        let mut m = message(
            &uuid(i),
            "s",
            Some("/new"),
            Some("u2"),
            "2025-11-14T11:00:00Z",
        );
        m["received_at_ms"] = now_ms.into();
        msgs.push(m);
    }
    h.push(&msgs).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 5);
    h
}

async fn rollup_totals(h: &Harness) -> (i64, i64, i64) {
    (
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        h.count("SELECT sum(views)::bigint FROM rollup_hourly_paths")
            .await,
        h.count("SELECT count(*) FROM daily_visitors").await,
    )
}

#[tokio::test]
async fn expired_raw_events_are_deleted_in_chunks_and_the_rollups_keep_every_count() {
    let h = drained_old_and_new().await;
    let before = rollup_totals(&h).await;
    assert_eq!(before, (5, 5, 2));

    let cutoff = Utc::now() - TimeDelta::days(30);
    let deleted = retention::expire_events(&h.db.pool(), cutoff, 2, &CancellationToken::new())
        .await
        .expect("expire");
    assert_eq!(deleted, 3, "two chunks of two, the second partial");
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE path = '/new'")
            .await,
        2
    );
    assert_eq!(h.count("SELECT count(*) FROM events").await, 2);
    assert_eq!(rollup_totals(&h).await, before, "rollups untouched");

    let again = retention::expire_events(&h.db.pool(), cutoff, 2, &CancellationToken::new())
        .await
        .expect("expire");
    assert_eq!(again, 0);
}

#[tokio::test]
async fn the_retention_task_expires_events_older_than_the_configured_days() {
    let h = drained_old_and_new().await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(retention::run(
        h.db.pool(),
        TimeDelta::days(1),
        Duration::from_millis(50),
        stop.clone(),
    ));
    domain::testing::eventually(Duration::from_secs(30), "old events expire", || async {
        (h.count("SELECT count(*) FROM events").await == 2).then_some(())
    })
    .await;
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE path = '/new'")
            .await,
        2,
        "events received today are kept"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("joins");
}

async fn tables_named(h: &Harness, name: &str) -> i64 {
    h.count(&format!(
        "SELECT count(*) FROM pg_class WHERE relname = '{name}' AND relkind = 'r'"
    ))
    .await
}

#[tokio::test]
async fn a_month_wholly_expired_is_dropped_whole_and_a_month_with_a_late_event_is_kept() {
    let h = Harness::new().await;
    let now_ms = Utc::now().timestamp_millis();
    let mut msgs: Vec<_> = (0..3)
        .map(|i| {
            message(
                &uuid(i),
                "s",
                Some("/sep"),
                Some("u"),
                "2025-09-10T10:00:00Z",
            )
        })
        .collect();
    msgs.extend((3..5).map(|i| {
        message(
            &uuid(i),
            "s",
            Some("/oct"),
            Some("u"),
            "2025-10-10T10:00:00Z",
        )
    }));
    // Dated in October, received now: it keeps October's partition alive.
    let mut late = message(
        &uuid(5),
        "s",
        Some("/late"),
        Some("u"),
        "2025-10-20T10:00:00Z",
    );
    late["received_at_ms"] = now_ms.into();
    msgs.push(late);
    h.push(&msgs).await;
    assert_eq!(h.drain(&mut h.worker("w")).await, 6);
    assert_eq!(tables_named(&h, "events_202509").await, 1);
    assert_eq!(tables_named(&h, "events_202510").await, 1);
    assert_eq!(h.count("SELECT count(*) FROM events_202510").await, 3);
    let before = rollup_totals(&h).await;

    let cutoff = Utc::now() - TimeDelta::days(30);
    let expired = retention::expire_events(&h.db.pool(), cutoff, 1_000, &CancellationToken::new())
        .await
        .expect("expire");
    assert_eq!(expired, 5);
    assert_eq!(tables_named(&h, "events_202509").await, 0, "dropped whole");
    assert_eq!(
        tables_named(&h, "events_202510").await,
        1,
        "kept for its late event"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE path = '/late'")
            .await,
        1
    );
    assert_eq!(h.count("SELECT count(*) FROM events").await, 1);
    assert_eq!(rollup_totals(&h).await, before, "rollups untouched");
}

#[tokio::test]
async fn events_dated_outside_the_horizon_share_the_default_partition_and_stay_once_only() {
    let h = Harness::new().await;
    let msgs = vec![
        message(&uuid(1), "s", Some("/"), Some("u"), "1990-01-01T00:00:00Z"),
        message(&uuid(2), "s", Some("/"), Some("u"), "2999-06-01T00:00:00Z"),
        message(&uuid(3), "s", Some("/"), Some("u"), "2025-11-14T10:00:00Z"),
    ];
    h.push(&msgs).await;
    let mut worker = h.worker("w");
    assert_eq!(h.drain(&mut worker).await, 3);
    assert_eq!(h.count("SELECT count(*) FROM events_default").await, 2);
    assert_eq!(tables_named(&h, "events_199001").await, 0);
    assert_eq!(tables_named(&h, "events_299906").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM events_202511").await, 1);

    h.push(&msgs).await;
    let outcome = worker
        .run_one_batch(&CancellationToken::new())
        .await
        .expect("batch");
    assert_eq!((outcome.stored, outcome.duplicates), (0, 3));
    assert_eq!(h.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        3
    );
}

/// Making a month's partition locks `events` exclusively, which waits for every reader:
/// with a long query reading events (a goal recount, an export), the worker must not stop
/// the drain (and every reader queued behind its lock) until that query ends.
#[tokio::test]
async fn a_month_whose_partition_would_wait_for_a_long_reader_goes_to_the_default_partition() {
    let h = Harness::new().await;
    let pool = h.db.pool();
    let mut reader = pool.get().await.expect("pg");
    let long_read = reader.transaction().await.expect("tx");
    // Holds its lock on events until it ends, like a long statement.
    long_read
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("read");

    let msgs = vec![
        message(&uuid(1), "s", Some("/"), Some("u"), "2024-03-14T10:00:00Z"),
        message(&uuid(2), "s", Some("/"), Some("v"), "2024-03-15T10:00:00Z"),
    ];
    h.push(&msgs).await;
    let mut worker = h.worker("w");
    let drained = tokio::time::timeout(Duration::from_secs(60), h.drain(&mut worker))
        .await
        .expect("the drain waited for the long reader of events");
    assert_eq!(drained, 2);
    long_read.commit().await.expect("reader done");
    assert_eq!(tables_named(&h, "events_202403").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM events_default").await, 2);

    // The month stays there, once-only, when its partition could be made.
    let mut again = msgs.clone();
    again.push(message(
        &uuid(3),
        "s",
        Some("/"),
        Some("w"),
        "2024-03-16T10:00:00Z",
    ));
    h.push(&again).await;
    assert_eq!(h.drain(&mut h.worker("w2")).await, 1);
    assert_eq!(h.count("SELECT count(*) FROM events_default").await, 3);
    assert_eq!(h.count("SELECT count(*) FROM events").await, 3);
    assert_eq!(
        h.count("SELECT sum(events)::bigint FROM rollup_hourly")
            .await,
        3
    );
    // Next month's partition was made ahead once the lock was free (w2's first batch).
    use chrono::Datelike;
    let next = (Utc::now().date_naive().with_day(1).expect("day") + chrono::Months::new(1))
        .format("events_%Y%m")
        .to_string();
    assert_eq!(tables_named(&h, &next).await, 1);
}
