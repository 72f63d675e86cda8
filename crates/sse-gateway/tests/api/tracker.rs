//! `GET /tally.js`: the tracker script, as committed, compressed for browsers that take it.

use crate::helpers::spawn_gateway;
use std::io::Read;

const COMMITTED: &str = include_str!("../../static/tally.js");

#[tokio::test]
async fn the_tracker_is_served_gzipped_under_2_kb_and_as_committed() {
    let gw = spawn_gateway(|_| {}).await;
    // A client that does not decompress by itself sees the wire bytes.
    let client = reqwest::Client::builder().build().expect("client");
    let res = client
        .get(format!("{}/tally.js", gw.address))
        .header("accept-encoding", "gzip, deflate, br")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header("content-type").starts_with("text/javascript"));
    assert_eq!(header("content-encoding"), "gzip");
    assert!(header("cache-control").contains("max-age"));
    let wire = res.bytes().await.expect("body");
    assert!(
        wire.len() < 2048,
        "tally.js is {} bytes gzipped",
        wire.len()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&wire[..])
        .read_to_string(&mut text)
        .expect("gzip");
    assert_eq!(text, COMMITTED);

    let plain = client
        .get(format!("{}/tally.js", gw.address))
        .send()
        .await
        .expect("sent");
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.text().await.expect("text"), COMMITTED);
}
