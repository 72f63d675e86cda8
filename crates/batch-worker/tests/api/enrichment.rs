//! What the worker derives from browser events and stores beside them, and the rollups and
//! sketches that let stats answer in any time zone.

use crate::helpers::{Harness, message, uuid};
use serde_json::json;

fn tracker_message(id: &str, url: &str, referrer: Option<&str>, ts: &str) -> serde_json::Value {
    let mut m = message(id, "s", None, Some("visitor-1"), ts);
    m["url"] = json!(url);
    if let Some(r) = referrer {
        m["referrer"] = json!(r);
    }
    m["screen_width"] = json!(390);
    m["browser"] = json!("Safari");
    m["os"] = json!("iOS");
    m["device"] = json!("tablet");
    m["country"] = json!("DE");
    m
}

async fn column_of(h: &Harness, n: u32, column: &str) -> Option<String> {
    h.text(&format!(
        "SELECT {column}::text FROM events WHERE event_id = '{}'",
        uuid(n)
    ))
    .await
}

#[tokio::test]
async fn browser_events_are_stored_with_what_their_url_and_referrer_say() {
    let h = Harness::new().await;
    h.push(&[
        tracker_message(
            &uuid(1),
            "https://www.shop.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=launch&utm_term=t&utm_content=c",
            Some("https://news.ycombinator.com/item?id=1"),
            "2025-11-14T10:00:00Z",
        ),
        tracker_message(
            &uuid(2),
            "https://www.shop.example/about",
            Some("https://www.google.de/"),
            "2025-11-14T10:20:00Z",
        ),
        tracker_message(
            &uuid(3),
            "https://www.shop.example/cart",
            Some("https://shop.example/about"),
            "2025-11-14T11:00:00Z",
        ),
    ])
    .await;
    let mut worker = h.worker("w1");
    assert_eq!(h.drain(&mut worker).await, 3);
    let s = |v: &str| Some(v.to_string());
    assert_eq!(column_of(&h, 1, "path").await, s("/pricing"));
    assert_eq!(column_of(&h, 1, "hostname").await, s("www.shop.example"));
    for (column, value) in [
        ("utm_source", "newsletter"),
        ("utm_medium", "email"),
        ("utm_campaign", "launch"),
        ("utm_term", "t"),
        ("utm_content", "c"),
        ("referrer", "news.ycombinator.com/item"),
        // A tagged source wins over the referrer's.
        ("referrer_source", "newsletter"),
        ("browser", "Safari"),
        ("os", "iOS"),
        // The viewport (390 px) says mobile, whatever the User-Agent said.
        ("device", "mobile"),
        ("country", "DE"),
    ] {
        assert_eq!(column_of(&h, 1, column).await, s(value), "{column}");
    }
    assert_eq!(column_of(&h, 2, "referrer_source").await, s("Google"));
    // Navigation within the site is no referral.
    assert_eq!(column_of(&h, 3, "referrer").await, None);
    assert_eq!(column_of(&h, 3, "referrer_source").await, None);
    // Paths derived from the URL count in the hourly path rollup.
    assert_eq!(
        h.count("SELECT count(*) FROM rollup_hourly_paths WHERE bucket = '2025-11-14T10:00:00Z'")
            .await,
        2
    );
    assert_eq!(
        h.count("SELECT views FROM rollup_hourly_paths WHERE path = '/cart' AND bucket = '2025-11-14T11:00:00Z'")
            .await,
        1
    );
}

#[tokio::test]
async fn visitors_go_into_hour_sketches_beside_their_day_sketch() {
    let h = Harness::new().await;
    h.push(&[
        message(&uuid(1), "s", Some("/"), Some("a"), "2025-11-14T10:00:00Z"),
        message(&uuid(2), "s", Some("/"), Some("b"), "2025-11-14T10:30:00Z"),
        message(&uuid(3), "s", Some("/"), Some("a"), "2025-11-14T23:10:00Z"),
    ])
    .await;
    let mut worker = h.worker("w1");
    assert_eq!(h.drain(&mut worker).await, 3);
    let keys = h.keys();
    let day = chrono::NaiveDate::from_ymd_opt(2025, 11, 14).expect("day");
    let hours = domain::site::day_sketch::hours_of(day);
    let mut conn = h.redis.conn().await;
    let count = |days: Vec<chrono::NaiveDate>, hours: Vec<i64>| {
        let keys = keys.clone();
        let mut conn = conn.clone();
        async move {
            domain::site::day_sketch::count(&mut conn, &keys, "s", "page_view", &days, &hours)
                .await
                .expect("PFCOUNT")
        }
    };
    assert_eq!(count(vec![day], vec![]).await, 2);
    assert_eq!(count(vec![], vec![hours.start + 10]).await, 2);
    assert_eq!(count(vec![], vec![hours.start + 23]).await, 1);
    assert_eq!(count(vec![], vec![hours.start + 11]).await, 0);
    let ttl: i64 = domain::redis_client::cmd("TTL")
        .arg(keys.site_hour_visitors("s", "page_view", hours.start + 10))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "hour sketches expire: {ttl}");
}
