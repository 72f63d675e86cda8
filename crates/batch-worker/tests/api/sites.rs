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
    let shutdown = domain::shutdown::CancellationToken::new();
    while worker
        .run_one_batch(&shutdown)
        .await
        .expect("batch")
        .claimed
        > 0
    {}
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
    while worker
        .run_one_batch(&shutdown)
        .await
        .expect("batch")
        .claimed
        > 0
    {}
    assert_eq!(
        h.count(
            "SELECT count(*) FROM sites WHERE site_id = 'gone' AND deleted_at IS NULL AND public"
        )
        .await,
        1
    );
}
