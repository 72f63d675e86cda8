//! Topics: named audiences users subscribe to (`deploys`, `poll.closed`); a notification
//! to a topic reaches every subscriber the fan-out finds. Subscriptions live in Redis (one
//! hash per topic, user id -> contact), and every change is queued for PostgreSQL in the
//! same step (`subscribe.lua`), which restores them when Redis lost them.

use super::model::Recipient;
use crate::keys::Keys;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

static SUBSCRIBE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/subscribe.lua")));

/// Most users one request may subscribe or unsubscribe.
pub const MAX_PER_REQUEST: usize = 10_000;

/// A subscriber's addresses, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// What a subscription change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// This many users' subscriptions changed.
    Changed(u64),
    /// The subscriptions are being restored from PostgreSQL: try again shortly.
    Restoring,
}

/// Subscribes `users` to `topic` (a user subscribed already gets the new addresses).
///
/// # Errors
/// When Redis is unreachable; nothing was changed then.
pub async fn subscribe<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    topic: &str,
    users: &[Recipient],
    now_ms: i64,
) -> RedisResult<ChangeOutcome> {
    let mut invocation = SUBSCRIBE.prepare_invoke();
    invocation
        .key(keys.topic_subscribers(topic))
        .key(keys.topics_restored())
        .key(&keys.topics_queue().queue)
        .arg("subscribe")
        .arg(serde_json::Value::from(topic).to_string())
        .arg(now_ms);
    for u in users {
        let contact = Contact {
            email: u.email.clone(),
            phone: u.phone.clone(),
        };
        invocation
            .arg(&u.user_id)
            .arg(serde_json::to_string(&contact).unwrap_or_else(|_| "{}".into()))
            .arg(serde_json::Value::from(u.user_id.as_str()).to_string());
    }
    outcome(invocation.invoke_async(conn).await?)
}

/// Unsubscribes `users` from `topic`.
///
/// # Errors
/// When Redis is unreachable.
pub async fn unsubscribe<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    topic: &str,
    users: &[String],
    now_ms: i64,
) -> RedisResult<ChangeOutcome> {
    let mut invocation = SUBSCRIBE.prepare_invoke();
    invocation
        .key(keys.topic_subscribers(topic))
        .key(keys.topics_restored())
        .key(&keys.topics_queue().queue)
        .arg("unsubscribe")
        .arg(serde_json::Value::from(topic).to_string())
        .arg(now_ms);
    for u in users {
        invocation
            .arg(u)
            .arg(serde_json::Value::from(u.as_str()).to_string());
    }
    outcome(invocation.invoke_async(conn).await?)
}

fn outcome(n: i64) -> RedisResult<ChangeOutcome> {
    Ok(match u64::try_from(n) {
        Ok(n) => ChangeOutcome::Changed(n),
        Err(_) => ChangeOutcome::Restoring,
    })
}

/// Every subscriber of `topic`, with their addresses.
///
/// # Errors
/// When Redis is unreachable.
pub async fn subscribers<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    topic: &str,
) -> RedisResult<Vec<Recipient>> {
    let raw: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(keys.topic_subscribers(topic))
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .map(|(user_id, contact)| {
            let c: Contact = serde_json::from_str(&contact).unwrap_or_default();
            Recipient {
                user_id,
                email: c.email,
                phone: c.phone,
            }
        })
        .collect())
}

/// How many users subscribe to `topic`.
///
/// # Errors
/// When Redis is unreachable.
pub async fn count<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    topic: &str,
) -> RedisResult<u64> {
    redis::cmd("HLEN")
        .arg(keys.topic_subscribers(topic))
        .query_async(conn)
        .await
}

/// Whether the subscriptions are complete in Redis (not lost and being restored).
///
/// # Errors
/// When Redis is unreachable.
pub async fn restored<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(keys.topics_restored())
        .query_async(conn)
        .await
}

/// Puts subscriptions from PostgreSQL back (the worker's restore): each user's contact,
/// unless Redis has one already (written since the restore began).
///
/// # Errors
/// When Redis is unreachable.
pub async fn restore<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    topic: &str,
    users: &[Recipient],
) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    for u in users {
        let contact = Contact {
            email: u.email.clone(),
            phone: u.phone.clone(),
        };
        pipe.cmd("HSETNX")
            .arg(keys.topic_subscribers(topic))
            .arg(&u.user_id)
            .arg(serde_json::to_string(&contact).unwrap_or_else(|_| "{}".into()))
            .ignore();
    }
    pipe.query_async(conn).await
}

/// A subscription change as queued for PostgreSQL (written by `subscribe.lua`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionChange {
    pub topic: String,
    pub user_id: String,
    #[serde(default)]
    pub contact: Contact,
    pub deleted: bool,
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_changes_as_the_script_writes_them_parse() {
        let c: SubscriptionChange = serde_json::from_str(
            r#"{"topic":"deploys","user_id":"u\"1","contact":{"email":"a@b.c"},"deleted":false,"version":1764000000000000,"queued_at_ms":1}"#,
        )
        .expect("parses");
        assert_eq!(c.contact.email.as_deref(), Some("a@b.c"));
        assert_eq!(c.user_id, "u\"1");
    }
}
