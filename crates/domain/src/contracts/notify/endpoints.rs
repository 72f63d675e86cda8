//! The webhook endpoints registry: where webhooks go, which event types each endpoint
//! takes, its secret and rate limit, and whether it is disabled.
//!
//! It works as the site registry does (see [`crate::site_registry`]): ingest-api changes
//! it with one Lua step each (`put_record.lua`) that also queues the change for
//! PostgreSQL; workers read it from Redis; a Redis that lost it answers "restoring" until
//! a worker has put every endpoint back from PostgreSQL. A worker disables an endpoint
//! that answered 410 through the same step.

use super::request::check_event_type;
use crate::keys::Keys;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/put_record.lua")));
static RESTORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/restore_record.lua")));

/// Most event types one endpoint may list.
pub const MAX_EVENT_TYPES: usize = 100;
/// Highest per-endpoint rate limit accepted.
pub const MAX_RATE_LIMIT_PER_S: u32 = 100_000;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub url: String,
    /// Event types it receives (`poll.closed`, or a family `poll.*`); empty: every type.
    pub event_types: Vec<String>,
    /// Most deliveries per second (across every worker); `None`: no limit.
    pub rate_limit_per_s: Option<u32>,
    #[serde(skip)]
    pub secret: String,
    /// The secret before the last rotation, still signing beside the new one until
    /// `previous_secret_expires_at` (receivers move to the new one without a gap).
    #[serde(skip)]
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub description: String,
    pub disabled: bool,
    /// Why it was disabled (`gone`: it answered 410; `admin`).
    pub disabled_reason: Option<String>,
    #[serde(skip)]
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether it receives events of type `event_type`.
    pub fn accepts(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self.event_types.iter().any(|t| {
                t == event_type
                    || t == "*"
                    || t.strip_suffix(".*").is_some_and(|family| {
                        event_type.len() > family.len()
                            && event_type.starts_with(family)
                            && event_type.as_bytes()[family.len()] == b'.'
                    })
            })
    }

    /// The secrets deliveries are signed with at `now`: the current one, and the one
    /// before the last rotation while it is still valid.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && now < until
        {
            secrets.push(previous);
        }
        secrets
    }

    /// Reads a record (the Redis hash, or a queued change).
    ///
    /// # Errors
    /// When a field is missing or malformed.
    pub fn from_record(record: &HashMap<String, String>) -> Result<Self, String> {
        let field = |name: &str| {
            record
                .get(name)
                .ok_or_else(|| format!("endpoint record without {name}"))
        };
        let ms = |name: &str| -> Result<DateTime<Utc>, String> {
            field(name)?
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| format!("endpoint record with a bad {name}"))
        };
        Ok(Self {
            endpoint_id: field("endpoint_id")?.clone(),
            url: field("url")?.clone(),
            event_types: serde_json::from_str(field("event_types")?)
                .map_err(|e| format!("endpoint record with bad event_types: {e}"))?,
            rate_limit_per_s: record
                .get("rate_limit_per_s")
                .and_then(|r| r.parse().ok())
                .filter(|r| *r > 0),
            secret: field("secret")?.clone(),
            previous_secret: record
                .get("previous_secret")
                .filter(|p| !p.is_empty())
                .cloned(),
            previous_secret_expires_at: record
                .get("previous_secret_expires_at_ms")
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis),
            description: record.get("description").cloned().unwrap_or_default(),
            disabled: record.get("disabled").is_some_and(|d| d == "1"),
            disabled_reason: record
                .get("disabled_reason")
                .filter(|r| !r.is_empty())
                .cloned(),
            version: field("version")?
                .parse()
                .map_err(|_| "endpoint record with a bad version".to_string())?,
            created_at: ms("created_at_ms")?,
            updated_at: ms("updated_at_ms")?,
        })
    }

    /// The record as Redis holds it.
    pub fn to_record(&self) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint_id", self.endpoint_id.clone()),
            ("url", self.url.clone()),
            (
                "event_types",
                serde_json::to_string(&self.event_types).unwrap_or_else(|_| "[]".into()),
            ),
            (
                "rate_limit_per_s",
                self.rate_limit_per_s
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ),
            ("secret", self.secret.clone()),
            (
                "previous_secret",
                self.previous_secret.clone().unwrap_or_default(),
            ),
            (
                "previous_secret_expires_at_ms",
                self.previous_secret_expires_at
                    .map(|t| t.timestamp_millis().to_string())
                    .unwrap_or_default(),
            ),
            ("description", self.description.clone()),
            ("disabled", if self.disabled { "1" } else { "0" }.into()),
            (
                "disabled_reason",
                self.disabled_reason.clone().unwrap_or_default(),
            ),
            ("version", self.version.to_string()),
            (
                "created_at_ms",
                self.created_at.timestamp_millis().to_string(),
            ),
            (
                "updated_at_ms",
                self.updated_at.timestamp_millis().to_string(),
            ),
        ]
    }
}

