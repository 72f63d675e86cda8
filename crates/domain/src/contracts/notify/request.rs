//! `POST /v1/notifications` bodies, validated with every problem listed (a request with
//! any problem queues nothing).

use super::model::{ChannelKind, Priority, Recipient};
use serde::Deserialize;

/// Most recipients one request may name (a topic fans out to any number).
pub const MAX_RECIPIENTS: usize = 10_000;
/// Longest title, body and HTML body, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 10_000;
pub const MAX_HTML_CHARS: usize = 100_000;
/// Largest `data` object, serialised.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Longest user id, event type and topic name.
pub const MAX_USER_ID_CHARS: usize = 255;
pub const MAX_EVENT_TYPE_CHARS: usize = 100;
pub const MAX_TOPIC_CHARS: usize = 200;
/// The event type of a notification that does not name one.
pub const DEFAULT_EVENT_TYPE: &str = "notification";

/// A valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub event_type: String,
    pub title: String,
    pub body: String,
    pub html: Option<String>,
    pub data: serde_json::Value,
    pub channels: Vec<ChannelKind>,
    pub priority: Priority,
    pub recipients: Vec<Recipient>,
    pub topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    recipients: Option<serde_json::Value>,
    topic: Option<serde_json::Value>,
    title: Option<serde_json::Value>,
    body: Option<serde_json::Value>,
    html: Option<serde_json::Value>,
    data: Option<serde_json::Value>,
    channels: Option<serde_json::Value>,
    priority: Option<serde_json::Value>,
    event_type: Option<serde_json::Value>,
}

/// Parses and validates a request body.
///
/// # Errors
/// Every problem, in the words of the API.
pub fn parse_notification(body: &[u8]) -> Result<NewNotification, Vec<String>> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON body: {e}")])?;
    let mut errors = Vec::new();
    let title = text(raw.title, "title", 1, MAX_TITLE_CHARS, &mut errors);
    let body_text = text(raw.body, "body", 1, MAX_BODY_CHARS, &mut errors);
    let html = raw
        .html
        .filter(|v| !v.is_null())
        .and_then(|v| text(Some(v), "html", 1, MAX_HTML_CHARS, &mut errors));
    let data = match raw.data {
        None | Some(serde_json::Value::Null) => serde_json::Value::Null,
        Some(v @ serde_json::Value::Object(_)) => {
            if v.to_string().len() > MAX_DATA_BYTES {
                errors.push(format!(
                    "data must be at most {MAX_DATA_BYTES} bytes as JSON"
                ));
            }
            v
        }
        Some(_) => {
            errors.push("data must be a JSON object".into());
            serde_json::Value::Null
        }
    };
    let channels = channels(raw.channels, &mut errors);
    let priority = match raw.priority {
        None | Some(serde_json::Value::Null) => Priority::Normal,
        Some(v) => serde_json::from_value(v).unwrap_or_else(|_| {
            errors.push("priority must be low, normal or high".into());
            Priority::Normal
        }),
    };
    let event_type = match raw.event_type {
        None | Some(serde_json::Value::Null) => DEFAULT_EVENT_TYPE.to_string(),
        Some(serde_json::Value::String(s)) => match check_event_type(&s) {
            Ok(()) => s,
            Err(e) => {
                errors.push(e);
                String::new()
            }
        },
        Some(_) => {
            errors.push("event_type must be a string".into());
            String::new()
        }
    };
    let (recipients, topic) = audience(raw.recipients, raw.topic, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewNotification {
        event_type,
        title: title.unwrap_or_default(),
        body: body_text.unwrap_or_default(),
        html,
        data,
        channels,
        priority,
        recipients,
        topic,
    })
}

fn text(
    v: Option<serde_json::Value>,
    name: &str,
    min: usize,
    max: usize,
    errors: &mut Vec<String>,
) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => {
            let n = s.chars().count();
            if n < min {
                errors.push(format!("{name} must not be empty"));
                None
            } else if n > max {
                errors.push(format!("{name} must be at most {max} characters"));
                None
            } else {
                Some(s)
            }
        }
        _ => {
            errors.push(format!("{name} is required and must be a string"));
            None
        }
    }
}

