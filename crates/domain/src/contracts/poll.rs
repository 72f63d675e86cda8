//! Polls and votes: request validation, the queue messages the worker stores, and the Redis
//! operations (Lua scripts) that make voting atomic.
//!
//! Redis holds the hot state (definition, tally, voters); PostgreSQL the durable record.
//! Every change is one script: it checks, changes the state, queues a message for the
//! worker in the poll's shard queue, and publishes the new state for live watchers.

use crate::channel::Channel;
use crate::keys::{Keys, PollKeys, VOTE_SHARDS};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use uuid::Uuid;

pub const MAX_QUESTION_CHARS: usize = 500;
pub const MAX_LABEL_CHARS: usize = 200;
pub const MIN_OPTIONS: usize = 2;
pub const MAX_OPTIONS: usize = 20;
pub const MAX_USER_ID_CHARS: usize = 255;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// How long the answer to a vote sent with an `Idempotency-Key` is kept for retries.
pub const IDEMPOTENCY_TTL_SECONDS: u64 = 24 * 3600;

static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_poll.lua")));
static VOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/vote.lua")));
static CLOSE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/close_poll.lua")));
static RESTORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/restore_poll.lua")));

/// One answer of a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollOption {
    pub id: String,
    pub label: String,
}

/// A validated `POST /v1/polls` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoll {
    pub question: String,
    pub options: Vec<PollOption>,
    pub closes_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct RawNewPoll {
    question: Option<serde_json::Value>,
    options: Option<serde_json::Value>,
    closes_at: Option<serde_json::Value>,
}

/// Validates a poll definition, listing every problem. Option ids are `o1`, `o2`, ... in
/// the order given.
///
/// # Errors
/// The list of problems (client-facing messages).
pub fn parse_new_poll(body: &[u8], now: DateTime<Utc>) -> Result<NewPoll, Vec<String>> {
    let raw: RawNewPoll =
        serde_json::from_slice(body).map_err(|e| vec![format!("invalid JSON: {e}")])?;
    let mut errors = Vec::new();
    let question = match raw.question {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => {
            check_text(&q, "question", MAX_QUESTION_CHARS, &mut errors);
            q
        }
        _ => {
            errors.push("question is required and must be a non-empty string".into());
            String::new()
        }
    };
    let mut labels: Vec<String> = Vec::new();
    match raw.options {
        Some(serde_json::Value::Array(items)) => {
            if !(MIN_OPTIONS..=MAX_OPTIONS).contains(&items.len()) {
                errors.push(format!(
                    "options must have between {MIN_OPTIONS} and {MAX_OPTIONS} entries"
                ));
            }
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    serde_json::Value::String(label) if !label.trim().is_empty() => {
                        check_text(
                            &label,
                            &format!("options[{i}]"),
                            MAX_LABEL_CHARS,
                            &mut errors,
                        );
                        if labels.contains(&label) {
                            errors.push(format!("options[{i}] repeats another option"));
                        }
                        labels.push(label);
                    }
                    _ => errors.push(format!("options[{i}] must be a non-empty string")),
                }
            }
        }
        _ => errors.push("options is required and must be an array of strings".into()),
    }
    let closes_at = match raw.closes_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) if t.with_timezone(&Utc) > now => Some(t.with_timezone(&Utc)),
            Ok(_) => {
                errors.push("closes_at must be in the future".into());
                None
            }
            Err(_) => {
                errors.push("closes_at must be an RFC 3339 timestamp with a zone".into());
                None
            }
        },
        Some(_) => {
            errors.push("closes_at must be an RFC 3339 timestamp with a zone".into());
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let options = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| PollOption {
            id: format!("o{}", i + 1),
            label,
        })
        .collect();
    Ok(NewPoll {
        question,
        options,
        closes_at,
    })
}

fn check_text(s: &str, name: &str, max: usize, errors: &mut Vec<String>) {
    if s.chars().count() > max {
        errors.push(format!("{name} must be at most {max} characters"));
    }
    if s.contains('\0') {
        errors.push(format!("{name} must not contain NUL characters"));
    }
}

/// A validated vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    pub option_id: String,
    pub user_id: String,
}

