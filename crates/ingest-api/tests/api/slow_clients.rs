//! Clients that send slowly must not hold a connection as long as they like.

use crate::helpers::{event, spawn_app_with};
use std::time::Duration;

/// A POST promising `len` bytes, trickled a byte every `every`, for at most `bytes` bytes;
/// the answer's status line (empty when there was none).
async fn trickle_body(address: &str, len: usize, bytes: usize, every: Duration) -> String {
    let addr = address.trim_start_matches("http://");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    domain::testing::trickle_body(address, &head, bytes, every)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_gets_408_at_the_read_deadline() {
    let app = spawn_app_with(|c| c.http.body_read_timeout_ms = 1_000).await;
    // 40 slow clients at once, each promising 10,000 bytes at one byte per 100 ms, giving up
    // after 30 s (300 bytes) without an answer.
    let slow: Vec<_> = (0..40)
        .map(|_| {
            let address = app.address.clone();
            tokio::spawn(async move {
                trickle_body(&address, 10_000, 300, Duration::from_millis(100)).await
            })
        })
        .collect();
    // Meanwhile a normal request is answered.
    let res = app.post_json("/v1/events", &event("s", "/", "u")).await;
    assert_eq!(res.status(), 202, "a normal client is served beside them");
    for client in slow {
        let status_line = client.await.expect("client task");
        assert!(
            status_line.starts_with("HTTP/1.1 408"),
            "a trickled body ends in 408, got {status_line:?}"
        );
    }
    assert_eq!(
        app.queued_events().await.len(),
        1,
        "only the normal client's event"
    );
}