/// A queued registry change: the endpoint after the change (as it was, for a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointChange {
    pub endpoint: Endpoint,
    pub deleted: bool,
}

/// Reads a queued change back (the worker).
///
/// # Errors
/// When the message is not a change `put_record.lua` wrote.
pub fn parse_change(message: &[u8]) -> Result<EndpointChange, String> {
    let record: HashMap<String, String> =
        serde_json::from_slice(message).map_err(|e| format!("not an endpoint change: {e}"))?;
    Ok(EndpointChange {
        deleted: record.get("deleted").is_some_and(|d| d == "1"),
        endpoint: Endpoint::from_record(&record)?,
    })
}

/// What a create or patch sets: field name and value as Redis holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointFields(pub Vec<(&'static str, String)>);

/// The fields an endpoint body may carry.
const FIELDS: [&str; 5] = [
    "url",
    "event_types",
    "rate_limit_per_s",
    "description",
    "disabled",
];

/// Parses `POST /v1/webhooks/endpoints` (`creating`, a `url` required) or a `PATCH`;
/// every problem is listed. URLs on internal addresses are refused unless
/// `allow_internal`.
///
/// # Errors
/// The problems, in the words of the API.
pub fn parse_fields(
    body: &[u8],
    creating: bool,
    allow_internal: bool,
) -> Result<EndpointFields, Vec<String>> {
    // A map, not a struct: `"rate_limit_per_s": null` (remove the limit) must differ from
    // leaving the field out.
    let mut raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON body: {e}")])?;
    let mut errors: Vec<String> = raw
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| format!("unknown field {k:?}: expected one of {}", FIELDS.join(", ")))
        .collect();
    let mut fields = Vec::new();
    match raw.remove("url") {
        Some(serde_json::Value::String(u)) => match super::webhook::check_url(&u, allow_internal) {
            Ok(url) => fields.push(("url", url.to_string())),
            Err(e) => errors.push(e),
        },
        None if !creating => {}
        _ => errors.push("url is required and must be a string (an http or https URL)".into()),
    }
    match raw.remove("event_types") {
        None if !creating => {}
        None | Some(serde_json::Value::Null) => fields.push(("event_types", "[]".into())),
        Some(serde_json::Value::Array(items)) if items.len() <= MAX_EVENT_TYPES => {
            let mut types: Vec<String> = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(t) if t == "*" || check_event_type(t.trim_end_matches(".*")).is_ok() => {
                        if !types.iter().any(|x| x == t) {
                            types.push(t.to_string());
                        }
                    }
                    Some(t) => errors.push(format!(
                        "event_types: {t:?} is not an event type (such as poll.closed, or poll.* for the family)"
                    )),
                    None => errors.push("event_types must be an array of strings".into()),
                }
            }
            fields.push((
                "event_types",
                serde_json::to_string(&types).unwrap_or_else(|_| "[]".into()),
            ));
        }
        Some(serde_json::Value::Array(_)) => errors.push(format!(
            "event_types must list at most {MAX_EVENT_TYPES} types"
        )),
        Some(_) => errors.push("event_types must be an array of strings".into()),
    }
    match raw.remove("rate_limit_per_s") {
        None => {}
        Some(serde_json::Value::Null) => fields.push(("rate_limit_per_s", String::new())),
        Some(v) => match v.as_u64().filter(|r| (1..=u64::from(MAX_RATE_LIMIT_PER_S)).contains(r)) {
            Some(r) => fields.push(("rate_limit_per_s", r.to_string())),
            None => errors.push(format!(
                "rate_limit_per_s must be a whole number from 1 to {MAX_RATE_LIMIT_PER_S}, or null for none"
            )),
        },
    }
    match raw.remove("description") {
        None => {}
        Some(serde_json::Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_CHARS => {
            fields.push(("description", d))
        }
        Some(_) => errors.push(format!(
            "description must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )),
    }
    match raw.remove("disabled") {
        None => {}
        Some(serde_json::Value::Bool(d)) => {
            fields.push(("disabled", if d { "1" } else { "0" }.into()));
            fields.push(("disabled_reason", if d { "admin" } else { "" }.into()));
        }
        Some(_) => errors.push("disabled must be true or false".into()),
    }
    if errors.is_empty() {
        Ok(EndpointFields(fields))
    } else {
        Err(errors)
    }
}

/// What a registry write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Done(Box<Endpoint>),
    Restoring,
    Exists,
    Missing,
}

async fn put<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    op: &str,
    endpoint_id: &str,
    fields: &EndpointFields,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let mut invocation = PUT.prepare_invoke();
    invocation
        .key(keys.endpoint(endpoint_id))
        .key(keys.endpoint_ids())
        .key(keys.endpoints_version())
        .key(keys.endpoints_restored())
        .key(&keys.webhooks_queue().queue)
        .arg(op)
        .arg(endpoint_id)
        .arg(now.timestamp_millis())
        .arg("endpoint_id");
    for (field, value) in &fields.0 {
        invocation.arg(*field).arg(value);
    }
    let reply: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(match reply.first().map(String::as_str) {
        Some("ok") => {
            let record: HashMap<String, String> = reply[1..]
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            PutOutcome::Done(Box::new(Endpoint::from_record(&record).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Parse, "put_record.lua", e))
            })?))
        }
        Some("exists") => PutOutcome::Exists,
        Some("missing") => PutOutcome::Missing,
        _ => PutOutcome::Restoring,
    })
}