/// Validates a vote's `option_id` and `user_id` (wherever they came from).
///
/// # Errors
/// The list of problems, naming the fields as `option_name` and `user_name`.
pub fn check_ballot(
    option_id: Option<&serde_json::Value>,
    user_id: Option<&serde_json::Value>,
    option_name: &str,
    user_name: &str,
) -> Result<Ballot, Vec<String>> {
    let mut errors = Vec::new();
    let mut text = |v: Option<&serde_json::Value>, name: &str, max: usize| match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => {
            check_text(s, name, max, &mut errors);
            s.clone()
        }
        _ => {
            errors.push(format!("{name} is required and must be a non-empty string"));
            String::new()
        }
    };
    let option_id = text(option_id, option_name, MAX_LABEL_CHARS);
    let user_id = text(user_id, user_name, MAX_USER_ID_CHARS);
    if errors.is_empty() {
        Ok(Ballot { option_id, user_id })
    } else {
        Err(errors)
    }
}

/// Checks an `Idempotency-Key` header value.
///
/// # Errors
/// A client-facing message when it is empty, too long or not visible ASCII.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
        ));
    }
    Ok(())
}

/// What the worker reads from a vote shard queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PollMessage {
    /// A poll was created.
    Poll {
        poll_id: String,
        question: String,
        options: Vec<PollOption>,
        closes_at_ms: Option<i64>,
        created_at_ms: i64,
        /// See [`crate::queue::queued_at_ms`].
        #[serde(default)]
        queued_at_ms: i64,
    },
    /// A poll was closed.
    Close {
        poll_id: String,
        closed_at_ms: i64,
        #[serde(default)]
        queued_at_ms: i64,
    },
    /// A vote was counted (written by `vote.lua`).
    Vote {
        vote_id: Uuid,
        poll_id: String,
        option_id: String,
        user_id: String,
        seq: i64,
        voted_at_ms: i64,
        #[serde(default)]
        queued_at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
}

/// How a vote went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; the JSON answer (`{"status","seq","tally","total"}`).
    Accepted(String),
    /// A retry of an accepted vote with the same idempotency key; its original answer.
    Replay(String),
    /// The idempotency key answered another vote (another user or option): nothing counted.
    KeyReused,
    Duplicate,
    NotFound,
    /// Redis may have lost the poll and the worker has not restored it yet.
    Restoring,
    Closed,
    UnknownOption,
}

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
        queued_at_ms: now.timestamp_millis(),
    };
    let created: i64 = CREATE
        .key(&k.def)
        .key(&k.tally)
        .key(&k.queue)
        .arg(&poll.question)
        .arg(options)
        .arg(
            poll.closes_at
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
        )
        .arg(serde_json::to_string(&message).unwrap_or_default())
        .invoke_async(conn)
        .await?;
    Ok(created == 1)
}

/// Casts a vote (see `vote.lua`).
///
/// # Errors
/// When Redis is unreachable; the vote was then not counted, or its answer was lost (a
/// retry with the same idempotency key gets it).
#[allow(clippy::too_many_arguments)]
pub async fn vote<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll_id: &str,
    ballot: &Ballot,
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> RedisResult<VoteOutcome> {
    let k = keys.poll(poll_id);
    let idem_key = idempotency_key.map_or_else(|| k.def.clone(), |key| k.idempotency(key));
    let ttl = if idempotency_key.is_some() {
        IDEMPOTENCY_TTL_SECONDS
    } else {
        0
    };
    let vote_id = Uuid::now_v7();
    let (outcome, body): (String, String) = VOTE
        .key(&k.def)
        .key(&k.tally)
        .key(&k.voters)
        .key(&k.queue)
        .key(&k.restored)
        .key(idem_key)
        .arg(&ballot.option_id)
        .arg(&ballot.user_id)
        .arg(now.timestamp_millis())
        .arg(vote_message_prefix(
            vote_id,
            poll_id,
            ballot,
            now,
            traceparent,
        ))
        .arg(ttl)
        .arg(Channel::Poll(poll_id.to_string()).name(keys))
        .arg(serde_json::Value::from(poll_id).to_string())
        .invoke_async(conn)
        .await?;
    Ok(match outcome.as_str() {
        "accepted" => VoteOutcome::Accepted(body),
        "replay" => VoteOutcome::Replay(body),
        "key_reused" => VoteOutcome::KeyReused,
        "duplicate" => VoteOutcome::Duplicate,
        "restoring" => VoteOutcome::Restoring,
        "closed" => VoteOutcome::Closed,
        "unknown_option" => VoteOutcome::UnknownOption,
        _ => VoteOutcome::NotFound,
    })
}

