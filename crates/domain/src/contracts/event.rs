//! Analytics events: what clients send, how it is validated, and the queue message the
//! worker stores.
//!
//! Validation lists every problem, not just the first, in the words of the analytics design
//! Tally is compatible with (`site_id is required and must be a string`, ...). Everything
//! PostgreSQL would refuse later (over-long text, NUL characters, props that are not an
//! object) is refused here, so nothing is answered 202 and then dead-lettered.
//!
//! Unknown fields in an event are ignored (clients may send more than we store); `null` for
//! an optional field means absent.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use uuid::Uuid;

/// Most events in one request.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// The event type of a page view (the tracker's, and what visits count as pages).
pub const PAGE_VIEW: &str = "page_view";
/// Largest `props` object, in bytes of JSON as sent.
pub const MAX_PROPS_BYTES: usize = 4096;
pub const MAX_SITE_ID_CHARS: usize = 255;
pub const MAX_EVENT_TYPE_CHARS: usize = 100;
pub const MAX_PATH_CHARS: usize = 1000;
pub const MAX_USER_ID_CHARS: usize = 255;
/// Longest `url` and `referrer` of a browser event.
pub const MAX_URL_CHARS: usize = 2048;
/// Widest `screen_width` believed, in CSS pixels.
pub const MAX_SCREEN_WIDTH: u32 = 100_000;
/// Version of the queued message format.
pub const QUEUED_EVENT_VERSION: u32 = 1;

/// A JSON field exactly as the client sent it, so validation can say what was wrong.
#[derive(Debug, Default, PartialEq)]
pub enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    /// Present, but not a string.
    WrongType,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::WrongType)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::WrongType)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::WrongType)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::WrongType)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType)
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

/// One event, or a batch (`{"events": [...]}`), as sent. A body with an `events` field is a
/// batch; its other fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename = "event")]
pub struct RawEvent<'a> {
    #[serde(borrow)]
    pub site_id: Field<'a>,
    #[serde(borrow)]
    pub event_type: Field<'a>,
    #[serde(borrow)]
    pub timestamp: Field<'a>,
    #[serde(borrow)]
    pub path: Field<'a>,
    #[serde(borrow)]
    pub user_id: Field<'a>,
    #[serde(borrow)]
    pub event_id: Field<'a>,
    #[serde(borrow)]
    pub props: Option<&'a RawValue>,
    /// Browser events (the tracker): the page's URL, the referrer, the viewport width,
    /// and whether the browser says it is automated (`navigator.webdriver`).
    #[serde(borrow)]
    pub url: Field<'a>,
    #[serde(borrow)]
    pub referrer: Field<'a>,
    #[serde(borrow)]
    pub screen_width: Option<&'a RawValue>,
    #[serde(borrow)]
    pub automated: Option<&'a RawValue>,
    /// At most [`MAX_BATCH_EVENTS`] + 1 are parsed: a body of a hundred thousand `{}`
    /// is refused after the first thousand and one, not held whole in memory.
    #[serde(borrow, default, deserialize_with = "bounded_batch")]
    pub events: Option<Batch<'a>>,
}

/// A batch's events as parsed, and whether there were more than [`MAX_BATCH_EVENTS`].
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub events: Vec<RawEvent<'a>>,
    pub too_many: bool,
}

fn bounded_batch<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Batch<'a>>, D::Error> {
    struct BatchVisitor;
    impl<'de> Visitor<'de> for BatchVisitor {
        type Value = Option<Batch<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of events")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut batch = Batch::default();
            while let Some(e) = seq.next_element::<RawEvent<'de>>()? {
                if batch.events.len() == MAX_BATCH_EVENTS {
                    batch.too_many = true;
                    // The rest is skipped without being kept.
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    break;
                }
                batch.events.push(e);
            }
            Ok(Some(batch))
        }
    }
    d.deserialize_any(BatchVisitor)
}

