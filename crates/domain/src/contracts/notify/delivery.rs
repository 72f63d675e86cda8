//! Deliveries: one notification to one webhook endpoint, email address or phone number,
//! attempted until it succeeds or its retries run out ([`Delivery`]); what each attempt
//! leaves for PostgreSQL ([`AttemptRecord`]); and when the next attempt is due
//! ([`RetrySchedule`]).

use super::model::{ChannelKind, DeliveryState};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// One delivery as queued (and scheduled, and dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable across every attempt: a webhook's `webhook-id`, so a receiver that
    /// deduplicates on it sees each message once.
    pub delivery_id: String,
    pub notification_id: Uuid,
    pub channel: ChannelKind,
    /// The webhook endpoint id, email address or phone number.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// The attempt count when the current series of retries began (0; a dead letter
    /// retried from the API starts a new series, and its attempts keep counting up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub series_start: u32,
    pub created_at_ms: i64,
    /// See [`crate::queue::queued_at_ms`].
    #[serde(default)]
    pub queued_at_ms: i64,
}

impl Delivery {
    /// The delivery of `notification_id` on `channel` to `target`: the same three always
    /// give the same id, so a fan-out replayed after a crash names the same deliveries.
    pub fn new(
        notification_id: Uuid,
        channel: ChannelKind,
        target: &str,
        user_id: Option<&str>,
        now_ms: i64,
    ) -> Self {
        Self {
            delivery_id: delivery_id(&notification_id, channel, target),
            notification_id,
            channel,
            target: target.to_string(),
            user_id: user_id.map(str::to_string),
            attempt: 0,
            series_start: 0,
            created_at_ms: now_ms,
            queued_at_ms: now_ms,
        }
    }

    /// The backlog field a delivery counts under (its endpoint, for webhooks).
    pub fn backlog_field(&self) -> &str {
        if self.channel == ChannelKind::Webhook {
            &self.target
        } else {
            ""
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The id of the delivery of `notification_id` on `channel` to `target` (`msg_` and 32 hex
/// digits, the shape Standard Webhooks receivers expect of `webhook-id`).
pub fn delivery_id(notification_id: &Uuid, channel: ChannelKind, target: &str) -> String {
    let name = format!("{}:{target}", channel.as_str());
    format!(
        "msg_{}",
        Uuid::new_v5(notification_id, name.as_bytes()).simple()
    )
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The receiver took it (a 2xx in time, the SMTP server accepted it).
    Delivered,
    /// It failed and will be retried.
    Failed,
    /// It failed and was the last attempt: dead-lettered.
    Exhausted,
    /// Given up at once (no address; the endpoint answered 410 or was disabled or
    /// deleted).
    Refused,
    /// The worker stopped during the attempt (killed): whether the receiver saw it is
    /// unknown; it is attempted again with the same delivery id.
    Interrupted,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Exhausted => "exhausted",
            Self::Refused => "refused",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What one attempt (or a delivery given up without one) leaves for PostgreSQL: the
/// attempt's row, and the delivery's state after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub notification_id: Uuid,
    pub channel: ChannelKind,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// This attempt's number (1 for the first); 0 for a delivery refused before any
    /// attempt.
    pub attempt: u32,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delivery's state after this attempt.
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// See [`crate::queue::queued_at_ms`].
    #[serde(default)]
    pub queued_at_ms: i64,
}

impl AttemptRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// When retries are due: the pause after attempt `n` is the `n`-th entry (with up to ±20%
/// jitter, so deliveries that failed together do not return together); after the last
/// entry's attempt the delivery is dead. The default is Svix's: 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 10 h (eight attempts over about 28 hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        Self(
            [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .map(Duration::from_secs)
                .to_vec(),
        )
    }
}

impl RetrySchedule {
    /// Reads `5s,5m,30m,2h` (units ms, s, m, h).
    ///
    /// # Errors
    /// A message naming the entry that does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (digits, unit) = part.split_at(
                part.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(part.len()),
            );
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("{part:?} is not a duration such as 500ms, 5s, 5m or 2h"))?;
            let d = match unit {
                "ms" => Duration::from_millis(n),
                "s" | "" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                _ => return Err(format!("{part:?}: the unit must be ms, s, m or h")),
            };
            out.push(d);
        }
        if out.len() > 50 {
            return Err("at most 50 retries".into());
        }
        Ok(Self(out))
    }

    /// Attempts in all (the first and every retry).
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The pause after attempt `attempt` (1-based) with `jitter` in [0, 1) spreading it by
    /// ±20%; `None` when that was the last attempt.
    pub fn pause_after(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        let base = self.0.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }

    /// The whole schedule as the API documents it (`5s, 5m, ...`).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|d| {
                let s = d.as_secs();
                if d.subsec_millis() != 0 || s == 0 {
                    format!("{}ms", d.as_millis())
                } else if s % 3600 == 0 {
                    format!("{}h", s / 3600)
                } else if s % 60 == 0 {
                    format!("{}m", s / 60)
                } else {
                    format!("{s}s")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let s = RetrySchedule::default();
        let total: Duration = s.0.iter().sum();
        assert!(total > Duration::from_secs(24 * 3600) && total < Duration::from_secs(30 * 3600));
        assert_eq!(s.max_attempts(), 8);
        assert_eq!(s.describe(), "5s, 5m, 30m, 2h, 5h, 10h, 10h");
        assert_eq!(
            s.pause_after(8, 0.5),
            None,
            "the eighth attempt is the last"
        );
        assert_eq!(s.pause_after(0, 0.5), None);
        let first = s.pause_after(1, 0.0).expect("a retry");
        assert_eq!(first, Duration::from_secs(4));
        assert_eq!(s.pause_after(1, 0.999_999).map(|d| d.as_secs()), Some(5));
    }

    #[test]
    fn schedules_parse_with_units() {
        assert_eq!(
            RetrySchedule::parse("50ms, 1s,2m,1h").expect("parses").0,
            vec![
                Duration::from_millis(50),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert!(RetrySchedule::parse("5 minutes").is_err());
        assert_eq!(
            RetrySchedule::parse("").expect("no retries").max_attempts(),
            1
        );
    }

    #[test]
    fn a_delivery_keeps_its_id_across_replays() {
        let n = Uuid::now_v7();
        let a = Delivery::new(n, ChannelKind::Webhook, "ep_1", None, 1);
        let b = Delivery::new(n, ChannelKind::Webhook, "ep_1", None, 2);
        assert_eq!(a.delivery_id, b.delivery_id);
        assert!(a.delivery_id.starts_with("msg_") && a.delivery_id.len() == 36);
        assert_ne!(
            a.delivery_id,
            Delivery::new(n, ChannelKind::Email, "ep_1", None, 1).delivery_id
        );
    }
}