/// The queue message of a vote, without its sequence number (known only inside the
/// script): `{...,"seq":` — the script appends `N}`.
fn vote_message_prefix(
    vote_id: Uuid,
    poll_id: &str,
    ballot: &Ballot,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> String {
    let mut message = serde_json::json!({
        "kind": "vote",
        "vote_id": vote_id,
        "poll_id": poll_id,
        "option_id": ballot.option_id,
        "user_id": ballot.user_id,
        "voted_at_ms": now.timestamp_millis(),
        "queued_at_ms": now.timestamp_millis(),
    });
    if let Some(tp) = traceparent {
        message["traceparent"] = tp.into();
    }
    let mut text = message.to_string();
    text.pop(); // the closing brace
    text.push_str(",\"seq\":");
    text
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
    pub seq: i64,
    /// Option id → votes.
    pub tally: Vec<(String, i64)>,
    /// User id → option id.
    pub voters: Vec<(String, String)>,
}

/// A restored poll's epoch: the restore's time in epoch ms, so every restore of a poll gets
/// a later epoch than the one before (a created poll has epoch 0).
fn new_epoch() -> i64 {
    Utc::now().timestamp_millis()
}

/// Puts a poll lost by Redis back, unless it exists, with a new epoch. Voters go first, the definition last,
/// so no vote is counted against a half-restored poll. Returns whether it was restored.
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
        for (user, option) in slice {
            cmd.arg(user).arg(option);
        }
        let _: i64 = cmd.query_async(conn).await?;
    }
    let tally: serde_json::Map<String, serde_json::Value> = poll
        .tally
        .iter()
        .map(|(o, n)| (o.clone(), (*n).into()))
        .collect();
    let total: i64 = poll.tally.iter().map(|(_, n)| n).sum();
    let restored: i64 = RESTORE
        .key(&k.def)
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
        .arg(new_epoch())
        .invoke_async(conn)
        .await?;
    Ok(restored == 1)
}

/// The live state of a poll in Redis (snapshots for live streams).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollState {
    pub poll_id: String,
    /// 0 for a poll as created; a new value each time the poll is restored from PostgreSQL
    /// after Redis lost it. Sequence numbers compare only within one epoch.
    #[serde(default)]
    pub epoch: i64,
    pub seq: i64,
    pub tally: serde_json::Map<String, serde_json::Value>,
    pub total: i64,
    pub closed: bool,
    /// Present in snapshots (not in the per-vote messages, which carry only counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<PollOption>>,
}

/// What Redis says of a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum PollLookup {
    Found(PollState),
    /// Unknown: Redis has every poll of its shard (the shard's restored marker is set).
    NotFound,
    /// Not in Redis, and Redis may have lost it: the worker has not restored its shard yet.
    Restoring,
}

/// Reads a poll's live state, telling "unknown" from "maybe lost" by the shard's restored
/// marker (one round trip).
///
/// # Errors
/// When Redis is unreachable.
pub async fn lookup<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<PollLookup> {
    let k: PollKeys = keys.poll(poll_id);
    let (def, tally, restored): (Vec<Option<String>>, Vec<(String, i64)>, bool) = redis::pipe()
        .cmd("HMGET")
        .arg(&k.def)
        .arg("seq")
        .arg("total")
        .arg("closed")
        .arg("closes_at_ms")
        .arg("question")
        .arg("options")
        .arg("epoch")
        .cmd("HGETALL")
        .arg(&k.tally)
        .cmd("EXISTS")
        .arg(&k.restored)
        .query_async(conn)
        .await?;
    let field = |i: usize| def.get(i).cloned().flatten();
    let Some(seq) = field(0).and_then(|s| s.parse().ok()) else {
        return Ok(if restored {
            PollLookup::NotFound
        } else {
            PollLookup::Restoring
        });
    };
    let closes_passed = field(3)
        .and_then(|s| s.parse::<i64>().ok())
        .is_some_and(|t| now.timestamp_millis() >= t);
    Ok(PollLookup::Found(PollState {
        poll_id: poll_id.to_string(),
        epoch: field(6).and_then(|s| s.parse().ok()).unwrap_or(0),
        seq,
        total: field(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        closed: field(2).as_deref() == Some("1") || closes_passed,
        tally: tally.into_iter().map(|(o, n)| (o, n.into())).collect(),
        question: field(4),
        options: field(5).and_then(|o| serde_json::from_str(&o).ok()),
    }))
}

/// Reads a poll's live state; `None` when Redis does not have the poll.
///
/// # Errors
/// When Redis is unreachable.
pub async fn read_state<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    poll_id: &str,
    now: DateTime<Utc>,
) -> RedisResult<Option<PollState>> {
    Ok(match lookup(conn, keys, poll_id, now).await? {
        PollLookup::Found(state) => Some(state),
        PollLookup::NotFound | PollLookup::Restoring => None,
    })
}

