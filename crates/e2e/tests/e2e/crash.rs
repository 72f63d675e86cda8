use crate::helpers::{
    Service, Stack, assert_rollups_match_events, assert_visits_match_events, post_events,
};
use std::time::Duration;

const TOTAL: i64 = 100_000;

async fn wait_for_progress(stack: &Stack, at_least: i64) {
    domain::testing::eventually(
        Duration::from_secs(60),
        &format!("{at_least} events stored"),
        || async { (stack.count("SELECT count(*) FROM events").await >= at_least).then_some(()) },
    )
    .await;
}

async fn start_worker(stack: &Stack) -> Service {
    stack
        .start(
            "batch-worker",
            &[
                ("BATCH_MAX_ITEMS", "1000"),
                ("HEARTBEAT_TTL_MS", "1000"),
                ("REAP_INTERVAL_MS", "250"),
            ],
        )
        .await
}

#[tokio::test]
async fn kill_9_of_workers_mid_drain_loses_nothing_and_stores_nothing_twice() {
    let stack = Stack::new().await;
    let ingest = stack.start("ingest-api", &[]).await;
    assert_eq!(post_events(&ingest.url(), 100, 1000, 8).await as i64, TOTAL);
    assert_eq!(stack.items_in_redis().await as i64, TOTAL);

    // One worker at a time, killed four times mid-drain.
    for step in 1..=4 {
        let worker = start_worker(&stack).await;
        wait_for_progress(&stack, step * TOTAL / 10).await;
        worker.kill_9().await;
    }
    // Two at once; one of them is killed.
    let a = start_worker(&stack).await;
    let b = start_worker(&stack).await;
    wait_for_progress(&stack, 6 * TOTAL / 10).await;
    a.kill_9().await;
    let _c = start_worker(&stack).await;

    stack
        .wait_all_stored(
            TOTAL,
            Duration::from_secs(120),
            "everything stored and nothing left in Redis",
        )
        .await;
    drop(b);
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT event_id) FROM events")
            .await,
        TOTAL
    );
    assert_rollups_match_events(&stack).await;
    assert_visits_match_events(&stack).await;
    let dead = stack.redis.dead_events().await;
    assert_eq!(dead, 0, "nothing dead-lettered");
    // The kills hit workers holding batches: survivors had to reap them.
    assert!(
        stack.log_lines_containing("reaped the batch of a dead worker") >= 1,
        "no batch was ever reaped"
    );
}