/// The message queued for the worker: a validated event, normalised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedEvent<'a> {
    pub v: u32,
    pub event_id: Uuid,
    #[serde(borrow)]
    pub site_id: Cow<'a, str>,
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    /// When the event happened (client's clock), UTC.
    pub ts: DateTime<Utc>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub props: Option<&'a RawValue>,
    /// When ingest-api accepted it, UTC milliseconds: the queue's age field (see
    /// [`crate::queue::queued_at_ms`]); `received_at_ms` is its name in older messages.
    #[serde(rename = "queued_at_ms", alias = "received_at_ms")]
    pub received_at_ms: i64,
    /// W3C `traceparent` of the request that accepted it.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Cow<'a, str>>,
    /// Browser events: the page and where the visitor came from, as sent (the worker
    /// derives path, hostname, source and UTM fields from them).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_width: Option<u32>,
    /// Derived by ingest-api from the connection (never the address or User-Agent itself).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Cow<'a, str>>,
    /// `desktop`, `mobile` or `tablet` from the User-Agent; the worker prefers what
    /// `screen_width` says.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Cow<'a, str>>,
    /// ISO 3166-1 alpha-2.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Cow<'a, str>>,
    /// The browser said it is automated (`navigator.webdriver`); never queued.
    #[serde(skip)]
    pub automated: bool,
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventBodyError {
    /// Not JSON at all.
    #[error("invalid JSON: {0}")]
    Malformed(String),
    /// JSON, but the events in it break the rules; every problem is listed.
    #[error("validation failed: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Parses and validates a `POST /v1/events` body (one event or a batch).
///
/// `traceparent` is stored in each message so the worker can continue the trace.
///
/// # Errors
/// [`EventBodyError::Malformed`] when the body is not JSON; [`EventBodyError::Invalid`]
/// listing every problem when any event is invalid (the whole batch is refused).
pub fn parse_event_body<'a>(
    body: &'a [u8],
    received_at: DateTime<Utc>,
    traceparent: Option<&'a str>,
) -> Result<Vec<QueuedEvent<'a>>, EventBodyError> {
    let raw: RawEvent<'a> = serde_json::from_slice(body).map_err(classify_json_error)?;
    let mut errors = Vec::new();
    let received_at_ms = received_at.timestamp_millis();
    let traceparent = traceparent.map(Cow::Borrowed);
    let Some(Batch {
        events: batch,
        too_many,
    }) = raw.events
    else {
        let event = validate_event(raw, received_at_ms, &traceparent, &mut errors, None);
        return match event {
            Some(e) if errors.is_empty() => Ok(vec![e]),
            _ => Err(EventBodyError::Invalid(errors)),
        };
    };
    if batch.is_empty() {
        return Err(EventBodyError::Invalid(vec![
            "events must contain at least one event".into(),
        ]));
    }
    if too_many {
        return Err(EventBodyError::Invalid(vec![format!(
            "events must contain at most {MAX_BATCH_EVENTS} events"
        )]));
    }
    let mut events = Vec::with_capacity(batch.len());
    for (i, raw) in batch.into_iter().enumerate() {
        if let Some(e) = validate_event(raw, received_at_ms, &traceparent, &mut errors, Some(i)) {
            events.push(e);
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(EventBodyError::Invalid(errors))
    }
}

/// Parses the single-event body of the compatibility alias `POST /api/event`.
///
/// # Errors
/// As [`parse_event_body`]; a batch is refused here.
pub fn parse_single_event<'a>(
    body: &'a [u8],
    received_at: DateTime<Utc>,
    traceparent: Option<&'a str>,
) -> Result<QueuedEvent<'a>, EventBodyError> {
    let raw: RawEvent<'a> = serde_json::from_slice(body).map_err(classify_json_error)?;
    if raw.events.is_some() {
        return Err(EventBodyError::Invalid(vec![
            "this endpoint takes one event; send batches to /v1/events".into(),
        ]));
    }
    let mut errors = Vec::new();
    let tp = traceparent.map(Cow::Borrowed);
    match validate_event(raw, received_at.timestamp_millis(), &tp, &mut errors, None) {
        Some(e) if errors.is_empty() => Ok(e),
        _ => Err(EventBodyError::Invalid(errors)),
    }
}

