//! `POST /v1/notifications`: accepted in one Redis step (recorded and queued for the
//! fan-out), answered 202 with the notification's id. The batch-worker fans it out to the
//! channels it names; `GET /v1/notifications/{id}` (stats-api) says how far it got.

use super::{client_rate_limit, read_json_body};
use crate::error::ApiError;
use crate::startup::{AppState, WorkerRedis};
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, post, web};
use domain::notify::Notification;
use domain::notify::accept::{self, AcceptOutcome};
use domain::notify::request::parse_notification;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Sends a notification (admin token or an app key).
#[utoipa::path(
    tag = "notifications",
    security(("admin_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body gets the same notification (24 h)")),
    request_body(content = super::docs::NewNotification, content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded and queued: `{\"notification_id\"}` (`Idempotent-Replayed: true` on a retry)", body = super::docs::NotificationAccepted),
        (status = 400, description = "Invalid body; every problem listed (unknown channel, no or over 10,000 recipients, ...)", body = super::docs::CodedError),
        (status = 401, description = "Missing or wrong token", body = super::docs::CodedError),
        (status = 413, description = "Body over NOTIFY_BODY_LIMIT_BYTES"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 422, description = "The Idempotency-Key answered another request (`idempotency_key_reused`)", body = super::docs::CodedError),
        (status = 429, description = "Over the client's rate (Retry-After)"),
        (status = 503, description = "Redis unavailable (Retry-After); nothing queued"),
    )
)]
#[post("/v1/notifications")]
#[tracing::instrument(name = "post_notification", skip_all, fields(notification_id = tracing::field::Empty))]
pub async fn post_notification(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    redis: web::Data<WorkerRedis>,
) -> Result<HttpResponse, ApiError> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.settings.may_send_notifications(auth) {
        return Err(ApiError::Unauthorized);
    }
    client_rate_limit(&req, &state)?;
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().unwrap_or("");
            domain::poll::check_idempotency_key(key)
                .map_err(|m| ApiError::invalid_body(vec![m]))?;
            Some(key.to_string())
        }
    };
    let body = read_json_body(&req, payload, state.settings.notify_body_limit_bytes).await?;
    let new = parse_notification(&body).map_err(|details| {
        metrics::counter!("ingest_api_notifications_rejected_total").increment(1);
        ApiError::invalid_body(details)
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    let notification = Notification {
        notification_id: accept::notification_id(idempotency_key.as_deref()),
        event_type: new.event_type,
        title: new.title,
        body: new.body,
        html: new.html,
        data: new.data,
        channels: new.channels,
        priority: new.priority,
        recipients: new.recipients,
        topic: new.topic,
        created_at_ms: now,
        queued_at_ms: now,
        idempotency_key,
        traceparent: super::traceparent(&req),
    };
    let fingerprint = hex(&Sha256::digest(&body));
    let outcome = accept::accept(
        &mut redis.0.clone(),
        &state.keys,
        &notification,
        &fingerprint,
    )
    .await
    .map_err(|e| {
        ApiError::QueueUnavailable(anyhow::Error::new(e).context("accepting a notification"))
    })?;
    match outcome {
        AcceptOutcome::Accepted(id) => {
            tracing::Span::current().record("notification_id", tracing::field::display(id));
            metrics::counter!("ingest_api_notifications_accepted_total").increment(1);
            metrics::counter!("ingest_api_notification_recipients_total")
                .increment(notification.recipients.len() as u64);
            Ok(HttpResponse::Accepted().json(json!({ "notification_id": id })))
        }
        AcceptOutcome::Replay(id) => Ok(HttpResponse::Accepted()
            .insert_header(("Idempotent-Replayed", "true"))
            .json(json!({ "notification_id": id }))),
        AcceptOutcome::KeyReused => Err(ApiError::coded(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            vec!["this Idempotency-Key answered a different request; use a new key".into()],
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