/// The "restored" marker of each vote shard: set by whoever restored the shard's polls
/// from PostgreSQL (or found nothing to restore). While it is missing, the vote and close
/// scripts and [`lookup`] answer "restoring" for polls they do not find.
pub mod shard_marker {
    use super::{ConnectionLike, Keys, RedisResult, VOTE_SHARDS};

    /// Whether shard `shard`'s polls are all in Redis.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn is_restored<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        shard: u16,
    ) -> RedisResult<bool> {
        redis::cmd("EXISTS")
            .arg(keys.vote_shard_restored(shard))
            .query_async(conn)
            .await
    }

    /// Says shard `shard`'s polls are all in Redis.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn set_restored<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        shard: u16,
    ) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(keys.vote_shard_restored(shard))
            .arg("1")
            .query_async(conn)
            .await
    }

    /// Sets every shard's marker (a fresh deployment, or tests).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn set_all_restored<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
    ) -> RedisResult<()> {
        for shard in 0..VOTE_SHARDS {
            set_restored(conn, keys, shard).await?;
        }
        Ok(())
    }

    /// Takes the lock of restoring shard `shard` for `owner`, for `ttl_ms` at most.
    /// Returns false when someone else holds it.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn lock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        shard: u16,
        owner: &str,
        ttl_ms: u64,
    ) -> RedisResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(keys.vote_shard_restoring(shard))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(conn)
            .await?;
        Ok(taken.is_some())
    }

    /// Gives the restore lock of shard `shard` back.
    ///
    /// # Errors
    /// When Redis is unreachable (the lock then expires by itself).
    pub async fn unlock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        shard: u16,
    ) -> RedisResult<()> {
        redis::cmd("DEL")
            .arg(keys.vote_shard_restoring(shard))
            .query_async(conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-14T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn a_valid_poll_gets_option_ids_in_order() {
        let p = parse_new_poll(
            br#"{"question":"Tabs?","options":["yes","no"],"closes_at":"2030-01-01T00:00:00Z"}"#,
            now(),
        )
        .expect("valid");
        assert_eq!(
            p.options.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["o1", "o2"]
        );
        assert!(p.closes_at.is_some());
    }

    #[test]
    fn every_problem_of_a_poll_is_listed() {
        let errors = parse_new_poll(
            br#"{"question":"","options":["a","a",""],"closes_at":"2020-01-01T00:00:00Z"}"#,
            now(),
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            vec![
                "question is required and must be a non-empty string",
                "options[1] repeats another option",
                "options[2] must be a non-empty string",
                "closes_at must be in the future",
            ]
        );
        let one =
            parse_new_poll(br#"{"question":"q","options":["a"]}"#, now()).expect_err("one option");
        assert_eq!(one, vec!["options must have between 2 and 20 entries"]);
        let many: Vec<String> = (0..21).map(|i| format!("\"{i}\"")).collect();
        let body = format!(r#"{{"question":"q","options":[{}]}}"#, many.join(","));
        assert!(parse_new_poll(body.as_bytes(), now()).is_err());
    }

    #[test]
    fn ballots_need_both_fields() {
        let e = check_ballot(None, Some(&serde_json::json!(5)), "option_id", "user_id")
            .expect_err("bad");
        assert_eq!(
            e,
            vec![
                "option_id is required and must be a non-empty string",
                "user_id is required and must be a non-empty string"
            ]
        );
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(check_idempotency_key("retry-123").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn the_vote_message_prefix_completed_by_the_script_parses() {
        let ballot = Ballot {
            option_id: "o1".into(),
            user_id: "a \"quoted\" user".into(),
        };
        let text = vote_message_prefix(Uuid::nil(), "p\"1", &ballot, now(), Some("00-tp")) + "7}";
        let m: PollMessage = serde_json::from_str(&text).expect("valid JSON");
        match m {
            PollMessage::Vote {
                seq,
                user_id,
                poll_id,
                traceparent,
                ..
            } => {
                assert_eq!(
                    (seq, user_id.as_str(), poll_id.as_str()),
                    (7, "a \"quoted\" user", "p\"1")
                );
                assert_eq!(traceparent.as_deref(), Some("00-tp"));
            }
            other => panic!("not a vote: {other:?}"),
        }
    }

    #[test]
    fn vote_messages_written_by_lua_parse() {
        let lua_written = r#"{"kind":"vote","vote_id":"0192e4a0-0000-7000-8000-000000000001","poll_id":"p","option_id":"o1","user_id":"u","seq":3,"voted_at_ms":1763114400000}"#;
        let m: PollMessage = serde_json::from_str(lua_written).expect("parses");
        assert!(matches!(m, PollMessage::Vote { seq: 3, .. }));
    }
}
