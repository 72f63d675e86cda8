//! HTTP handlers, one module per resource, and the request plumbing they share.

pub mod docs;
pub mod events;
pub mod exports;
pub mod feed;
pub mod goals;
pub mod notifications;
pub mod polls;
pub mod sites;
pub mod topics;
pub mod webhooks;

use crate::error::ApiError;
use crate::limits::retry_after_secs;
use crate::startup::AppState;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
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

/// Requires `Authorization: Bearer <ADMIN_TOKEN>` (poll and site administration).
///
/// # Errors
/// 401 when it is missing or wrong, or no admin token is configured.
pub fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if domain::auth::bearer_matches(header, &state.settings.admin_token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The per-client token bucket shared by every write endpoint.
///
/// # Errors
/// 429 with `Retry-After`.
pub fn client_rate_limit(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if let Some(ip) = domain::http::client_ip(req, &state.trusted_proxies)
        && let Err(wait) = state.ip_limiter.check(&domain::net::limit_key(ip))
    {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "rate_limited")
            .increment(1);
        return Err(ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        });
    }
    Ok(())
}

/// Which content types a route reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Json,
    /// JSON, or `text/plain` holding JSON: what `navigator.sendBeacon` and the tracker
    /// send, to spare the browser a CORS preflight.
    JsonOrText,
}

/// Reads a JSON request body: 415 unless the content type is JSON, 413 past `limit` bytes
/// (refused from `Content-Length` before reading when it is declared).
///
/// # Errors
/// As [`read_body`].
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    read_body(req, payload, limit, Accepts::Json).await
}

/// Reads a request body of the accepted types, decompressing `Content-Encoding: gzip`.
/// `limit` bounds the body as sent and, for gzip, as decompressed, which is checked while
/// decompressing: a small body that would expand past it is refused without holding more
/// than `limit` bytes of it.
///
/// # Errors
/// 415 for another content type or encoding, 413 past the limit; a broken connection or
/// corrupt gzip data is reported as malformed input.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    accepts: Accepts,
) -> Result<bytes::Bytes, ApiError> {
    if !content_type_accepted(req, accepts) {
        return Err(ApiError::UnsupportedMediaType(match accepts {
            Accepts::Json => "Content-Type must be application/json",
            Accepts::JsonOrText => "Content-Type must be application/json or text/plain",
        }));
    }
    let gzip = match req
        .headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(_) => {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Encoding must be gzip or identity",
            ));
        }
    };
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
        let chunk = chunk.map_err(|e| {
            if domain::body_deadline::is_timed_out(&e) {
                metrics::counter!("ingest_api_requests_shed_total", "reason" => "body_timeout")
                    .increment(1);
                ApiError::BodyTimeout
            } else {
                ApiError::MalformedJson(format!("reading the body: {e}"))
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    if gzip {
        return gunzip_bounded(&body, limit).map(bytes::Bytes::from);
    }
    Ok(body.freeze())
}

/// Decompresses `data`, refusing (413) as soon as the output would pass `limit`.
fn gunzip_bounded(data: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    let mut decoder = flate2::read::GzDecoder::new(data).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| ApiError::MalformedJson(format!("the gzip body is corrupt: {e}")))?;
    if out.len() > limit {
        metrics::counter!("ingest_api_requests_shed_total", "reason" => "gzip_over_limit")
            .increment(1);
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(out)
}

fn content_type_accepted(req: &HttpRequest, accepts: Accepts) -> bool {
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
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    json || (accepts == Accepts::JsonOrText && essence == "text/plain")
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
