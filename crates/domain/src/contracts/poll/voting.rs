//! Casting votes: one Lua step (`votes.lua`) that checks, counts, queues and publishes
//! the votes of one vote shard, each as if it were cast alone.

use super::ballot::{Ballot, IDEMPOTENCY_TTL_SECONDS, voter_token::Proof};
use crate::channel::{Channel, PublishingScript};
use crate::keys::{Keys, PollKeys};
use chrono::{DateTime, Utc};
use redis::RedisResult;
use redis::aio::ConnectionLike;
use std::sync::LazyLock;
use uuid::Uuid;

static VOTES: LazyLock<PublishingScript> =
    LazyLock::new(|| PublishingScript::new(include_str!("../lua/votes.lua")));

/// Votes one script call takes at most: Redis serves nobody else while a script runs
/// (about 12 µs a vote), so a full call holds it under a millisecond. Under load a call
/// carries about a dozen.
pub const MAX_VOTES_PER_CALL: usize = 64;

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

/// A vote as a request casts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub poll_id: String,
    pub ballot: Ballot,
    /// What the request's voter token proves (the service verifies it).
    pub proof: Proof,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
}

impl Vote {
    /// A vote without voter token, idempotency key or trace.
    pub fn open(poll_id: impl Into<String>, ballot: Ballot) -> Self {
        Self {
            poll_id: poll_id.into(),
            ballot,
            proof: Proof::Missing,
            idempotency_key: None,
            traceparent: None,
        }
    }
}

/// Casts one vote (see `votes.lua`).
///
/// # Errors
/// When Redis is unreachable; the vote was then not counted, or its answer was lost (a
/// retry with the same idempotency key gets it).
pub async fn vote<C: ConnectionLike + Clone + Send + Sync>(
    conn: &C,
    keys: &Keys,
    vote: &Vote,
    now: DateTime<Utc>,
) -> RedisResult<VoteOutcome> {
    let mut outcomes = vote_all(conn, keys, std::slice::from_ref(vote), now).await;
    outcomes.pop().unwrap_or_else(|| Ok(VoteOutcome::NotFound))
}