/// A new endpoint id.
pub fn new_endpoint_id() -> String {
    format!("ep_{}", uuid::Uuid::now_v7().simple())
}

/// Registers an endpoint with `fields` (from [`parse_fields`] with `creating`) and a new
/// secret.
///
/// # Errors
/// When Redis is unreachable; nothing was changed then.
pub async fn create<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
    fields: &EndpointFields,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let mut all = fields.clone();
    for (name, default) in [
        ("rate_limit_per_s", ""),
        ("description", ""),
        ("disabled", "0"),
        ("disabled_reason", ""),
        ("previous_secret", ""),
        ("previous_secret_expires_at_ms", ""),
    ] {
        if !all.0.iter().any(|(f, _)| *f == name) {
            all.0.push((name, default.to_string()));
        }
    }
    all.0.push(("secret", super::webhook::new_secret()));
    put(conn, keys, "create", endpoint_id, &all, now).await
}

/// Changes what `fields` names.
///
/// # Errors
/// When Redis is unreachable.
pub async fn update<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
    fields: &EndpointFields,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    put(conn, keys, "update", endpoint_id, fields, now).await
}

/// Disables an endpoint for `reason` (a worker, after a 410).
///
/// # Errors
/// When Redis is unreachable.
pub async fn disable<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let fields = EndpointFields(vec![
        ("disabled", "1".into()),
        ("disabled_reason", reason.to_string()),
    ]);
    update(conn, keys, endpoint_id, &fields, now).await
}

/// How long the secret before a rotation keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// Gives `endpoint` a new secret; the current one keeps signing beside it for
/// [`ROTATION_OVERLAP_HOURS`]. Returns the endpoint with its new secret.
///
/// # Errors
/// When Redis is unreachable.
pub async fn rotate_secret<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint: &Endpoint,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    let until = now + chrono::TimeDelta::hours(ROTATION_OVERLAP_HOURS);
    let fields = EndpointFields(vec![
        ("secret", super::webhook::new_secret()),
        ("previous_secret", endpoint.secret.clone()),
        (
            "previous_secret_expires_at_ms",
            until.timestamp_millis().to_string(),
        ),
    ]);
    update(conn, keys, &endpoint.endpoint_id, &fields, now).await
}

/// Removes an endpoint (deliveries still queued for it fail).
///
/// # Errors
/// When Redis is unreachable.
pub async fn delete<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<PutOutcome> {
    put(
        conn,
        keys,
        "delete",
        endpoint_id,
        &EndpointFields::default(),
        now,
    )
    .await
}

/// One endpoint.
///
/// # Errors
/// When Redis is unreachable or the record is malformed.
pub async fn get<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint_id: &str,
) -> RedisResult<Option<Endpoint>> {
    let Some(record) = crate::registry::record(conn, &keys.endpoint(endpoint_id)).await? else {
        return Ok(None);
    };
    Endpoint::from_record(&record)
        .map(Some)
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Parse, "endpoint record", e)))
}

