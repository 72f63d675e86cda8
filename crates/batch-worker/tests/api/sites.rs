//! The site registry: changes stored in PostgreSQL in version order, and the Redis mirror
//! put back from PostgreSQL after Redis lost it.

use crate::helpers::Harness;
use chrono::Utc;
use domain::site_registry::{self, NewSite, PutOutcome, SitePatch};

async fn create(h: &Harness, id: &str, zone: &str) {
    let mut conn = h.redis.conn().await;
    let site = NewSite {
        site_id: id.into(),
        domains: vec![format!("{id}.example")],
        timezone: zone.into(),
        public: false,
    };
    let done = site_registry::create(&mut conn, &h.keys(), &site, Utc::now())
        .await
        .expect("create");
    assert!(matches!(done, PutOutcome::Done(_)), "{done:?}");
}

#[tokio::test]
async fn registry_changes_land_in_postgres_newest_last_even_out_of_order() {
    let h = Harness::new().await;
    let mut conn = h.redis.conn().await;
    site_registry::marker::set_restored(&mut conn, &h.keys())
        .await
        .expect("marker");
    create(&h, "a", "America/New_York").await;
    create(&h, "b", "UTC").await;
    let patch = SitePatch {
        timezone: Some("Europe/Berlin".into()),
        ..SitePatch::default()
    };
    site_registry::update(&mut conn, &h.keys(), "a", &patch, Utc::now())
        .await
        .expect("update");
    site_registry::delete(&mut conn, &h.keys(), "b", Utc::now())
        .await
        .expect("delete");
    // Reverse the queue: the newest change of each site is stored first, as two workers
    // racing could do.
    let queue = h.keys().sites_queue().queue;
    let items: Vec<String> = domain::redis_client::cmd("LRANGE")
        .arg(&queue)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    let _: () = domain::redis_client::cmd("DEL")
        .arg(&queue)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let mut worker = h.site_worker("s1");
    let shutdown = domain::shutdown::CancellationToken::new();
    for item in &items {
        // LRANGE lists newest first; pushing in that order stores the newest first.
        let _: () = domain::redis_client::cmd("LPUSH")
            .arg(&queue)
            .arg(item)
            .query_async(&mut conn)
            .await
            .expect("LPUSH");
        worker.run_one_batch(&shutdown).await.expect("batch");
    }
    assert_eq!(
        h.text("SELECT timezone FROM sites WHERE site_id = 'a'")
            .await,
        Some("Europe/Berlin".into())
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sites WHERE site_id = 'b' AND deleted_at IS NOT NULL")
            .await,
        1,
        "the delete stays, though the create arrived after it"
    );
    // A stored change bumps the site's stats cache generation (its days may have moved).
    let generation: Option<i64> = domain::redis_client::cmd("GET")
        .arg(h.keys().site_generation("a"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(generation.unwrap_or(0) >= 1);
}

#[tokio::test]
async fn a_registry_redis_lost_is_restored_from_postgres_above_every_stored_version() {
    let h = Harness::new().await;
    let keys = h.keys();
    let mut conn = h.redis.conn().await;
    site_registry::marker::set_restored(&mut conn, &keys)
        .await
        .expect("marker");
    create(&h, "kept", "Asia/Tokyo").await;
    create(&h, "gone", "UTC").await;
    // Goals and a funnel travel with the site.
    let signup = domain::goals::parse_new_goal(br#"{"event_name": "Signup"}"#).expect("goal");
    let pricing = domain::goals::parse_new_goal(br#"{"page_path": "/pricing/**"}"#).expect("goal");
    for goal in [&signup, &pricing] {
        let added = domain::goals::add_goal(&mut conn, &keys, "kept", goal, Utc::now())
            .await
            .expect("goal added");
        assert!(matches!(added, domain::goals::EditOutcome::Done(_)));
    }
    let funnel = domain::goals::parse_new_funnel(
        br#"{"name": "f", "steps": ["Visit /pricing/**", "Signup"]}"#,
    )
    .expect("funnel")
    .resolve(&[signup.clone(), pricing.clone()])
    .expect("resolves");
    domain::goals::add_funnel(&mut conn, &keys, "kept", &funnel, Utc::now())
        .await
        .expect("funnel added");
    site_registry::delete(&mut conn, &keys, "gone", Utc::now())
        .await
        .expect("delete");
    let mut worker = h.site_worker("s1");
    h.drain(&mut worker).await;
    let newest = h.count("SELECT max(version) FROM sites").await;

    // Redis loses everything under the test's prefix.
    let ids: Vec<String> = domain::redis_client::cmd("KEYS")
        .arg(format!("{}:*", keys.prefix()))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let _: () = domain::redis_client::cmd("DEL")
        .arg(&ids)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let blocked = site_registry::create(
        &mut conn,
        &keys,
        &NewSite {
            site_id: "gone".into(),
            domains: vec![],
            timezone: "UTC".into(),
            public: false,
        },
        Utc::now(),
    )
    .await
    .expect("create");
    assert_eq!(blocked, PutOutcome::Restoring);

    let mut redis = domain::redis::connection(&h.redis.config).expect("redis");
    let restored =
        batch_worker::sites::restore::restore_if_missing(&mut redis, &h.db.pool(), &keys, "w")
            .await
            .expect("restore");
    assert_eq!(restored, 1);
    let kept = site_registry::get(&mut conn, &keys, "kept")
        .await
        .expect("get")
        .expect("restored");
    assert_eq!(kept.timezone, "Asia/Tokyo");
    assert_eq!(kept.goals, vec![signup, pricing]);
    assert_eq!(kept.funnels, vec![funnel]);
    assert!(
        site_registry::get(&mut conn, &keys, "gone")
            .await
            .expect("get")
            .is_none()
    );
    // Re-creating the deleted site now takes a version above the tombstone's, so
    // PostgreSQL keeps it.
    let again = site_registry::create(
        &mut conn,
        &keys,
        &NewSite {
            site_id: "gone".into(),
            domains: vec![],
            timezone: "UTC".into(),
            public: true,
        },
        Utc::now(),
    )
    .await
    .expect("create");
    let PutOutcome::Done(site) = again else {
        panic!("{again:?}");
    };
    assert!(site.version > newest, "{} <= {newest}", site.version);
    h.drain(&mut worker).await;
    assert_eq!(
        h.count(
            "SELECT count(*) FROM sites WHERE site_id = 'gone' AND deleted_at IS NULL AND public"
        )
        .await,
        1
    );
}

/// Writers of a site's events hold its settings lock shared for their transactions; two
/// lanes' transactions overlap without a gap under a steady drain. A change of the site's
/// zone must still get its turn (under row share locks it waited until the writers
/// stopped: PostgreSQL lets a share lock past a waiting update).
#[tokio::test]
async fn a_zone_change_is_stored_while_overlapping_writers_keep_reading_the_settings() {
    use batch_worker::events::visits::settings::{add_missing, lock_settings};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let h = Harness::new().await;
    let mut conn = h.redis.conn().await;
    site_registry::marker::set_restored(&mut conn, &h.keys())
        .await
        .expect("marker");
    create(&h, "a", "UTC").await;
    let mut worker = h.site_worker("s1");
    let shutdown = domain::shutdown::CancellationToken::new();
    h.drain(&mut worker).await;
    let pool = h.db.pool();
    add_missing(&pool.get().await.expect("pg"), &["a"])
        .await
        .expect("settings row");

    let stored = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    // Writer transactions that read the zone from before the change.
    let old_zone_rounds = Arc::new(AtomicUsize::new(0));
    // Each writer holds the lock 40 ms (its batch's work) and takes it again at once, the
    // second 20 ms behind the first: the lock is never free while they run.
    let writers: Vec<_> = (0..2u64)
        .map(|i| {
            let (pool, stored, rounds, old_zone_rounds) = (
                pool.clone(),
                stored.clone(),
                rounds.clone(),
                old_zone_rounds.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20 * i)).await;
                let mut client = pool.get().await.expect("pg");
                let give_up = Instant::now() + Duration::from_secs(20);
                while !stored.load(Ordering::SeqCst) {
                    if Instant::now() > give_up {
                        return false;
                    }
                    let tx = client.transaction().await.expect("tx");
                    let settings = lock_settings(&tx, &["a"]).await.expect("settings");
                    let old_zone = settings.of("a").zone == Some(chrono_tz::UTC);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    tx.commit().await.expect("commit");
                    if old_zone {
                        old_zone_rounds.fetch_add(1, Ordering::SeqCst);
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
                true
            })
        })
        .collect();
    domain::testing::eventually(Duration::from_secs(10), "writers under way", || async {
        (rounds.load(Ordering::SeqCst) >= 4).then_some(())
    })
    .await;

    let patch = SitePatch {
        timezone: Some("Asia/Tokyo".into()),
        ..SitePatch::default()
    };
    site_registry::update(&mut conn, &h.keys(), "a", &patch, Utc::now())
        .await
        .expect("update");
    let change = tokio::spawn(async move {
        worker.run_one_batch(&shutdown).await.expect("batch");
    });
    // Once the change waits for its lock, only the writers' transactions already holding
    // it may finish before it, with the old zone: each writer's next one queues behind the
    // change and reads the new zone.
    let watcher = pool.get().await.expect("pg");
    let mut rounds_when_waiting = None;
    while !change.is_finished() {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            rounds_when_waiting = Some(old_zone_rounds.load(Ordering::SeqCst));
            break;
        }
    }
    change.await.expect("change stored");
    stored.store(true, Ordering::SeqCst);
    for writer in writers {
        assert!(writer.await.expect("writer"), "the writers gave up first");
    }
    if let Some(waiting) = rounds_when_waiting {
        let ahead = old_zone_rounds.load(Ordering::SeqCst) - waiting;
        assert!(
            ahead <= 2,
            "{ahead} writer transactions went ahead of the waiting change"
        );
    }
    assert_eq!(
        h.text("SELECT timezone FROM visit_rollup_zones WHERE site_id = 'a'")
            .await,
        Some("Asia/Tokyo".into())
    );
}

/// A change of a large site's zone or goals recounts for minutes, far past the service's
/// statement timeout (`DATABASE_STATEMENT_TIMEOUT_MS`): its statements run under
/// `SITE_REBUILD_TIMEOUT_MS` instead, or the change would be cancelled and retried forever.
#[tokio::test]
async fn a_site_change_whose_rebuild_outlasts_the_statement_timeout_is_stored() {
    let h = Harness::new().await;
    let mut conn = h.redis.conn().await;
    site_registry::marker::set_restored(&mut conn, &h.keys())
        .await
        .expect("marker");
    create(&h, "big", "UTC").await;
    let mut short = h.db.config.clone();
    short.database_statement_timeout_ms = 300;
    let mut worker = h.site_worker_with_pg("s1", &short);
    h.drain(&mut worker).await;
    // 300,000 visits: rebuilding their day cells in another zone takes seconds.
    let client = h.db.pool().get().await.expect("pg");
    client
        .batch_execute(
            "INSERT INTO visits (site_id, visitor, started_at, ended_at, first_event_id, events, \
                                 pageviews, entry_at, entry_event_id, entry_page, exit_at, \
                                 exit_event_id, exit_page, source, device, country) \
             SELECT 'big', 'v' || (i % 100000), t, t + interval '1 minute', gen_random_uuid(), 2, 2, \
                    t, gen_random_uuid(), '/p' || (i % 50), t + interval '1 minute', \
                    gen_random_uuid(), '/p' || (i % 30), 'Google', 'mobile', 'DE' \
             FROM (SELECT i, timestamptz '2025-06-01' + i * interval '1 minute' AS t \
                   FROM generate_series(1, 300000) AS i) g; \
             SELECT tally_rebuild_visit_rollups('big');",
        )
        .await
        .expect("visits");
    let started = std::time::Instant::now();
    client
        .batch_execute("SELECT tally_rebuild_visit_day_rollups('big')")
        .await
        .expect("rebuild");
    let rebuild = started.elapsed();
    assert!(
        rebuild > std::time::Duration::from_millis(600),
        "the rebuild took only {rebuild:?}: the test needs one well past the 300 ms timeout"
    );

    let patch = SitePatch {
        timezone: Some("Asia/Tokyo".into()),
        ..SitePatch::default()
    };
    site_registry::update(&mut conn, &h.keys(), "big", &patch, Utc::now())
        .await
        .expect("update");
    tokio::time::timeout(std::time::Duration::from_secs(120), h.drain(&mut worker))
        .await
        .expect("the change was never stored (cancelled by the statement timeout and retried)");
    assert_eq!(
        h.text("SELECT timezone FROM visit_rollup_zones WHERE site_id = 'big'")
            .await,
        Some("Asia/Tokyo".into())
    );
    // The day cells are Tokyo's days: June 1st there ends at 15:00 UTC, after the visits
    // of its first 899 minutes (1,439 in UTC's).
    assert_eq!(
        h.count(
            "SELECT sum(visits)::bigint FROM visit_rollups WHERE site_id = 'big' \
             AND dimension = 0 AND span_hours = 24 AND bucket = timestamptz '2025-06-01 00:00:00+00'"
        )
        .await,
        899
    );
}

/// Blocks of the site's visits (in block order) holding a visit that started before the
/// latest visit of the block before: 0 for a table in start order. A read of a few days
/// through the block-range index on `started_at` skips every range but those days' only
/// while this stays near 0.
const OUT_OF_ORDER_BLOCKS: &str = "
SELECT count(*) FROM (
    SELECT earliest < lag(latest) OVER (ORDER BY block) AS behind FROM (
        SELECT (ctid::text::point)[0] AS block, min(started_at) AS earliest,
               max(started_at) AS latest
        FROM visits WHERE site_id = 'big' GROUP BY 1
    ) b
) o WHERE behind";

/// A change of goals rewrites the visits whose conversions change, and leaves the table in
/// start order: the row versions that leave their page are appended in start order. In
/// key order (visitor, then start), as the recount of migration 0018 wrote them, nearly
/// every block appended held visits of the whole range.
#[tokio::test]
async fn a_goal_change_rewrites_the_visits_it_converts_in_start_order() {
    let h = Harness::new().await;
    let keys = h.keys();
    let mut conn = h.redis.conn().await;
    site_registry::marker::set_restored(&mut conn, &keys)
        .await
        .expect("marker");
    create(&h, "big", "UTC").await;
    let mut worker = h.site_worker("s1");
    h.drain(&mut worker).await;
    // 60,000 one-page visits, one a minute, stored in start order as a drain stores them;
    // 20,000 visitors, so key order is not start order. A third land on /p0.
    let client = h.db.pool().get().await.expect("pg");
    client
        .batch_execute(
            "INSERT INTO visits (site_id, visitor, started_at, ended_at, first_event_id, events, \
                                 pageviews, entry_at, entry_event_id, entry_page, exit_at, \
                                 exit_event_id, exit_page, source, device, country) \
             SELECT 'big', 'v' || (i % 20000), t, t, e, 1, 1, t, e, '/p' || (i % 3), t, e, \
                    '/p' || (i % 3), 'Google', 'mobile', 'DE' \
             FROM (SELECT i, timestamptz '2025-06-01' + i * interval '1 minute' AS t, \
                          gen_random_uuid() AS e \
                   FROM generate_series(1, 60000) AS i) g; \
             INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, received_at) \
             SELECT first_event_id, site_id, 'page_view', started_at, entry_page, visitor, started_at \
             FROM visits WHERE site_id = 'big'; \
             SELECT tally_rebuild_visit_rollups('big');",
        )
        .await
        .expect("visits");
    assert_eq!(h.count(OUT_OF_ORDER_BLOCKS).await, 0, "stored out of order");

    let goal = domain::goals::parse_new_goal(br#"{"page_path": "/p0"}"#).expect("goal");
    let added = domain::goals::add_goal(&mut conn, &keys, "big", &goal, Utc::now())
        .await
        .expect("goal added");
    assert!(matches!(added, domain::goals::EditOutcome::Done(_)));
    h.drain(&mut worker).await;

    // The recount happened: the visits on /p0 (counted from the events) converted once.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM visits WHERE site_id = 'big' \
             AND goals = jsonb_build_object((SELECT goals->0->>'goal_id' FROM visit_rollup_zones \
                                             WHERE site_id = 'big'), 1)"
        )
        .await,
        h.count("SELECT count(*) FROM events WHERE site_id = 'big' AND path = '/p0'")
            .await
    );
    assert_eq!(
        h.count("SELECT count(*) FROM visits WHERE site_id = 'big' AND goals IS NOT NULL")
            .await,
        20000
    );
    // In start order but where the rewritten versions begin (and where one fitted a page
    // of the visits left in place).
    let out_of_order = h.count(OUT_OF_ORDER_BLOCKS).await;
    assert!(
        out_of_order <= 2,
        "{out_of_order} blocks of visits out of start order after the recount"
    );
}