fn classify_json_error(e: serde_json::Error) -> EventBodyError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => EventBodyError::Invalid(vec![format!(
            "body must be an event object or {{\"events\": [event, ...]}}: {e}"
        )]),
        _ => EventBodyError::Malformed(e.to_string()),
    }
}

fn validate_event<'a>(
    raw: RawEvent<'a>,
    received_at_ms: i64,
    traceparent: &Option<Cow<'a, str>>,
    errors: &mut Vec<String>,
    index: Option<usize>,
) -> Option<QueuedEvent<'a>> {
    let before = errors.len();
    let mut err = |msg: String| match index {
        Some(i) => errors.push(format!("events[{i}]: {msg}")),
        None => errors.push(msg),
    };

    let site_id = required_text(raw.site_id, "site_id", MAX_SITE_ID_CHARS, &mut err);
    let event_type = required_text(raw.event_type, "event_type", MAX_EVENT_TYPE_CHARS, &mut err);
    let ts = match raw.timestamp {
        Field::Str(s) if !s.is_empty() => match parse_timestamp(&s) {
            Ok(ts) => Some(ts),
            Err(msg) => {
                err(msg);
                None
            }
        },
        _ => {
            err("timestamp is required and must be a string".into());
            None
        }
    };
    let path = optional_text(raw.path, "path", MAX_PATH_CHARS, &mut err);
    let user_id = optional_text(raw.user_id, "user_id", MAX_USER_ID_CHARS, &mut err);
    let event_id = match raw.event_id {
        Field::Absent | Field::Null => Some(Uuid::now_v7()),
        Field::WrongType => {
            err("event_id must be a string".into());
            None
        }
        Field::Str(s) => match Uuid::try_parse(&s) {
            Ok(id) => Some(id),
            Err(_) => {
                err("event_id must be a valid UUID".into());
                None
            }
        },
    };
    if let Some(props) = raw.props
        && let Err(msg) = check_props(props)
    {
        err(msg);
    }
    let url = optional_text(raw.url, "url", MAX_URL_CHARS, &mut err);
    if let Some(Some(u)) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        err("url must be an http(s) URL".into());
    }
    let referrer = optional_text(raw.referrer, "referrer", MAX_URL_CHARS, &mut err);
    let screen_width = match raw.screen_width.map(RawValue::get) {
        None | Some("null") => Some(None),
        Some(text) => match text.parse::<u32>() {
            Ok(w) if w <= MAX_SCREEN_WIDTH => Some(Some(w)),
            _ => {
                err(format!(
                    "screen_width must be an integer from 0 to {MAX_SCREEN_WIDTH}"
                ));
                None
            }
        },
    };
    let automated = raw.automated.is_some_and(|a| a.get() == "true");
    if errors.len() != before {
        return None;
    }
    Some(QueuedEvent {
        v: QUEUED_EVENT_VERSION,
        event_id: event_id?,
        site_id: site_id?,
        event_type: event_type?,
        ts: ts?,
        path: path?,
        user_id: user_id?,
        props: raw.props,
        received_at_ms,
        traceparent: traceparent.clone(),
        url: url?,
        referrer: referrer?.filter(|r| !r.is_empty()),
        screen_width: screen_width?,
        browser: None,
        os: None,
        device: None,
        country: None,
        automated,
    })
}

fn required_text<'a>(
    field: Field<'a>,
    name: &str,
    max_chars: usize,
    err: &mut impl FnMut(String),
) -> Option<Cow<'a, str>> {
    match field {
        Field::Str(s) if !s.is_empty() => check_text(s, name, max_chars, err),
        _ => {
            err(format!("{name} is required and must be a string"));
            None
        }
    }
}

/// `Some(None)` when absent, `None` when invalid.
fn optional_text<'a>(
    field: Field<'a>,
    name: &str,
    max_chars: usize,
    err: &mut impl FnMut(String),
) -> Option<Option<Cow<'a, str>>> {
    match field {
        Field::Absent | Field::Null => Some(None),
        Field::WrongType => {
            err(format!("{name} must be a string"));
            None
        }
        Field::Str(s) => check_text(s, name, max_chars, err).map(Some),
    }
}

