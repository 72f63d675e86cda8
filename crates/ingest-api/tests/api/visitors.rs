//! Browser events: the bodies the tracker sends, visitors without cookies, bots, and what
//! the connection adds (and what it must never leave behind).

use crate::helpers::{CHROME_UA, browser_event, spawn_app_behind_proxy};
use domain::testing::eventually;
use std::io::Write;
use std::time::Duration;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

#[tokio::test]
async fn text_plain_and_gzip_bodies_are_accepted() {
    let app = spawn_app_behind_proxy(|_| {}).await;
    let event = browser_event("s", "https://s.example/");
    let res = app.post_from(&event, "203.0.113.1", CHROME_UA).await;
    assert_eq!(res.status(), 202);
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("user-agent", CHROME_UA)
        .body(gzip(event.to_string().as_bytes()))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);
    let alias = app
        .client
        .post(format!("{}/api/event", app.address))
        .header("content-type", "text/plain")
        .body(crate::helpers::event("s", "/", "u").to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(alias.status(), 202);
    assert_eq!(app.queued_events().await.len(), 3);
    let other = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(event.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 415);
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_at_the_decompressed_limit() {
    let app = spawn_app_behind_proxy(|c| c.ingest.body_limit_bytes = 64 * 1024).await;
    // 10 MB of zeros is about 10 KB compressed: small on the wire, huge unpacked.
    let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let res = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 413);
    assert!(app.queued_events().await.is_empty());
    let corrupt = app
        .client
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(b"not gzip at all".to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(corrupt.status(), 400);
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let app = spawn_app_behind_proxy(|_| {}).await;
    let res = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/events", app.address),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("sent");
    assert!(res.status().is_success(), "{}", res.status());
    assert!(res.headers().contains_key("access-control-allow-origin"));
}

async fn visitor_of(app: &crate::helpers::TestApp, ip: &str, ua: &str) -> String {
    let before = app.queued_events().await.len();
    let res = app
        .post_from(&browser_event("s", "https://s.example/"), ip, ua)
        .await;
    assert_eq!(res.status(), 202);
    let queued = app.queued_events().await;
    assert_eq!(queued.len(), before + 1);
    queued[before]["user_id"]
        .as_str()
        .expect("a visitor id")
        .to_string()
}

#[tokio::test]
async fn a_visitor_is_one_id_per_address_browser_and_salt() {
    let app = spawn_app_behind_proxy(|_| {}).await;
    let firefox =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let a = visitor_of(&app, "203.0.113.7", CHROME_UA).await;
    assert_eq!(a.len(), 32);
    assert_eq!(visitor_of(&app, "203.0.113.7", CHROME_UA).await, a);
    assert_ne!(visitor_of(&app, "203.0.113.8", CHROME_UA).await, a);
    assert_ne!(visitor_of(&app, "203.0.113.7", firefox).await, a);
    // IPv6 visitors are told apart by their whole address.
    let v6 = visitor_of(&app, "2001:db8::1", CHROME_UA).await;
    assert_ne!(visitor_of(&app, "2001:db8::2", CHROME_UA).await, v6);

    // The salt rotates: the day's salt is replaced (as a new day's would be) and the same
    // browser becomes a stranger, with no state kept anywhere but the salt.
    let keys = app.redis.keys();
    let day = chrono::Utc::now().date_naive().to_string();
    let mut conn = app.redis.conn().await;
    let ttl: i64 = domain::redis_client::cmd("TTL")
        .arg(keys.visitor_salt(&day))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(
        ttl > 47 * 3600 && ttl <= 48 * 3600,
        "the salt expires after 48 h: {ttl}"
    );
    let _: () = domain::redis_client::cmd("SET")
        .arg(keys.visitor_salt(&day))
        .arg("the next day's salt")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let rotated = eventually(Duration::from_secs(10), "the new salt in use", || async {
        let id = visitor_of(&app, "203.0.113.7", CHROME_UA).await;
        (id != a).then_some(id)
    })
    .await;
    assert_eq!(visitor_of(&app, "203.0.113.7", CHROME_UA).await, rotated);
}

#[tokio::test]
async fn a_given_user_id_is_kept_and_server_events_are_trusted() {
    let app = spawn_app_behind_proxy(|_| {}).await;
    // A server posting for its users with curl's User-Agent is not a bot.
    let res = app
        .post_from(
            &crate::helpers::event("s", "/", "user-7"),
            "203.0.113.1",
            "curl/8.5.0",
        )
        .await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["accepted"], 1);
    let queued = app.queued_events().await;
    assert_eq!(queued[0]["user_id"], "user-7");
}

