//! HTTP handlers, one module per resource, and the request plumbing they share.

pub mod docs;
pub mod events;
pub mod polls;

use crate::error::ApiError;
use crate::limits::retry_after_secs;
use crate::startup::AppState;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, web};
use bytes::BytesMut;
use futures_util::StreamExt;

/// The checks every write runs before reading its body: the client's rate limit, then
/// load shedding on the queue's depth.
///
/// # Errors
/// 429 or 503, both with `Retry-After`.
pub fn guard_write(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    client_rate_limit(req, state)?;
    if state.queue_depth.get() >= state.settings.event_queue_high_water {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "queue_full").increment(1);
        return Err(ApiError::Overloaded {
            retry_after_s: state.settings.shed_retry_after_s,
        });
    }
    Ok(())
}

/// The per-client token bucket shared by every write endpoint.
///
/// # Errors
/// 429 with `Retry-After`.
pub fn client_rate_limit(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if let Some(ip) = domain::http::client_ip(req, &state.trusted_proxies)
        && let Err(wait) = state.ip_limiter.check(&ip)
    {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "rate_limited")
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        });
    }
    Ok(())
}

/// Reads a JSON request body: 415 unless the content type is JSON, 413 past `limit` bytes
/// (refused from `Content-Length` before reading when it is declared).
///
/// # Errors
/// As above; a broken connection is reported as malformed input.
pub async fn read_json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The trace context queued items carry: this request's span when spans are exported,
/// otherwise the incoming W3C `traceparent` (when well formed) passed through.
pub fn traceparent(req: &HttpRequest) -> Option<String> {
    domain::telemetry::current_traceparent().or_else(|| {
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() == 55 && v.bytes().filter(|b| *b == b'-').count() == 3)
            .map(String::from)
    })
}