fn check_text<'a>(
    s: Cow<'a, str>,
    name: &str,
    max_chars: usize,
    err: &mut impl FnMut(String),
) -> Option<Cow<'a, str>> {
    let mut ok = true;
    // Byte length bounds the character count from above, so most strings skip the count.
    if s.len() > max_chars && s.chars().count() > max_chars {
        err(format!("{name} must be at most {max_chars} characters"));
        ok = false;
    }
    if s.contains('\0') {
        err(format!("{name} must not contain NUL characters"));
        ok = false;
    }
    ok.then_some(s)
}

/// Parses an RFC 3339 timestamp (ISO 8601 with a zone) into UTC, to the microsecond.
///
/// # Errors
/// A client-facing message when `s` is not such a timestamp.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(ts) => Ok(to_micros(ts.with_timezone(&Utc))),
        Err(_) if looks_zoneless(s) => Err(
            "timestamp must include a time zone offset or Z (RFC 3339, e.g. 2025-11-14T10:00:00Z)"
                .into(),
        ),
        Err(_) => Err("timestamp must be a valid ISO 8601 date string".into()),
    }
}

/// `t` cut to whole microseconds, PostgreSQL's precision: what the worker compares and
/// orders (visits, the rows a statement reports inserted) must be exactly what is stored.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn looks_zoneless(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").is_ok()
}

fn check_props(props: &RawValue) -> Result<(), String> {
    let text = props.get();
    if !text.starts_with('{') {
        return Err("props must be a JSON object".into());
    }
    if text.len() > MAX_PROPS_BYTES {
        return Err(format!(
            "props must be at most {MAX_PROPS_BYTES} bytes of JSON"
        ));
    }
    // PostgreSQL's jsonb cannot hold U+0000. The cheap text check rules out almost every
    // object; only a hit is confirmed by parsing (it may be an escaped backslash).
    if text.contains("\\u0000") {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| "props must be a JSON object".to_string())?;
        if contains_nul(&value) {
            return Err("props must not contain NUL characters (\\u0000)".into());
        }
    }
    Ok(())
}

fn contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

