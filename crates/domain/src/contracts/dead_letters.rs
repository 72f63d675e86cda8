//! Dead letters of every queue, read and acted on in one way: list them by queue and
//! reason, retry them (what they carried goes back on its queue), purge them by age.
//!
//! Every dead-letter list holds [`crate::queue::DeadLetter`] JSON, newest first. A letter
//! is named by a hash of its exact text ([`letter_id`]), so a retry or a purge names what
//! the caller saw, and a letter retried or purged by someone else meanwhile is skipped.

use crate::keys::QueueKeys;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

static MOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/dead_letters_move.lua")));

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Letter {
    pub reason: String,
    pub item: String,
    pub at_ms: i64,
    #[serde(default)]
    pub worker_id: String,
}

/// The id of a dead letter: the first 16 hex digits of the SHA-256 of its text.
pub fn letter_id(raw: &str) -> String {
    let digest = Sha256::digest(raw.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A listed dead letter: its id, text as stored, and what it says (`None` when the text
/// is not a dead letter: it is shown raw).
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub raw: String,
    pub letter: Option<Letter>,
}

/// Every dead letter of `queue` (a list holds at most
/// [`crate::queue::MAX_DEAD_LETTERS`]), newest first.
///
/// # Errors
/// When Redis is unreachable.
pub async fn list<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    queue: &QueueKeys,
) -> RedisResult<Vec<Listed>> {
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&queue.dead)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .map(|raw| Listed {
            id: letter_id(&raw),
            letter: serde_json::from_str(&raw).ok(),
            raw,
        })
        .collect())
}

/// Takes `letters` (their exact text) out of `queue`'s dead-letter list, queueing the item
/// paired with each (none: a purge). Returns how many were taken.
///
/// # Errors
/// When Redis is unreachable.
pub async fn take<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    queue: &QueueKeys,
    letters: &[(String, Option<String>)],
) -> RedisResult<u64> {
    let mut total = 0;
    for chunk in letters.chunks(500) {
        let mut invocation = MOVE.prepare_invoke();
        invocation.key(&queue.dead).key(&queue.queue);
        for (raw, item) in chunk {
            invocation.arg(raw).arg(item.as_deref().unwrap_or(""));
        }
        let n: u64 = invocation.invoke_async(conn).await?;
        total += n;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_ids_are_stable_and_short() {
        assert_eq!(letter_id("x"), letter_id("x"));
        assert_ne!(letter_id("x"), letter_id("y"));
        assert_eq!(letter_id("x").len(), 16);
    }
}
