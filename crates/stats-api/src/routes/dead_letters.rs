//! Dead letters of every queue, in one API (admin token): `GET /v1/dead-letters` lists
//! them by queue and reason, `POST /v1/dead-letters/retry` puts what they carried back on
//! their queues (safe: every consumer is idempotent; a retried delivery starts a new
//! series of attempts, with the same delivery id), `DELETE /v1/dead-letters` purges them
//! by age.

use super::require_admin;
use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use domain::dead_letters::{self, Listed};
use domain::keys::{Keys, QueueKeys, VOTE_SHARDS};
use domain::notify::ChannelKind;
use domain::notify::delivery::Delivery;
use serde_json::{Value, json};

/// The queue families the API knows, by the name it takes in `queue=`.
pub const QUEUES: [&str; 9] = [
    "events",
    "votes",
    "sites",
    "notifications",
    "notify_admin",
    "webhook",
    "email",
    "sms",
    "delivery_attempts",
];

/// The queues (shards) of a family.
fn queues_of(keys: &Keys, event_shards: u16, family: &str) -> Vec<QueueKeys> {
    match family {
        "events" => keys.events_queues(event_shards),
        "votes" => (0..VOTE_SHARDS).map(|s| keys.vote_queue(s)).collect(),
        "sites" => vec![keys.sites_queue()],
        "notifications" => keys.notify_queues(),
        "notify_admin" => {
            let mut q = vec![keys.webhooks_queue(), keys.topics_queue()];
            q.extend(keys.feed_queues());
            q
        }
        "webhook" | "email" | "sms" => vec![keys.delivery(family).queue],
        "delivery_attempts" => ChannelKind::DELIVERED
            .iter()
            .map(|c| keys.delivery(c.as_str()).log)
            .collect(),
        _ => Vec::new(),
    }
}

fn families(requested: Option<&str>) -> Result<Vec<&'static str>, ApiError> {
    match requested {
        None | Some("") => Ok(QUEUES.to_vec()),
        Some(q) => QUEUES
            .iter()
            .find(|known| **known == q)
            .map(|k| vec![*k])
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "queue must be one of {}, not {q:?}",
                    QUEUES.join(", ")
                ))
            }),
    }
}

/// Every letter of the families, with its queue, newest first within a queue.
async fn gather(
    state: &AppState,
    families: &[&'static str],
    reason: Option<&str>,
) -> Result<Vec<(&'static str, QueueKeys, Listed)>, ApiError> {
    let mut redis = state.redis.clone();
    let mut out = Vec::new();
    for family in families {
        for q in queues_of(&state.keys, state.event_queue_shards, family) {
            let letters = dead_letters::list(&mut redis, &q)
                .await
                .map_err(|e| ApiError::Unavailable(e.into()))?;
            for l in letters {
                let matches = reason.is_none_or(|r| {
                    l.letter
                        .as_ref()
                        .is_some_and(|letter| letter.reason.contains(r))
                });
                if matches {
                    out.push((*family, q.clone(), l));
                }
            }
        }
    }
    Ok(out)
}

fn letter_json(family: &str, l: &Listed) -> Value {
    match &l.letter {
        Some(letter) => json!({
            "id": l.id,
            "queue": family,
            "reason": letter.reason,
            "at": domain::notify::model::rfc3339_ms(letter.at_ms),
            "worker_id": letter.worker_id,
            "item": serde_json::from_str::<Value>(&letter.item).unwrap_or_else(|_| Value::String(letter.item.clone())),
        }),
        None => json!({"id": l.id, "queue": family, "raw": l.raw}),
    }
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// One queue family (events, votes, sites, notifications, notify_admin, webhook,
    /// email, sms, delivery_attempts); absent: all.
    queue: Option<String>,
    /// Only letters whose reason contains this text (`retries_exhausted`, `HTTP 500`).
    reason: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Dead letters by queue and reason.
#[utoipa::path(
    tag = "dead letters",
    security(("admin_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "`{total, dead_letters: [{id, queue, reason, at, worker_id, item}]}`", body = super::docs::DeadLetterList),
        (status = 400, description = "Unknown queue, or a limit out of range"),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 503, description = "Redis unavailable (Retry-After)"),
    )
)]
#[get("/dead-letters")]
#[tracing::instrument(name = "list_dead_letters", skip_all)]
pub async fn list_dead_letters(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
    }
    let all = gather(&state, &families(q.queue.as_deref())?, q.reason.as_deref()).await?;
    let page: Vec<Value> = all
        .iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .map(|(family, _, l)| letter_json(family, l))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"total": all.len(), "dead_letters": page})))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    queue: Option<String>,
    ids: Option<Vec<String>>,
    reason: Option<String>,
}

/// What a letter's item becomes when it is retried: a delivery starts a new series of
/// attempts (its attempt numbers keep counting, so PostgreSQL keeps every attempt).
fn retried_item(family: &str, item: &str) -> String {
    if matches!(family, "webhook" | "email" | "sms")
        && let Ok(mut d) = serde_json::from_str::<Delivery>(item)
    {
        d.series_start = d.attempt;
        d.queued_at_ms = chrono::Utc::now().timestamp_millis();
        return d.to_json();
    }
    item.to_string()
}