/// Casts `votes`, of any polls, in order: one script call per vote shard they touch (and
/// per [`MAX_VOTES_PER_CALL`]), the calls in flight together. Each vote's outcome is what
/// it would have been cast alone right after the votes before it on the same shard.
///
/// A call that fails fails its votes only (none of them was counted, or their answers
/// were lost: a retry with the same idempotency key gets them).
pub async fn vote_all<C: ConnectionLike + Clone + Send + Sync>(
    conn: &C,
    keys: &Keys,
    votes: &[Vote],
    now: DateTime<Utc>,
) -> Vec<RedisResult<VoteOutcome>> {
    let mut by_shard: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (i, vote) in votes.iter().enumerate() {
        by_shard
            .entry(crate::keys::vote_shard(&vote.poll_id))
            .or_default()
            .push(i);
    }
    let calls = by_shard.into_iter().flat_map(|(shard, indices)| {
        indices
            .chunks(MAX_VOTES_PER_CALL)
            .map(|chunk| {
                let mut conn = conn.clone();
                let chunk = chunk.to_vec();
                async move {
                    let cast: Vec<&Vote> = chunk.iter().map(|&i| &votes[i]).collect();
                    let outcomes = call(&mut conn, keys, shard, &cast, now).await;
                    (chunk, outcomes)
                }
            })
            .collect::<Vec<_>>()
    });
    let mut outcomes: Vec<Option<RedisResult<VoteOutcome>>> = vec![None; votes.len()];
    for (chunk, answered) in futures_util::future::join_all(calls).await {
        match answered {
            Ok(answered) => {
                for (i, outcome) in chunk.into_iter().zip(answered) {
                    outcomes[i] = Some(Ok(outcome));
                }
            }
            Err(e) => {
                for i in chunk {
                    outcomes[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Ok(VoteOutcome::NotFound)))
        .collect()
}

/// One call of `votes.lua` for votes of vote shard `shard`: each poll's keys and channel
/// once, then each vote, pointing at its poll by number.
async fn call<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    shard: u16,
    votes: &[&Vote],
    now: DateTime<Utc>,
) -> RedisResult<Vec<VoteOutcome>> {
    let mut polls: Vec<&str> = Vec::new();
    let numbers: Vec<usize> = votes
        .iter()
        .map(|vote| {
            let at = polls
                .iter()
                .position(|p| *p == vote.poll_id)
                .unwrap_or_else(|| {
                    polls.push(&vote.poll_id);
                    polls.len() - 1
                });
            at + 1
        })
        .collect();
    let poll_keys: Vec<PollKeys> = polls.iter().map(|id| keys.poll(id)).collect();
    let Some(first) = poll_keys.first() else {
        return Ok(Vec::new());
    };
    debug_assert!(poll_keys.iter().all(|k| k.shard == shard));
    let mut invocation = VOTES.for_keys(keys).prepare_invoke();
    invocation
        .key(&first.queue)
        .key(&first.restored)
        .arg(now.timestamp_millis())
        .arg(polls.len());
    for (id, k) in polls.iter().zip(&poll_keys) {
        invocation
            .key(&k.def)
            .key(&k.tally)
            .key(&k.voters)
            .arg(Channel::Poll((*id).to_string()).name(keys))
            .arg(serde_json::Value::from(*id).to_string());
    }
    for (vote, number) in votes.iter().zip(numbers) {
        let ttl = match &vote.idempotency_key {
            Some(key) => {
                invocation.key(poll_keys[number - 1].idempotency(key));
                IDEMPOTENCY_TTL_SECONDS
            }
            None => 0,
        };
        invocation
            .arg(number)
            .arg(vote.ballot.choice_list())
            .arg(&vote.ballot.user_id)
            .arg(vote_message_prefix(Uuid::now_v7(), vote, now))
            .arg(ttl)
            .arg(vote.proof.as_str());
    }
    let replies: Vec<String> = invocation.invoke_async(conn).await?;
    Ok(replies
        .chunks(2)
        .map(|pair| outcome(&pair[0], pair.get(1).map_or("", String::as_str)))
        .collect())
}

fn outcome(outcome: &str, body: &str) -> VoteOutcome {
    match outcome {
        "accepted" => VoteOutcome::Accepted(body.to_string()),
        "unchanged" => VoteOutcome::Unchanged(body.to_string()),
        "replay" => VoteOutcome::Replay(body.to_string()),
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
    }
}

/// The fields of a vote's queue message but its sequence number.
#[derive(serde::Serialize)]
struct VoteMessagePrefix<'a> {
    kind: &'static str,
    vote_id: Uuid,
    poll_id: &'a str,
    option_id: Option<&'a String>,
    option_ids: &'a [String],
    user_id: &'a str,
    voted_at_ms: i64,
    queued_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

/// The queue message of a vote, without its sequence number (known only inside the
/// script): `{...,"seq":` — the script appends `N}`.
fn vote_message_prefix(vote_id: Uuid, vote: &Vote, now: DateTime<Utc>) -> String {
    let mut sorted = vote.ballot.option_ids.clone();
    sorted.sort();
    let at = now.timestamp_millis();
    let mut text = serde_json::to_string(&VoteMessagePrefix {
        kind: "vote",
        vote_id,
        poll_id: &vote.poll_id,
        option_id: sorted.first(),
        option_ids: &sorted,
        user_id: &vote.ballot.user_id,
        voted_at_ms: at,
        queued_at_ms: at,
        traceparent: vote.traceparent.as_deref(),
    })
    .unwrap_or_default();
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
        let vote = Vote {
            poll_id: "p\"1".into(),
            ballot: Ballot {
                option_ids: vec!["o2".into(), "o1".into()],
                user_id: "a \"quoted\" user".into(),
            },
            proof: Proof::Missing,
            idempotency_key: None,
            traceparent: Some("00-tp".into()),
        };
        let text = vote_message_prefix(Uuid::nil(), &vote, now()) + "7}";
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