fn channels(v: Option<serde_json::Value>, errors: &mut Vec<String>) -> Vec<ChannelKind> {
    let names = ChannelKind::ALL.map(ChannelKind::as_str).join(", ");
    let Some(serde_json::Value::Array(items)) = v else {
        errors.push(format!(
            "channels is required: an array of one or more of {names}"
        ));
        return Vec::new();
    };
    if items.is_empty() {
        errors.push(format!("channels must name at least one of {names}"));
    }
    let mut out = Vec::new();
    for item in items {
        match item.as_str().map(|s| (s, ChannelKind::parse(s))) {
            Some((_, Some(c))) => {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            Some((s, None)) => {
                errors.push(format!("channels: unknown channel {s:?} (known: {names})"))
            }
            None => errors.push("channels must be an array of strings".into()),
        }
    }
    out.sort();
    out
}

fn audience(
    recipients: Option<serde_json::Value>,
    topic: Option<serde_json::Value>,
    errors: &mut Vec<String>,
) -> (Vec<Recipient>, Option<String>) {
    match (recipients, topic) {
        (Some(_), Some(_)) => {
            errors.push("give either recipients or topic, not both".into());
            (Vec::new(), None)
        }
        (None, None) => {
            errors.push("recipients (an array of user ids) or topic is required".into());
            (Vec::new(), None)
        }
        (None, Some(serde_json::Value::String(t))) => match check_topic(&t) {
            Ok(()) => (Vec::new(), Some(t)),
            Err(e) => {
                errors.push(e);
                (Vec::new(), None)
            }
        },
        (None, Some(_)) => {
            errors.push("topic must be a string".into());
            (Vec::new(), None)
        }
        (Some(serde_json::Value::Array(items)), None) => {
            if items.is_empty() {
                errors.push("recipients must name at least one user".into());
            } else if items.len() > MAX_RECIPIENTS {
                errors.push(format!(
                    "recipients must name at most {MAX_RECIPIENTS} users (a topic reaches any number)"
                ));
                return (Vec::new(), None);
            }
            (parse_recipients(items, "recipients", errors), None)
        }
        (Some(_), None) => {
            errors.push("recipients must be an array of user ids".into());
            (Vec::new(), None)
        }
    }
}

/// Reads a list of recipients: user id strings, or `{"user_id", "email"?, "phone"?}`
/// objects. A user named twice counts once (the first entry wins). Problems are reported
/// for the first few entries only, so a bad list of thousands gives a readable answer.
pub fn parse_recipients(
    items: Vec<serde_json::Value>,
    what: &str,
    errors: &mut Vec<String>,
) -> Vec<Recipient> {
    const REPORTED: usize = 10;
    let before = errors.len();
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let parsed = match item {
            serde_json::Value::String(user_id) => Ok(Recipient {
                user_id,
                ..Recipient::default()
            }),
            serde_json::Value::Object(_) => serde_json::from_value::<RawRecipient>(item)
                .map_err(|e| format!("{what}[{i}]: {e}"))
                .and_then(|r| r.check(i, what)),
            _ => Err(format!(
                "{what}[{i}] must be a user id or {{\"user_id\", \"email\", \"phone\"}}"
            )),
        };
        let checked = parsed.and_then(|r| {
            check_user_id(&r.user_id)
                .map(|()| r)
                .map_err(|e| format!("{what}[{i}]: {e}"))
        });
        match checked {
            Ok(r) => {
                if seen.insert(r.user_id.clone()) {
                    out.push(r);
                }
            }
            Err(e) => {
                if errors.len() - before < REPORTED {
                    errors.push(e);
                }
            }
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    user_id: String,
    email: Option<String>,
    phone: Option<String>,
}

impl RawRecipient {
    fn check(self, i: usize, what: &str) -> Result<Recipient, String> {
        if let Some(e) = &self.email
            && !is_email(e)
        {
            return Err(format!("{what}[{i}].email: {e:?} is not an email address"));
        }
        if let Some(p) = &self.phone
            && !is_phone(p)
        {
            return Err(format!(
                "{what}[{i}].phone: {p:?} is not a phone number in E.164 form (+14155550100)"
            ));
        }
        Ok(Recipient {
            user_id: self.user_id,
            email: self.email,
            phone: self.phone,
        })
    }
}

/// A user id: 1..255 characters, no control characters.
///
/// # Errors
/// A client-facing message.
pub fn check_user_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().count() > MAX_USER_ID_CHARS {
        return Err(format!(
            "a user id must be 1..{MAX_USER_ID_CHARS} characters"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("a user id must not contain control characters".into());
    }
    Ok(())
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// A topic name: 1..200 of `A-Z a-z 0-9 . _ - :`.
///
/// # Errors
/// A client-facing message.
pub fn check_topic(s: &str) -> Result<(), String> {
    if is_name(s, MAX_TOPIC_CHARS) {
        Ok(())
    } else {
        Err(format!(
            "topic: {s:?} must be 1..{MAX_TOPIC_CHARS} of letters, digits, '.', '_', '-', ':'"
        ))
    }
}

/// An event type (`poll.closed`, `deploy.finished`): 1..100 of `A-Z a-z 0-9 . _ - :`.
///
/// # Errors
/// A client-facing message.
pub fn check_event_type(s: &str) -> Result<(), String> {
    if is_name(s, MAX_EVENT_TYPE_CHARS) {
        Ok(())
    } else {
        Err(format!(
            "event_type: {s:?} must be 1..{MAX_EVENT_TYPE_CHARS} of letters, digits, '.', '_', '-', ':'"
        ))
    }
}

/// An email address as far as a sender can tell: one `@`, something on both sides, no
/// spaces or control characters, at most 254 bytes (RFC 5321).
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

/// A phone number in E.164 form: `+` and 7..15 digits.
pub fn is_phone(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_request_is_read_with_its_defaults() {
        let n = parse_notification(
            br#"{"recipients":["u1",{"user_id":"u2","email":"a@b.io","phone":"+14155550100"},"u1"],
                "title":"Hi","body":"there","channels":["email","in_app","email"]}"#,
        )
        .expect("valid");
        assert_eq!(n.recipients.len(), 2, "u1 once");
        assert_eq!(n.recipients[1].email.as_deref(), Some("a@b.io"));
        assert_eq!(n.channels, vec![ChannelKind::InApp, ChannelKind::Email]);
        assert_eq!(
            (n.event_type.as_str(), n.priority),
            ("notification", Priority::Normal)
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let errors = parse_notification(
            br#"{"recipients":[],"title":"","channels":["pigeon"],"priority":"urgent","data":[1]}"#,
        )
        .expect_err("invalid");
        let all = errors.join(" | ");
        for needle in [
            "title must not be empty",
            "body is required",
            "unknown channel \"pigeon\"",
            "priority",
            "data must be a JSON object",
            "at least one user",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn ten_thousand_and_one_recipients_are_refused() {
        let users: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        let body = serde_json::json!({"recipients": users, "title": "t", "body": "b", "channels": ["in_app"]});
        let errors = parse_notification(body.to_string().as_bytes()).expect_err("too many");
        assert!(errors[0].contains("at most 10000"), "{errors:?}");
        let users: Vec<String> = (0..MAX_RECIPIENTS).map(|i| format!("u{i}")).collect();
        let body = serde_json::json!({"recipients": users, "title": "t", "body": "b", "channels": ["in_app"]});
        assert_eq!(
            parse_notification(body.to_string().as_bytes())
                .expect("10,000 is fine")
                .recipients
                .len(),
            MAX_RECIPIENTS
        );
    }

    #[test]
    fn a_topic_or_recipients_but_not_both() {
        let both =
            br#"{"recipients":["u"],"topic":"t","title":"t","body":"b","channels":["in_app"]}"#;
        assert!(parse_notification(both).is_err());
        let topic = br#"{"topic":"deploys","title":"t","body":"b","channels":["webhook"]}"#;
        assert_eq!(
            parse_notification(topic).expect("valid").topic.as_deref(),
            Some("deploys")
        );
        let bad = br#"{"topic":"no spaces","title":"t","body":"b","channels":["webhook"]}"#;
        assert!(parse_notification(bad).is_err());
        let unknown = br#"{"topic":"t","title":"t","body":"b","channels":["in_app"],"colour":1}"#;
        assert!(parse_notification(unknown).expect_err("unknown")[0].contains("colour"));
    }

    #[test]
    fn addresses_are_checked() {
        assert!(is_email("a.b+c@example.co.uk"));
        for bad in ["", "a", "a@b", "@b.c", "a b@c.d", "a@b.c.", "a@@b.c"] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(is_phone("+14155550100"));
        for bad in ["14155550100", "+1", "+1415555o100", "+1234567890123456"] {
            assert!(!is_phone(bad), "{bad}");
        }
    }
}