/// The registry's version and whether it is complete (a reader reloads when the version
/// moved).
///
/// # Errors
/// When Redis is unreachable.
pub async fn version<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<(i64, bool)> {
    crate::registry::version(conn, &keys.endpoints_version(), &keys.endpoints_restored()).await
}

/// Every endpoint, with the version read before them. Malformed records are skipped.
///
/// # Errors
/// When Redis is unreachable.
pub async fn all<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<(i64, Vec<Endpoint>)> {
    let (version, _) = version(conn, keys).await?;
    let records =
        crate::registry::records(conn, &keys.endpoint_ids(), |id| keys.endpoint(id)).await?;
    let mut out = Vec::with_capacity(records.len());
    for record in &records {
        match Endpoint::from_record(record) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(error = e, "skipping a malformed endpoint record"),
        }
    }
    Ok((version, out))
}

/// The worker's restore: puts `endpoint` back unless Redis has the same or a newer
/// version. Returns whether it was written.
///
/// # Errors
/// When Redis is unreachable.
pub async fn restore<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    endpoint: &Endpoint,
) -> RedisResult<bool> {
    let mut invocation = RESTORE.prepare_invoke();
    invocation
        .key(keys.endpoint(&endpoint.endpoint_id))
        .key(keys.endpoint_ids())
        .key(keys.endpoints_version())
        .arg(&endpoint.endpoint_id);
    for (field, value) in endpoint.to_record() {
        invocation.arg(field).arg(value);
    }
    let written: i64 = invocation.invoke_async(conn).await?;
    Ok(written == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(types: &[&str]) -> Endpoint {
        Endpoint {
            endpoint_id: "ep_1".into(),
            url: "https://example.com/hook".into(),
            event_types: types.iter().map(|t| (*t).to_string()).collect(),
            rate_limit_per_s: Some(5),
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_secret_expires_at: None,
            description: String::new(),
            disabled: false,
            disabled_reason: None,
            version: 1,
            created_at: DateTime::from_timestamp_millis(0).expect("epoch"),
            updated_at: DateTime::from_timestamp_millis(0).expect("epoch"),
        }
    }

    #[test]
    fn event_types_match_exactly_or_by_family() {
        assert!(endpoint(&[]).accepts("anything"));
        let e = endpoint(&["poll.*", "site.traffic_spike"]);
        assert!(e.accepts("poll.closed"));
        assert!(e.accepts("site.traffic_spike"));
        assert!(!e.accepts("poll"));
        assert!(!e.accepts("polls.closed"));
        assert!(!e.accepts("goal.converted"));
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_it_expires() {
        let mut e = endpoint(&[]);
        let now = DateTime::from_timestamp_millis(1_000_000).expect("now");
        assert_eq!(e.signing_secrets(now), vec!["whsec_x"]);
        e.previous_secret = Some("whsec_old".into());
        e.previous_secret_expires_at = Some(now + chrono::TimeDelta::hours(1));
        assert_eq!(e.signing_secrets(now), vec!["whsec_x", "whsec_old"]);
        assert_eq!(
            e.signing_secrets(now + chrono::TimeDelta::hours(2)),
            vec!["whsec_x"]
        );
    }

    #[test]
    fn records_round_trip() {
        let mut e = endpoint(&["a.b"]);
        e.previous_secret = Some("whsec_old".into());
        e.previous_secret_expires_at = DateTime::from_timestamp_millis(5);
        let record: HashMap<String, String> = e
            .to_record()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Endpoint::from_record(&record), Ok(e));
    }

    #[test]
    fn bodies_are_checked_listing_every_problem() {
        let ok = parse_fields(
            br#"{"url":"https://hooks.example.com/x","event_types":["poll.*","poll.*"],"rate_limit_per_s":10}"#,
            true,
            false,
        )
        .expect("valid");
        assert!(ok.0.contains(&("event_types", r#"["poll.*"]"#.to_string())));
        let errors = parse_fields(
            br#"{"url":"ftp://x","event_types":["bad type"],"rate_limit_per_s":0}"#,
            true,
            false,
        )
        .expect_err("invalid");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            parse_fields(br#"{"event_types":[]}"#, true, false).is_err(),
            "url required"
        );
        assert!(parse_fields(br#"{"disabled":false}"#, false, false).is_ok());
        assert!(parse_fields(br#"{"url":"http://10.0.0.1/"}"#, false, false).is_err());
        assert!(parse_fields(br#"{"url":"http://10.0.0.1/"}"#, false, true).is_ok());
    }
}