/// Puts dead letters back on their queues: those named by `ids`, or every letter of
/// `queue` (whose reason contains `reason`, when given).
#[utoipa::path(
    tag = "dead letters",
    security(("admin_token" = [])),
    request_body(content = super::docs::RetryBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`{retried}`: letters put back on their queues", body = super::docs::Retried),
        (status = 400, description = "Neither ids nor queue, or an unknown queue"),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 413, description = "Body over 256 KiB"),
        (status = 415, description = "Content-Type is not JSON"),
        (status = 503, description = "Redis unavailable (Retry-After)"),
    )
)]
#[post("/dead-letters/retry")]
#[tracing::instrument(name = "retry_dead_letters", skip_all)]
pub async fn retry_dead_letters(
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let body: RetryBody = serde_json::from_value(body.into_inner())
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    if body.ids.is_none() && body.queue.is_none() {
        return Err(ApiError::BadRequest(
            "name the letters: ids (from the list), or a queue (every letter of it, filtered by reason)".into(),
        ));
    }
    let all = gather(
        &state,
        &families(body.queue.as_deref())?,
        body.reason.as_deref(),
    )
    .await?;
    let chosen = all
        .into_iter()
        .filter(|(_, _, l)| body.ids.as_ref().is_none_or(|ids| ids.contains(&l.id)));
    let retried = take(&state, chosen, true).await?;
    metrics::counter!("stats_api_dead_letters_retried_total").increment(retried);
    Ok(HttpResponse::Ok().json(json!({"retried": retried})))
}

/// A letter's text as stored, and the item to queue again (none: purged).
type Taken = (String, Option<String>);

/// Takes letters out of their lists, queueing their items again when `retry`.
async fn take(
    state: &AppState,
    letters: impl Iterator<Item = (&'static str, QueueKeys, Listed)>,
    retry: bool,
) -> Result<u64, ApiError> {
    let mut by_queue: Vec<(QueueKeys, Vec<Taken>)> = Vec::new();
    for (family, q, l) in letters {
        let item = retry.then(|| {
            l.letter.as_ref().map_or_else(
                || l.raw.clone(),
                |letter| retried_item(family, &letter.item),
            )
        });
        match by_queue.iter_mut().find(|(k, _)| k.dead == q.dead) {
            Some((_, list)) => list.push((l.raw, item)),
            None => by_queue.push((q, vec![(l.raw, item)])),
        }
    }
    let mut redis = state.redis.clone();
    let mut total = 0;
    for (q, list) in by_queue {
        total += dead_letters::take(&mut redis, &q, &list)
            .await
            .map_err(|e| ApiError::Unavailable(e.into()))?;
    }
    Ok(total)
}

/// `older_than`: an instant (RFC 3339, or epoch milliseconds), or an age (`30s`, `15m`,
/// `24h`, `7d`).
fn cutoff_ms(text: &str, now_ms: i64) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().ok()?;
    let ms = match unit {
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return None,
    };
    Some(now_ms - ms)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Letters dead-lettered before this: an instant (RFC 3339 or epoch milliseconds) or
    /// an age (`30s`, `15m`, `24h`, `7d`).
    older_than: Option<String>,
    /// One queue family; absent: all.
    queue: Option<String>,
    /// Only letters whose reason contains this text.
    reason: Option<String>,
}

/// Purges dead letters older than `older_than`.
#[utoipa::path(
    tag = "dead letters",
    security(("admin_token" = [])),
    params(PurgeQuery),
    responses(
        (status = 200, description = "`{purged}`", body = super::docs::Purged),
        (status = 400, description = "No or a malformed older_than, or an unknown queue"),
        (status = 401, description = "Missing or wrong admin token"),
        (status = 503, description = "Redis unavailable (Retry-After)"),
    )
)]
#[delete("/dead-letters")]
#[tracing::instrument(name = "purge_dead_letters", skip_all)]
pub async fn purge_dead_letters(
    req: HttpRequest,
    q: web::Query<PurgeQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let now = chrono::Utc::now().timestamp_millis();
    let Some(cutoff) = q.older_than.as_deref().and_then(|t| cutoff_ms(t, now)) else {
        return Err(ApiError::BadRequest(
            "older_than is required: an instant (RFC 3339 or epoch ms) or an age such as 7d".into(),
        ));
    };
    let all = gather(&state, &families(q.queue.as_deref())?, q.reason.as_deref()).await?;
    let old = all.into_iter().filter(|(_, _, l)| {
        l.letter
            .as_ref()
            .is_some_and(|letter| letter.at_ms < cutoff)
    });
    let purged = take(&state, old, false).await?;
    metrics::counter!("stats_api_dead_letters_purged_total").increment(purged);
    Ok(HttpResponse::Ok().json(json!({"purged": purged})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_instants_give_a_cutoff() {
        let now = 1_000_000_000;
        assert_eq!(cutoff_ms("7d", now), Some(now - 7 * 86_400_000));
        assert_eq!(cutoff_ms("30s", now), Some(now - 30_000));
        assert_eq!(cutoff_ms("1970-01-01T00:00:01Z", now), Some(1_000));
        assert_eq!(cutoff_ms("12345", now), Some(12_345));
        assert_eq!(cutoff_ms("soon", now), None);
        assert_eq!(cutoff_ms("5y", now), None);
    }

    #[test]
    fn a_retried_delivery_starts_a_new_series() {
        let mut d = Delivery::new(uuid::Uuid::nil(), ChannelKind::Webhook, "ep", None, 1);
        d.attempt = 8;
        let again: Delivery =
            serde_json::from_str(&retried_item("webhook", &d.to_json())).expect("delivery");
        assert_eq!((again.attempt, again.series_start), (8, 8));
        assert_eq!(retried_item("events", "{\"x\":1}"), "{\"x\":1}");
    }
}
