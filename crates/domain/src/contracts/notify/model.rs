//! What a notification is once accepted: the queued message the fan-out reads
//! ([`Notification`]), the public record every reader shows ([`NotificationRecord`]), and
//! the channels and delivery states of the API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A channel a notification is delivered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// The recipients' in-app feeds (live over SSE).
    InApp,
    /// Every webhook endpoint subscribed to the notification's event type.
    Webhook,
    /// Each recipient with an email address, over SMTP.
    Email,
    /// Each recipient with a phone number, over the SMS provider's HTTP API.
    Sms,
}

impl ChannelKind {
    pub const ALL: [Self; 4] = [Self::InApp, Self::Webhook, Self::Email, Self::Sms];
    /// The channels delivered by a delivery queue (everything but the feed).
    pub const DELIVERED: [Self; 3] = [Self::Webhook, Self::Email, Self::Sms];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How urgent a notification is: carried to feeds and webhooks for the receiver to act on
/// (deliveries are attempted in the order they were queued, whatever their priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// One recipient: a user id, with the addresses the email and SMS channels use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Recipient {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// An accepted notification as queued for the fan-out (one message of a notification
/// shard's queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: Uuid,
    pub event_type: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub channels: Vec<ChannelKind>,
    #[serde(default)]
    pub priority: Priority,
    /// The recipients named in the request (empty for a topic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Recipient>,
    /// The topic whose subscribers receive it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub created_at_ms: i64,
    /// See [`crate::queue::queued_at_ms`].
    #[serde(default)]
    pub queued_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Notification {
    /// The shard whose queue and keys hold this notification.
    pub fn shard(&self) -> u16 {
        shard_of(&self.notification_id)
    }

    /// Whether it is delivered on `channel`.
    pub fn has(&self, channel: ChannelKind) -> bool {
        self.channels.contains(&channel)
    }

    /// The record readers show (feeds, webhooks, status).
    pub fn record(&self) -> NotificationRecord {
        NotificationRecord {
            id: self.notification_id,
            event_type: self.event_type.clone(),
            title: self.title.clone(),
            body: self.body.clone(),
            html: self.html.clone(),
            data: self.data.clone(),
            channels: self.channels.clone(),
            priority: self.priority,
            topic: self.topic.clone(),
            recipients: (self.topic.is_none()).then_some(self.recipients.len() as u64),
            created_at_ms: self.created_at_ms,
        }
    }
}

/// The shard of a notification id: its last byte, which the id's maker may choose (see
/// [`crate::notify::accept::notification_id`]).
pub fn shard_of(id: &Uuid) -> u16 {
    u16::from(id.as_bytes()[15]) % crate::keys::NOTIFY_SHARDS
}

/// What everyone who shows a notification reads (stored in Redis for a week, and in
/// PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub id: Uuid,
    pub event_type: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub channels: Vec<ChannelKind>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// How many recipients were named (for a topic: unknown until it is fanned out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<u64>,
    pub created_at_ms: i64,
}

impl NotificationRecord {
    /// The creation time as RFC 3339 (milliseconds, `Z`).
    pub fn created_at(&self) -> String {
        rfc3339_ms(self.created_at_ms)
    }

    /// What a feed item shows of it (no HTML: the feed is rendered by the host page).
    pub fn feed_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "event_type": self.event_type,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "priority": self.priority,
            "created_at": self.created_at(),
        })
    }

    /// The body of a webhook delivery, in the Standard Webhooks payload shape
    /// (`type`, `timestamp`, `data`). The same notification always gives the same bytes,
    /// so a retry carries what the first attempt signed.
    pub fn webhook_body(&self) -> String {
        let mut data = serde_json::json!({
            "notification_id": self.id,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "priority": self.priority,
        });
        if let Some(topic) = &self.topic {
            data["topic"] = topic.as_str().into();
        }
        if let Some(n) = self.recipients {
            data["recipients"] = n.into();
        }
        serde_json::json!({
            "type": self.event_type,
            "timestamp": self.created_at(),
            "data": data,
        })
        .to_string()
    }
}

/// Epoch milliseconds as RFC 3339 with milliseconds (`1970-01-01T00:00:00.000Z`).
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where a delivery stands (the status API's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt.
    Queued,
    /// Attempted without success; another attempt is scheduled or under way.
    Delivering,
    Delivered,
    /// Given up without a retry: nowhere to deliver (no address, the endpoint disabled or
    /// deleted).
    Failed,
    /// Every attempt failed: in the dead-letter list (and retryable from there).
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivering => "delivering",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Delivering,
            Self::Delivered,
            Self::Failed,
            Self::Dead,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed | Self::Dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_body_is_the_same_bytes_every_time() {
        let n = Notification {
            notification_id: Uuid::nil(),
            event_type: "deploy.finished".into(),
            title: "Deployed".into(),
            body: "v1.2 is live".into(),
            html: None,
            data: serde_json::json!({"b": 1, "a": [1, 2]}),
            channels: vec![ChannelKind::Webhook],
            priority: Priority::High,
            recipients: vec![],
            topic: Some("deploys".into()),
            created_at_ms: 1_767_225_600_000,
            queued_at_ms: 0,
            idempotency_key: None,
            traceparent: None,
        };
        let body = n.record().webhook_body();
        assert_eq!(body, n.record().webhook_body());
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["type"], "deploy.finished");
        assert_eq!(v["timestamp"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["topic"], "deploys");
        assert_eq!(v["data"]["data"]["a"][1], 2);
    }

    #[test]
    fn channel_names_round_trip() {
        for c in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_string(&c).expect("json"),
                format!("\"{}\"", c.as_str())
            );
        }
        assert_eq!(ChannelKind::parse("pigeon"), None);
    }
}
