//! Clients that send slowly must not hold a connection as long as they like.

use crate::helpers::{event, spawn_app_with};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection, sends the head of a POST promising `len` bytes, then one byte of the
/// body every `every` until the server answers or closes, for at most `bytes` bytes;
/// returns the answer's status line (empty when there was none).
async fn trickle_body(address: &str, len: usize, bytes: usize, every: Duration) -> String {
    let addr = address.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("head sent");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..bytes {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") { break; }
                }
            },
            () = tokio::time::sleep(every) => {
                if socket.write_all(b" ").await.is_err() { break; }
            }
        }
    }
    String::from_utf8_lossy(&answer)
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
