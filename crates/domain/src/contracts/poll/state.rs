//! A poll's live state in Redis, and the "restored" markers that tell an unknown poll from
//! one Redis lost.

use super::definition::{PollOption, PollSettings, Results};
use crate::keys::{Keys, PollKeys, VOTE_SHARDS};
use chrono::{DateTime, Utc};
use redis::RedisResult;
use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

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
    /// When per-option counts may be shown (every message says; absent: `always`).
    #[serde(default)]
    pub results: Results,
    /// The poll's settings, in snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<PollSettings>,
    /// Set when the counts were left out for this reader (`tally` is then empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl PollState {
    /// Whether someone not known to have voted may see the counts.
    pub fn results_public(&self) -> bool {
        self.closed || self.results == Results::Always
    }

    /// The state as a reader who may not see the counts gets it: the total only.
    #[must_use]
    pub fn without_counts(&self) -> Self {
        Self {
            tally: serde_json::Map::new(),
            hidden: true,
            ..self.clone()
        }
    }
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
        .arg("min_choices")
        .arg("max_choices")
        .arg("results")
        .arg("allow_change")
        .arg("voters")
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
    let settings = PollSettings::from_fields(|name| {
        let at = [
            "min_choices",
            "max_choices",
            "results",
            "allow_change",
            "voters",
        ]
        .iter()
        .position(|f| *f == name)?;
        field(7 + at)
    });
    Ok(PollLookup::Found(PollState {
        poll_id: poll_id.to_string(),
        epoch: field(6).and_then(|s| s.parse().ok()).unwrap_or(0),
        seq,
        total: field(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        closed: field(2).as_deref() == Some("1") || closes_passed,
        tally: tally.into_iter().map(|(o, n)| (o, n.into())).collect(),
        question: field(4),
        options: field(5).and_then(|o| serde_json::from_str(&o).ok()),
        results: settings.results,
        settings: Some(settings),
        hidden: false,
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

    /// Gives the restore lock of shard `shard` back, if `owner` still holds it (a restorer
    /// whose lock expired and was taken over must not release its successor's).
    ///
    /// # Errors
    /// When Redis is unreachable (the lock then expires by itself).
    pub async fn unlock<C: ConnectionLike + Send + Sync>(
        conn: &mut C,
        keys: &Keys,
        shard: u16,
        owner: &str,
    ) -> RedisResult<()> {
        crate::registry::marker::unlock(conn, &keys.vote_shard_restoring(shard), owner).await
    }
}
