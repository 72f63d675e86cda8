use crate::helpers::Stack;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// `(service.name, trace id hex, span name)` of every span received.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A minimal OTLP/HTTP (protobuf) receiver: decodes every POST /v1/traces it gets.
async fn otlp_receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) {
                        let mut spans = sink.lock().expect("lock");
                        for rs in request.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|a| a.key == "service.name")
                                .and_then(|a| a.value.as_ref())
                                .map(|v| format!("{:?}", v.value))
                                .unwrap_or_default();
                            for span in rs.scope_spans.iter().flat_map(|s| s.spans.iter()) {
                                let trace: String =
                                    span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                spans.push((service.clone(), trace, span.name.clone()));
                            }
                        }
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

#[tokio::test]
async fn one_event_makes_one_trace_across_ingest_queue_worker_and_postgres() {
    let (port, received) = otlp_receiver().await;
    let stack = Stack::new().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let ingest = stack.start("ingest-api", &otel).await;
    let _worker = stack.start("batch-worker", &otel).await;

    // The caller's own trace: ingest-api must continue it, and the worker after it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = reqwest::Client::new()
        .post(format!("{}/v1/events", ingest.url()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"site_id": "traced", "event_type": "page_view", "timestamp": "2025-11-14T10:00:00Z"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 202);

    let spans = domain::testing::eventually(
        Duration::from_secs(30),
        "spans of both services in the caller's trace, the worker's batch and write",
        || {
            let received = received.clone();
            async move {
                let spans = received.lock().expect("lock").clone();
                let in_trace = |service: &str, span: Option<&str>| {
                    spans.iter().any(|(s, t, n)| {
                        s.contains(service) && t == trace_id && span.is_none_or(|span| n == span)
                    })
                };
                // The batch's span ends (and is exported) after its PostgreSQL child, once
                // the batch is acknowledged: wait for both rather than the first.
                (in_trace("ingest-api", None)
                    && in_trace("batch-worker", Some("store_batch"))
                    && in_trace("batch-worker", Some("postgres.write")))
                .then_some(spans)
            }
        },
    )
    .await;
    let worker_spans: Vec<&str> = spans
        .iter()
        .filter(|(s, t, _)| s.contains("batch-worker") && t == trace_id)
        .map(|(_, _, n)| n.as_str())
        .collect();
    assert!(worker_spans.contains(&"store_batch"), "{worker_spans:?}");
    assert!(worker_spans.contains(&"postgres.write"), "{worker_spans:?}");
}
