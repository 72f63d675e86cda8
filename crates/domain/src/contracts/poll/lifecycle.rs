//! Creating, closing and restoring polls in Redis, each one Lua step that also queues the
//! change for PostgreSQL (restore excepted: it puts back what PostgreSQL holds).

use super::definition::{NewPoll, PollOption, PollSettings};
use super::message::PollMessage;
use crate::channel::{Channel, PublishingScript};
use crate::keys::Keys;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use std::sync::LazyLock;

static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/create_poll.lua")));
static CLOSE: LazyLock<PublishingScript> =
    LazyLock::new(|| PublishingScript::new(include_str!("../lua/close_poll.lua")));
static RESTORE: LazyLock<PublishingScript> =
    LazyLock::new(|| PublishingScript::new(include_str!("../lua/restore_poll.lua")));

/// Creates `poll` under `poll_id`. Returns false when the id is taken.
///
/// # Errors
/// When Redis is unreachable.
pub async fn create<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll_id: &str,
    poll: &NewPoll,
    now: DateTime<Utc>,
) -> RedisResult<bool> {
    let k = keys.poll(poll_id);
    let options = serde_json::to_string(&poll.options).unwrap_or_else(|_| "[]".into());
    let message = PollMessage::Poll {
        poll_id: poll_id.to_string(),
        question: poll.question.clone(),
        options: poll.options.clone(),
        closes_at_ms: poll.closes_at.map(|t| t.timestamp_millis()),
        created_at_ms: now.timestamp_millis(),
        settings: poll.settings,
        queued_at_ms: now.timestamp_millis(),
    };
    let mut invocation = CREATE.key(&k.def);
    invocation
        .key(&k.tally)
        .key(&k.queue)
        .arg(&poll.question)
        .arg(options)
        .arg(
            poll.closes_at
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
        )
        .arg(serde_json::to_string(&message).unwrap_or_default());
    for (field, value) in poll.settings.fields() {
        invocation.arg(field).arg(value);
    }
    let created: i64 = invocation.invoke_async(conn).await?;
    Ok(created == 1)
}

/// How closing went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    AlreadyClosed,
    NotFound,
    Restoring,
}

/// Closes a poll.
///
/// # Errors
/// When Redis is unreachable.
pub async fn close<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<CloseOutcome> {
    let k = keys.poll(poll_id);
    let message = PollMessage::Close {
        poll_id: poll_id.to_string(),
        closed_at_ms: now.timestamp_millis(),
        queued_at_ms: now.timestamp_millis(),
    };
    let outcome: String = CLOSE
        .for_keys(keys)
        .key(&k.def)
        .key(&k.tally)
        .key(&k.queue)
        .key(&k.restored)
        .arg(serde_json::to_string(&message).unwrap_or_default())
        .arg(Channel::Poll(poll_id.to_string()).name(keys))
        .arg(poll_id)
        .invoke_async(conn)
        .await?;
    Ok(match outcome.as_str() {
        "closed" => CloseOutcome::Closed,
        "already_closed" => CloseOutcome::AlreadyClosed,
        "restoring" => CloseOutcome::Restoring,
        _ => CloseOutcome::NotFound,
    })
}

/// A poll as PostgreSQL knows it, to put back into Redis.
#[derive(Debug, Clone)]
pub struct PersistedPoll {
    pub poll_id: String,
    pub question: String,
    pub options: Vec<PollOption>,
    pub closes_at_ms: Option<i64>,
    pub closed: bool,
    pub settings: PollSettings,
    pub seq: i64,
    /// Option id → votes.
    pub tally: Vec<(String, i64)>,
    /// User id → the options of their vote, sorted, comma-separated.
    pub voters: Vec<(String, String)>,
}

/// A restored poll's epoch: the restore's time in epoch ms, so every restore of a poll gets
/// a later epoch than the one before (a created poll has epoch 0).
fn new_epoch() -> i64 {
    Utc::now().timestamp_millis()
}

/// Puts a poll lost by Redis back, unless it exists, with a new epoch. Voters go first, the
/// definition last, so no vote is counted against a half-restored poll. Returns whether it
/// was restored.
///
/// # Errors
/// When Redis is unreachable (the caller retries; a partial restore is completed then).
pub async fn restore<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll: &PersistedPoll,
) -> RedisResult<bool> {
    let k = keys.poll(&poll.poll_id);
    let exists: bool = redis::cmd("EXISTS").arg(&k.def).query_async(conn).await?;
    if exists {
        return Ok(false);
    }
    for slice in poll.voters.chunks(1000) {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&k.voters);
        for (user, options) in slice {
            cmd.arg(user).arg(options);
        }
        let _: i64 = cmd.query_async(conn).await?;
    }
    let tally: serde_json::Map<String, serde_json::Value> = poll
        .tally
        .iter()
        .map(|(o, n)| (o.clone(), (*n).into()))
        .collect();
    // One vote per voter: the total is the number of voters (the tally of a multi-choice
    // poll sums to more).
    let total = poll.voters.len() as i64;
    let mut invocation = RESTORE.for_keys(keys).key(&k.def);
    invocation
        .key(&k.tally)
        .arg(&poll.question)
        .arg(serde_json::to_string(&poll.options).unwrap_or_else(|_| "[]".into()))
        .arg(poll.closes_at_ms.map(|t| t.to_string()).unwrap_or_default())
        .arg(if poll.closed { "1" } else { "0" })
        .arg(poll.seq)
        .arg(total)
        .arg(serde_json::Value::Object(tally).to_string())
        .arg(Channel::Poll(poll.poll_id.clone()).name(keys))
        .arg(serde_json::Value::from(poll.poll_id.as_str()).to_string())
        .arg(new_epoch());
    for (field, value) in poll.settings.fields() {
        invocation.arg(field).arg(value);
    }
    let restored: i64 = invocation.invoke_async(conn).await?;
    Ok(restored == 1)
}
