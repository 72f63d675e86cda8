//! `GET /v1/notifications/{id}`: where a notification stands on each channel (the
//! job-status pattern: state, attempts, last error, next attempt, progress of a large
//! fan-out), and `GET /v1/notifications/{id}/deliveries`: each delivery with its attempts.
//!
//! PostgreSQL holds what the worker has stored (within a batch of what happened); a
//! notification accepted but not yet fanned out is read from its Redis record.

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use domain::notify::{ChannelKind, DeliveryState};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no notification {raw:?}")))
}

/// Counts of a channel's deliveries by state.
#[derive(Default)]
struct Tally {
    by_state: BTreeMap<DeliveryState, i64>,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl Tally {
    fn total(&self) -> i64 {
        self.by_state.values().sum()
    }

    fn completed(&self) -> i64 {
        self.by_state
            .iter()
            .filter(|(s, _)| s.is_final())
            .map(|(_, n)| n)
            .sum()
    }

    fn state(&self) -> DeliveryState {
        let n = |s| self.by_state.get(&s).copied().unwrap_or(0);
        if self.completed() == self.total() {
            if n(DeliveryState::Dead) > 0 {
                DeliveryState::Dead
            } else if n(DeliveryState::Failed) > 0 && n(DeliveryState::Delivered) == 0 {
                DeliveryState::Failed
            } else {
                DeliveryState::Delivered
            }
        } else if n(DeliveryState::Queued) == self.total() {
            DeliveryState::Queued
        } else {
            DeliveryState::Delivering
        }
    }
}

/// The overall state of several channels' states.
fn overall(states: &[DeliveryState]) -> DeliveryState {
    if states.iter().all(|s| s.is_final()) {
        if states.contains(&DeliveryState::Dead) {
            DeliveryState::Dead
        } else if states.iter().all(|s| *s == DeliveryState::Failed) && !states.is_empty() {
            DeliveryState::Failed
        } else {
            DeliveryState::Delivered
        }
    } else if states.iter().all(|s| *s == DeliveryState::Queued) {
        DeliveryState::Queued
    } else {
        DeliveryState::Delivering
    }
}

/// A notification's state on every channel.
#[utoipa::path(
    tag = "notifications",
    security(("stats_token" = [])),
    params(("notification_id" = String, Path, description = "The notification")),
    responses(
        (status = 200, description = "`{notification_id, event_type, title, created_at, topic?, state, progress: {completed, total}, channels: {in_app|webhook|email|sms: {state, completed, total, attempts, last_error, next_attempt_at, counts, skipped}}}`; `state` is queued, delivering, delivered, failed or dead", body = super::docs::NotificationStatus),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 404, description = "No such notification"),
        (status = 503, description = "PostgreSQL or Redis unavailable (Retry-After)"),
    )
)]
#[get("/notifications/{notification_id}")]
#[tracing::instrument(name = "get_notification", skip_all, fields(notification_id = %path))]
pub async fn get_notification(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let row = client
        .query_opt(
            "SELECT event_type, title, created_at, topic, recipients, channels, skipped
             FROM notifications n WHERE notification_id = $1",
            &[&id],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let Some(row) = row else {
        return queued_only(&state, &id).await;
    };
    let channels: Vec<String> = row.get(5);
    let skipped: Value = row.get(6);
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for r in client
        .query(
            "SELECT channel, state, count(*), coalesce(sum(attempts), 0)::bigint,
                    min(next_attempt_at) FILTER (WHERE state = 'delivering')
             FROM deliveries WHERE notification_id = $1 GROUP BY channel, state",
            &[&id],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?
    {
        let t = tallies.entry(r.get(0)).or_default();
        if let Some(s) = DeliveryState::parse(r.get(1)) {
            *t.by_state.entry(s).or_default() += r.get::<_, i64>(2);
        }
        t.attempts += r.get::<_, i64>(3);
        let next: Option<DateTime<Utc>> = r.get(4);
        t.next_attempt_at = match (t.next_attempt_at, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    for r in client
        .query(
            "SELECT DISTINCT ON (channel) channel, last_error FROM deliveries
             WHERE notification_id = $1 AND last_error IS NOT NULL
             ORDER BY channel, updated_at DESC",
            &[&id],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?
    {
        tallies.entry(r.get(0)).or_default().last_error = r.get(1);
    }
    let recipients = i64::from(row.get::<_, i32>(4));
    // The row is written in the transaction of every feed item of the notification.
    let in_feeds = recipients;
    let mut out = serde_json::Map::new();
    let mut states = Vec::new();
    let (mut completed, mut total) = (0i64, 0i64);
    for name in &channels {
        let entry = if name == ChannelKind::InApp.as_str() {
            let s = if in_feeds >= recipients {
                DeliveryState::Delivered
            } else if in_feeds == 0 {
                DeliveryState::Queued
            } else {
                DeliveryState::Delivering
            };
            states.push(s);
            completed += in_feeds.min(recipients);
            total += recipients;
            json!({"state": s, "completed": in_feeds.min(recipients), "total": recipients})
        } else {
            let t = tallies.remove(name.as_str()).unwrap_or_default();
            let skipped_here = skipped.get(name).and_then(Value::as_i64).unwrap_or(0);
            let s = if t.total() == 0 && skipped_here > 0 {
                DeliveryState::Failed
            } else {
                t.state()
            };
            states.push(s);
            completed += t.completed();
            total += t.total();
            let counts: BTreeMap<&str, i64> =
                t.by_state.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            json!({
                "state": s,
                "completed": t.completed(),
                "total": t.total(),
                "attempts": t.attempts,
                "last_error": t.last_error,
                "next_attempt_at": t.next_attempt_at,
                "counts": counts,
                "skipped": skipped_here,
            })
        };
        out.insert(name.clone(), entry);
    }
    let created: DateTime<Utc> = row.get(2);
    Ok(HttpResponse::Ok().json(json!({
        "notification_id": id,
        "event_type": row.get::<_, String>(0),
        "title": row.get::<_, String>(1),
        "created_at": created,
        "topic": row.get::<_, Option<String>>(3),
        "state": overall(&states),
        "progress": {"completed": completed, "total": total},
        "channels": out,
    })))
}

/// A notification accepted and not yet fanned out: its Redis record.
async fn queued_only(state: &AppState, id: &Uuid) -> Result<HttpResponse, ApiError> {
    let record = domain::notify::accept::record(&mut state.redis.clone(), &state.keys, id)
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?
        .ok_or_else(|| ApiError::NotFound(format!("no notification {id}")))?;
    let channels: serde_json::Map<String, Value> = record
        .channels
        .iter()
        .map(|c| {
            (
                c.as_str().to_string(),
                json!({"state": DeliveryState::Queued, "completed": 0, "total": Value::Null}),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "notification_id": id,
        "event_type": record.event_type,
        "title": record.title,
        "created_at": record.created_at(),
        "topic": record.topic,
        "state": DeliveryState::Queued,
        "progress": {"completed": 0, "total": record.recipients},
        "channels": channels,
    })))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only this channel (`webhook`, `email`, `sms`).
    channel: Option<String>,
    /// Only deliveries in this state.
    state: Option<String>,
    /// Deliveries after this delivery id (the previous page's `next_cursor`).
    cursor: Option<String>,
    /// 1 to 500 (default 100).
    limit: Option<i64>,
}

/// A notification's deliveries, each with every attempt.
#[utoipa::path(
    tag = "notifications",
    security(("stats_token" = [])),
    params(("notification_id" = String, Path, description = "The notification"), DeliveriesQuery),
    responses(
        (status = 200, description = "`{deliveries: [{delivery_id, channel, target, user_id, state, attempts, last_status, last_error, next_attempt_at, delivered_at, attempt_log: [{attempt, started_at, duration_ms, status_code, outcome, error}]}], next_cursor}`", body = super::docs::DeliveryList),
        (status = 400, description = "Unknown channel or state, or a limit out of range"),
        (status = 401, description = "STATS_TOKEN is set and the request lacks it"),
        (status = 404, description = "No such notification"),
        (status = 503, description = "PostgreSQL unavailable (Retry-After)"),
    )
)]
#[get("/notifications/{notification_id}/deliveries")]
#[tracing::instrument(name = "get_deliveries", skip_all, fields(notification_id = %path))]
pub async fn get_deliveries(
    path: web::Path<String>,
    q: web::Query<DeliveriesQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    if let Some(c) = &q.channel
        && !ChannelKind::DELIVERED.iter().any(|k| k.as_str() == c)
    {
        return Err(ApiError::BadRequest(format!(
            "channel must be webhook, email or sms, not {c:?}"
        )));
    }
    if let Some(s) = &q.state
        && DeliveryState::parse(s).is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "state must be queued, delivering, delivered, failed or dead, not {s:?}"
        )));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 500".into()));
    }
    let client = state
        .pg
        .get()
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    let rows = client
        .query(
            "SELECT d.delivery_id, d.channel, d.target, d.user_id, d.state, d.attempts,
                    d.last_status, d.last_error, d.next_attempt_at, d.delivered_at,
                    coalesce((SELECT json_agg(json_build_object('attempt', a.attempt,
                        'started_at', a.started_at, 'duration_ms', a.duration_ms,
                        'status_code', a.status_code, 'outcome', a.outcome, 'error', a.error)
                        ORDER BY a.attempt)
                      FROM delivery_attempts a WHERE a.delivery_id = d.delivery_id), '[]'::json)
             FROM deliveries d
             WHERE d.notification_id = $1 AND ($2::text IS NULL OR d.channel = $2)
               AND ($3::text IS NULL OR d.state = $3) AND ($4::text IS NULL OR d.delivery_id > $4)
             ORDER BY d.delivery_id LIMIT $5",
            &[&id, &q.channel, &q.state, &q.cursor, &limit],
        )
        .await
        .map_err(|e| ApiError::from_db(e.into()))?;
    if rows.is_empty() && q.cursor.is_none() {
        let exists = client
            .query_opt(
                "SELECT 1 FROM notifications WHERE notification_id = $1",
                &[&id],
            )
            .await
            .map_err(|e| ApiError::from_db(e.into()))?;
        if exists.is_none() {
            return Err(ApiError::NotFound(format!("no notification {id}")));
        }
    }
    let deliveries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "delivery_id": r.get::<_, String>(0),
                "channel": r.get::<_, String>(1),
                "target": r.get::<_, String>(2),
                "user_id": r.get::<_, Option<String>>(3),
                "state": r.get::<_, String>(4),
                "attempts": r.get::<_, i32>(5),
                "last_status": r.get::<_, Option<i32>>(6),
                "last_error": r.get::<_, Option<String>>(7),
                "next_attempt_at": r.get::<_, Option<DateTime<Utc>>>(8),
                "delivered_at": r.get::<_, Option<DateTime<Utc>>>(9),
                "attempt_log": r.get::<_, Value>(10),
            })
        })
        .collect();
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.get::<_, String>(0)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"deliveries": deliveries, "next_cursor": next})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_states_follow_their_deliveries() {
        let mut t = Tally::default();
        assert_eq!(t.state(), DeliveryState::Delivered, "nothing to deliver");
        t.by_state.insert(DeliveryState::Queued, 2);
        assert_eq!(t.state(), DeliveryState::Queued);
        t.by_state.insert(DeliveryState::Delivered, 1);
        assert_eq!(t.state(), DeliveryState::Delivering);
        t.by_state.remove(&DeliveryState::Queued);
        t.by_state.insert(DeliveryState::Dead, 1);
        assert_eq!(t.state(), DeliveryState::Dead);
        assert_eq!((t.completed(), t.total()), (2, 2));
        assert_eq!(
            overall(&[DeliveryState::Delivered, DeliveryState::Queued]),
            DeliveryState::Delivering
        );
        assert_eq!(
            overall(&[DeliveryState::Delivered, DeliveryState::Delivered]),
            DeliveryState::Delivered
        );
    }
}
