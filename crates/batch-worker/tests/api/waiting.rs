//! Events of a site whose settings are being changed wait (`events_waiting`) while the
//! rest of the drain goes on, and are stored once the change is done.

use crate::helpers::{Harness, message, uuid};
use batch_worker::events::EventWork;
use batch_worker::events::waiting::store_all_waiting;
use domain::queue::WorkerQueue;

/// Two sites in different settings lock buckets (checked below).
const CHANGING: &str = "changing.example";
const OTHER: &str = "other.example";

/// Begins a change of `site`'s settings in `tx` (of a client of `pool`) as
/// visits::settings::resettle_sites does while it recounts: its settings lock taken
/// exclusive, and its `visit_rollup_zones` row (stored by its earlier events) updated.
async fn hold_change(
    pool: &domain::deadpool_postgres::Pool,
    tx: &domain::deadpool_postgres::Transaction<'_>,
    site: &str,
) {
    pool.get()
        .await
        .expect("pg")
        .execute(
            "INSERT INTO visit_rollup_zones (site_id, timezone) VALUES ($1, 'UTC') \
             ON CONFLICT DO NOTHING",
            &[&site],
        )
        .await
        .expect("the site's stored settings");
    tx.execute(
        "SELECT tally_lock_site_settings($1::text[], true)",
        &[&vec![site]],
    )
    .await
    .expect("lock");
    tx.execute(
        "UPDATE visit_rollup_zones SET goals = '[]' WHERE site_id = $1",
        &[&site],
    )
    .await
    .expect("the site's new settings");
}

async fn generation(h: &Harness, site: &str) -> Option<i64> {
    let mut conn = h.redis.conn().await;
    domain::redis_client::cmd("GET")
        .arg(h.keys().site_generation(site))
        .query_async(&mut conn)
        .await
        .expect("GET")
}

