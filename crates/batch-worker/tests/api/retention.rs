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
