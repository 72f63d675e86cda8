//! Casting a vote: one Lua step (`vote.lua`) that checks, counts, queues and publishes.

use super::ballot::{Ballot, IDEMPOTENCY_TTL_SECONDS, voter_token::Proof};
use crate::channel::Channel;
use crate::keys::Keys;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use std::sync::LazyLock;
use uuid::Uuid;

static VOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/vote.lua")));

/// How a vote went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted (or moved); the JSON answer (`{"status","seq","tally"?,"total"}`).
    Accepted(String),
    /// A vote that chose what the voter had already chosen: nothing changed; the answer.
    Unchanged(String),
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
    /// Too few or too many options for this poll: `(min, max)`.
    ChoiceCount(u8, u8),
    /// A `voters: signed` poll and no voter token.
    Unsigned,
    /// A `voters: signed` poll and a token that does not verify.
    BadSignature,
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
    proof: Proof,
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
        .arg(ballot.choice_list())
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
        .arg(proof.as_str())
        .invoke_async(conn)
        .await?;
    Ok(match outcome.as_str() {
        "accepted" => VoteOutcome::Accepted(body),
        "unchanged" => VoteOutcome::Unchanged(body),
        "replay" => VoteOutcome::Replay(body),
        "key_reused" => VoteOutcome::KeyReused,
        "duplicate" => VoteOutcome::Duplicate,
        "restoring" => VoteOutcome::Restoring,
        "closed" => VoteOutcome::Closed,
        "unknown_option" => VoteOutcome::UnknownOption,
        "unsigned" => VoteOutcome::Unsigned,
        "bad_signature" => VoteOutcome::BadSignature,
        "choice_count" => {
            let (min, max) = body.split_once(',').unwrap_or(("1", "1"));
            VoteOutcome::ChoiceCount(min.parse().unwrap_or(1), max.parse().unwrap_or(1))
        }
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
    let mut sorted = ballot.option_ids.clone();
    sorted.sort();
    let mut message = serde_json::json!({
        "kind": "vote",
        "vote_id": vote_id,
        "poll_id": poll_id,
        "option_id": sorted.first(),
        "option_ids": sorted,
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

#[cfg(test)]
mod tests {
    use super::super::message::PollMessage;
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-11-14T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn the_vote_message_prefix_completed_by_the_script_parses() {
        let ballot = Ballot {
            option_ids: vec!["o2".into(), "o1".into()],
            user_id: "a \"quoted\" user".into(),
        };
        let text = vote_message_prefix(Uuid::nil(), "p\"1", &ballot, now(), Some("00-tp")) + "7}";
        let m: PollMessage = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(m.choices(), vec!["o1", "o2"]);
        match m {
            PollMessage::Vote {
                seq,
                user_id,
                poll_id,
                traceparent,
                option_id,
                ..
            } => {
                assert_eq!(
                    (seq, user_id.as_str(), poll_id.as_str(), option_id.as_str()),
                    (7, "a \"quoted\" user", "p\"1", "o1")
                );
                assert_eq!(traceparent.as_deref(), Some("00-tp"));
            }
            other => panic!("not a vote: {other:?}"),
        }
    }

    #[test]
    fn vote_messages_written_before_several_choices_parse() {
        let lua_written = r#"{"kind":"vote","vote_id":"0192e4a0-0000-7000-8000-000000000001","poll_id":"p","option_id":"o1","user_id":"u","seq":3,"voted_at_ms":1763114400000}"#;
        let m: PollMessage = serde_json::from_str(lua_written).expect("parses");
        assert_eq!(m.choices(), vec!["o1"]);
        assert!(matches!(m, PollMessage::Vote { seq: 3, .. }));
    }
}