impl QueuedEvent<'_> {
    /// Whether the event's visitor is the connection that sent it: a browser event (it
    /// has a `url`), or one without `user_id` (its visitor id is derived from the
    /// connection). Only such events are enriched from the User-Agent and the address; a
    /// server sending events for its users says nothing about them by its connection.
    pub fn from_connection(&self) -> bool {
        self.url.is_some() || self.user_id.is_none()
    }

    /// The JSON the worker reads back.
    ///
    /// # Errors
    /// Never in practice: every field serialises.
    pub fn to_message(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    /// The timestamp as the API shows it.
    pub fn ts_rfc3339(&self) -> String {
        self.ts.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// Reads a queued event back.
///
/// # Errors
/// When the message is not a valid queued event (the worker dead-letters it).
pub fn parse_queued_event(message: &[u8]) -> Result<QueuedEvent<'_>, serde_json::Error> {
    let mut e: QueuedEvent = serde_json::from_slice(message)?;
    // Messages queued before ingest cut timestamps to microseconds may hold nanoseconds.
    e.ts = to_micros(e.ts);
    if e.v != QUEUED_EVENT_VERSION {
        return Err(de::Error::custom(format!(
            "unsupported message version {}",
            e.v
        )));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_kept_to_the_microsecond() {
        let t = parse_timestamp("2025-11-14T10:00:00.123456789Z").expect("valid");
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-14T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("fixed time")
    }

    fn invalid(body: &str) -> Vec<String> {
        match parse_event_body(body.as_bytes(), now(), None) {
            Err(EventBodyError::Invalid(d)) => d,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_is_normalised_to_utc_and_gets_an_id() {
        let body = br#"{"site_id":"s","event_type":"page_view","timestamp":"2025-11-14T19:30:01+02:00","path":"/p","user_id":"u"}"#;
        let events = parse_event_body(body, now(), Some("00-abc")).expect("valid");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.ts_rfc3339(), "2025-11-14T17:30:01.000000Z");
        assert_eq!(e.event_id.get_version_num(), 7);
        assert_eq!(e.path.as_deref(), Some("/p"));
        assert_eq!(e.traceparent.as_deref(), Some("00-abc"));
    }

    #[test]
    fn every_problem_is_listed_with_the_seed_messages() {
        let details = invalid(r#"{"site_id":5,"timestamp":"yesterday","path":1,"user_id":[]}"#);
        assert_eq!(
            details,
            vec![
                "site_id is required and must be a string",
                "event_type is required and must be a string",
                "timestamp must be a valid ISO 8601 date string",
                "path must be a string",
                "user_id must be a string",
            ]
        );
    }

    #[test]
    fn missing_timestamp_uses_the_required_message() {
        let d = invalid(r#"{"site_id":"s","event_type":"e"}"#);
        assert_eq!(d, vec!["timestamp is required and must be a string"]);
    }

    #[test]
    fn empty_required_strings_are_missing() {
        let d = invalid(r#"{"site_id":"","event_type":"","timestamp":""}"#);
        assert_eq!(d.len(), 3);
        assert!(
            d.iter()
                .all(|m| m.ends_with("is required and must be a string"))
        );
    }

    #[test]
    fn length_limits_count_characters_not_bytes() {
        let ok = format!(
            r#"{{"site_id":"{}","event_type":"e","timestamp":"2025-01-01T00:00:00Z"}}"#,
            "é".repeat(255)
        );
        assert!(parse_event_body(ok.as_bytes(), now(), None).is_ok());
        let long = format!(
            r#"{{"site_id":"{}","event_type":"{}","timestamp":"2025-01-01T00:00:00Z","path":"{}","user_id":"{}"}}"#,
            "s".repeat(256),
            "e".repeat(101),
            "p".repeat(1001),
            "u".repeat(256)
        );
        assert_eq!(
            invalid(&long),
            vec![
                "site_id must be at most 255 characters",
                "event_type must be at most 100 characters",
                "path must be at most 1000 characters",
                "user_id must be at most 255 characters",
            ]
        );
    }

    #[test]
    fn nul_characters_are_refused_everywhere_postgres_would() {
        let d = invalid(
            r#"{"site_id":"a\u0000","event_type":"e","timestamp":"2025-01-01T00:00:00Z","props":{"k":"v\u0000"}}"#,
        );
        assert_eq!(
            d,
            vec![
                "site_id must not contain NUL characters",
                "props must not contain NUL characters (\\u0000)"
            ]
        );
        // An escaped backslash followed by "u0000" is ordinary text.
        let ok = br#"{"site_id":"a","event_type":"e","timestamp":"2025-01-01T00:00:00Z","props":{"k":"\\u0000"}}"#;
        assert!(parse_event_body(ok, now(), None).is_ok());
    }

    #[test]
    fn props_must_be_a_small_object() {
        let d = invalid(
            r#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","props":[1]}"#,
        );
        assert_eq!(d, vec!["props must be a JSON object"]);
        let big = format!(
            r#"{{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","props":{{"k":"{}"}}}}"#,
            "x".repeat(MAX_PROPS_BYTES)
        );
        assert_eq!(
            invalid(&big),
            vec!["props must be at most 4096 bytes of JSON"]
        );
    }

    #[test]
    fn zoneless_timestamps_get_a_specific_message() {
        let d = invalid(r#"{"site_id":"s","event_type":"e","timestamp":"2025-11-14T10:00:00"}"#);
        assert_eq!(
            d,
            vec![
                "timestamp must include a time zone offset or Z (RFC 3339, e.g. 2025-11-14T10:00:00Z)"
            ]
        );
    }

    #[test]
    fn ancient_and_far_future_timestamps_are_accepted() {
        for ts in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            let body = format!(r#"{{"site_id":"s","event_type":"e","timestamp":"{ts}"}}"#);
            assert!(
                parse_event_body(body.as_bytes(), now(), None).is_ok(),
                "{ts}"
            );
        }
    }

    #[test]
    fn a_batch_with_one_bad_event_is_refused_whole_naming_the_index() {
        let d = invalid(
            r#"{"events":[{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z"},{"site_id":"s","timestamp":"2025-01-01T00:00:00Z"}]}"#,
        );
        assert_eq!(
            d,
            vec!["events[1]: event_type is required and must be a string"]
        );
    }

    #[test]
    fn batch_size_is_bounded() {
        assert_eq!(
            invalid(r#"{"events":[]}"#),
            vec!["events must contain at least one event"]
        );
        let one = r#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z"}"#;
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 1001].join(","));
        assert_eq!(
            invalid(&body),
            vec!["events must contain at most 1000 events"]
        );
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 1000].join(","));
        assert_eq!(
            parse_event_body(body.as_bytes(), now(), None).map(|v| v.len()),
            Ok(1000)
        );
    }

    #[test]
    fn malformed_json_is_told_apart_from_wrong_shapes() {
        assert!(matches!(
            parse_event_body(b"{not json", now(), None),
            Err(EventBodyError::Malformed(_))
        ));
        assert!(matches!(
            parse_event_body(b"[1,2]", now(), None),
            Err(EventBodyError::Invalid(_))
        ));
        assert!(matches!(
            parse_event_body(br#"{"events":"x"}"#, now(), None),
            Err(EventBodyError::Invalid(_))
        ));
    }

    #[test]
    fn event_ids_are_kept_or_refused() {
        let id = "0192e4a0-0000-7000-8000-000000000001";
        let body = format!(
            r#"{{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","event_id":"{id}"}}"#
        );
        let events = parse_event_body(body.as_bytes(), now(), None).expect("valid");
        assert_eq!(events[0].event_id.to_string(), id);
        let d = invalid(
            r#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","event_id":"nope"}"#,
        );
        assert_eq!(d, vec!["event_id must be a valid UUID"]);
    }

    #[test]
    fn queued_messages_round_trip() {
        let body = br#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","props":{"a":[1,{"b":null}]},"unknown":1}"#;
        let events = parse_event_body(body, now(), Some("tp")).expect("valid");
        let msg = events[0].to_message().expect("serialise");
        let back = parse_queued_event(&msg).expect("parse");
        assert_eq!(back.event_id, events[0].event_id);
        assert_eq!(back.props.map(|p| p.get()), Some(r#"{"a":[1,{"b":null}]}"#));
        assert_eq!(back.traceparent.as_deref(), Some("tp"));
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let body = br#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","path":null,"user_id":null,"props":null,"event_id":null}"#;
        let e = &parse_event_body(body, now(), None).expect("valid")[0];
        assert_eq!(
            (e.path.clone(), e.user_id.clone(), e.props.is_none()),
            (None, None, true)
        );
    }

    #[test]
    fn browser_fields_are_checked_and_kept() {
        let body = br#"{"site_id":"s","event_type":"page_view","timestamp":"2025-01-01T00:00:00Z","url":"https://a.com/p?utm_source=x","referrer":"","screen_width":1280,"automated":true}"#;
        let e = &parse_event_body(body, now(), None).expect("valid")[0];
        assert_eq!(e.url.as_deref(), Some("https://a.com/p?utm_source=x"));
        assert_eq!(
            (e.referrer.clone(), e.screen_width, e.automated),
            (None, Some(1280), true)
        );
        assert!(e.from_connection());
        let msg = e.to_message().expect("serialise");
        assert!(!String::from_utf8_lossy(&msg).contains("automated"));
        let d = invalid(
            r#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","url":"javascript:alert(1)","screen_width":-3}"#,
        );
        assert_eq!(
            d,
            vec![
                "url must be an http(s) URL",
                "screen_width must be an integer from 0 to 100000"
            ]
        );
    }

    #[test]
    fn server_events_with_a_user_are_not_from_the_connection() {
        let body =
            br#"{"site_id":"s","event_type":"e","timestamp":"2025-01-01T00:00:00Z","user_id":"u"}"#;
        assert!(!parse_event_body(body, now(), None).expect("valid")[0].from_connection());
    }

    #[test]
    fn the_single_event_alias_refuses_batches() {
        let r = parse_single_event(br#"{"events":[]}"#, now(), None);
        assert!(matches!(r, Err(EventBodyError::Invalid(_))));
    }
}