#[tokio::test]
async fn bots_headless_and_automated_browsers_are_dropped_and_counted_by_reason() {
    let datacenters = std::env::temp_dir().join(format!("dc-{}", domain::testing::random_id()));
    std::fs::write(&datacenters, "198.51.100.0/24\n").expect("write");
    let path = datacenters.to_string_lossy().to_string();
    let app = spawn_app_behind_proxy(move |c| c.ingest.datacenter_networks_file = Some(path)).await;
    let page = browser_event("s", "https://s.example/");
    let cases = [
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "203.0.113.1",
            "bot_user_agent",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "203.0.113.1",
            "headless",
        ),
        ("", "203.0.113.1", "no_user_agent"),
        (CHROME_UA, "198.51.100.20", "data_center"),
    ];
    for (ua, ip, reason) in cases {
        let res = app.post_from(&page, ip, ua).await;
        assert_eq!(res.status(), 202, "{reason}");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["accepted"], 0, "{reason}");
        assert_eq!(body["dropped"][reason], 1, "{reason}: {body}");
    }
    let mut automated = page.clone();
    automated["automated"] = serde_json::json!(true);
    let res = app.post_from(&automated, "203.0.113.1", CHROME_UA).await;
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["dropped"]["automation"], 1, "{body}");
    assert!(app.queued_events().await.is_empty());
    for reason in [
        "bot_user_agent",
        "headless",
        "no_user_agent",
        "data_center",
        "automation",
    ] {
        assert_eq!(
            app.metric(&format!(
                "ingest_api_events_dropped_total{{reason=\"{reason}\"}}"
            ))
            .await,
            1.0,
            "{reason}"
        );
    }
    // A person's browser still counts.
    assert_eq!(
        app.post_from(&page, "203.0.113.1", CHROME_UA)
            .await
            .status(),
        202
    );
    assert_eq!(app.queued_events().await.len(), 1);
    let _ = std::fs::remove_file(&datacenters);
}

#[tokio::test]
async fn the_connection_adds_browser_os_device_and_country_but_never_itself() {
    let db = std::env::temp_dir().join(format!("geo-{}.mmdb", domain::testing::random_id()));
    domain::testing::mmdb::write_country_mmdb(
        &db,
        &[
            ("203.0.113.0/24".parse().expect("net"), "DE"),
            ("2001:db8::/32".parse().expect("net"), "FR"),
        ],
    )
    .expect("write the test database");
    let path = db.to_string_lossy().to_string();
    let app = spawn_app_behind_proxy(move |c| c.ingest.geoip_db = Some(path)).await;
    let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
    let mut page = browser_event("s", "https://s.example/a?utm_source=x");
    page["screen_width"] = serde_json::Value::Null;
    app.post_from(&page, "203.0.113.99", iphone).await;
    app.post_from(&page, "2001:db8::5", CHROME_UA).await;
    app.post_from(&page, "192.0.2.1", CHROME_UA).await;
    let queued = app.queued_events().await;
    let fields = |e: &serde_json::Value| {
        (
            e["browser"].as_str().map(str::to_string),
            e["os"].as_str().map(str::to_string),
            e["device"].as_str().map(str::to_string),
            e["country"].as_str().map(str::to_string),
        )
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        fields(&queued[0]),
        (s("Safari"), s("iOS"), s("mobile"), s("DE"))
    );
    assert_eq!(
        fields(&queued[1]),
        (s("Chrome"), s("Linux"), s("desktop"), s("FR"))
    );
    assert_eq!(
        fields(&queued[2]).3,
        None,
        "an address the database does not know"
    );
    // Neither the address nor the User-Agent string is in any queued item.
    let raw = serde_json::to_string(&queued).expect("json");
    for secret in [
        "203.0.113.99",
        "2001:db8::5",
        "192.0.2.1",
        "iPhone OS 17_0",
        "X11; Linux x86_64",
    ] {
        assert!(
            !raw.contains(secret),
            "{secret} leaked into the queue: {raw}"
        );
    }
    let _ = std::fs::remove_file(&db);
}