#[tokio::test]
async fn a_sites_events_wait_for_its_settings_change_while_other_sites_are_stored() {
    let h = Harness::new().await;
    let pool = h.db.pool();
    let buckets = pool
        .get()
        .await
        .expect("pg")
        .query_one(
            "SELECT tally_site_settings_bucket($1), tally_site_settings_bucket($2)",
            &[&CHANGING, &OTHER],
        )
        .await
        .expect("buckets");
    assert_ne!(
        buckets.get::<_, i32>(0),
        buckets.get::<_, i32>(1),
        "the test needs sites in different lock buckets"
    );

    // A change of CHANGING's settings under way.
    let mut change = pool.get().await.expect("pg");
    let change_tx = change.transaction().await.expect("tx");
    hold_change(&pool, &change_tx, CHANGING).await;

    let ts = |m: u32| format!("2025-11-14T10:{m:02}:00Z");
    h.push(&[
        message(&uuid(1), CHANGING, Some("/a"), Some("u1"), &ts(0)),
        message(&uuid(2), OTHER, Some("/a"), Some("u1"), &ts(0)),
        message(&uuid(3), CHANGING, Some("/b"), Some("u1"), &ts(5)),
        message(&uuid(4), CHANGING, Some("/c"), Some("u2"), &ts(7)),
        message(&uuid(5), OTHER, Some("/b"), Some("u2"), &ts(9)),
    ])
    .await;
    let mut worker = h.worker("w1");
    let drained = tokio::time::timeout(std::time::Duration::from_secs(60), h.drain(&mut worker))
        .await
        .expect("the drain waited for the other site's settings change");
    assert_eq!(drained, 5, "all five taken in");
    assert_eq!(h.llen(&h.keys().events_queue().queue).await, 0);
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE site_id = 'other.example'")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT count(*) FROM visits WHERE site_id = 'other.example'")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE site_id = 'changing.example'")
            .await,
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM events_waiting WHERE site_id = 'changing.example'")
            .await,
        3
    );

    // While the change holds the site, its events keep waiting.
    let work = EventWork {
        pg: pool.clone(),
        keys: h.keys(),
        partitions: Default::default(),
        triggers: None,
        write_parts: batch_worker::events::store::WriteParts::new(1),
    };
    let dead = WorkerQueue::new(h.keys().events_queue(), "w1.waiting");
    let mut redis = h.redis.conn().await;
    store_all_waiting(&work, &mut redis, &dead)
        .await
        .expect("store waiting");
    assert_eq!(
        h.count("SELECT count(*) FROM events_waiting").await,
        3,
        "stored while the change still holds the site"
    );
    let before = generation(&h, CHANGING).await;

    change_tx.commit().await.expect("change done");
    store_all_waiting(&work, &mut redis, &dead)
        .await
        .expect("store waiting");
    assert_eq!(h.count("SELECT count(*) FROM events_waiting").await, 0);
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE site_id = 'changing.example'")
            .await,
        3
    );
    // u1's two events 5 minutes apart are one visit of two page views; u2's one.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visits WHERE site_id = 'changing.example' \
             AND ((visitor = 'u1' AND pageviews = 2) OR (visitor = 'u2' AND pageviews = 1))"
        )
        .await,
        2
    );
    let rollup = "SELECT coalesce(sum(events), 0)::bigint FROM rollup_hourly WHERE site_id = 'changing.example'";
    assert_eq!(h.count(rollup).await, 3);
    assert_ne!(
        generation(&h, CHANGING).await,
        before,
        "the site's cached answers outlived its waiting events"
    );

    // Stored again (a crash after storing them, before deleting them): nothing changes.
    let client = pool.get().await.expect("pg");
    client
        .execute(
            "INSERT INTO events_waiting (site_id, message) VALUES ($1, $2)",
            &[
                &CHANGING,
                &message(&uuid(3), CHANGING, Some("/b"), Some("u1"), &ts(5)).to_string(),
            ],
        )
        .await
        .expect("waiting again");
    store_all_waiting(&work, &mut redis, &dead)
        .await
        .expect("store waiting");
    assert_eq!(h.count("SELECT count(*) FROM events_waiting").await, 0);
    assert_eq!(h.count(rollup).await, 3);
    assert_eq!(
        h.count("SELECT sum(pageviews)::bigint FROM visits WHERE site_id = 'changing.example'")
            .await,
        3
    );

    // What PostgreSQL refuses (a NUL in a path) or what does not parse goes to the
    // events' dead letters; the rest is stored.
    let nul_path = message(&uuid(6), CHANGING, Some("/a\u{0}b"), Some("u3"), &ts(20)).to_string();
    for m in [
        nul_path.as_str(),
        "not an event",
        &message(&uuid(7), CHANGING, Some("/d"), Some("u3"), &ts(21)).to_string(),
    ] {
        client
            .execute(
                "INSERT INTO events_waiting (site_id, message) VALUES ($1, $2)",
                &[&CHANGING, &m],
            )
            .await
            .expect("waiting");
    }
    store_all_waiting(&work, &mut redis, &dead)
        .await
        .expect("store waiting");
    assert_eq!(h.count("SELECT count(*) FROM events_waiting").await, 0);
    assert_eq!(h.count(rollup).await, 4);
    assert_eq!(h.llen(&h.keys().events_queue().dead).await, 2);
}

/// Advisory locks belong to a database, and so does a change: one of another database on
/// the same server (a staging copy, another test) does not hold this database's events.
#[tokio::test]
async fn a_change_in_another_database_holds_no_events_here() {
    let h = Harness::new().await;
    let other = domain::testing::TestDb::new().await;
    let mut change = other.pool().get().await.expect("pg");
    let change_tx = change.transaction().await.expect("tx");
    hold_change(&other.pool(), &change_tx, CHANGING).await;
    let changing = |pool: domain::deadpool_postgres::Pool| async move {
        pool.get()
            .await
            .expect("pg")
            .query_one("SELECT tally_site_settings_changing($1)", &[&CHANGING])
            .await
            .expect("changing")
            .get::<_, bool>(0)
    };
    assert!(changing(other.pool()).await, "the change's own database");
    assert!(!changing(h.db.pool()).await, "another database");
    change_tx.commit().await.expect("done");
}
