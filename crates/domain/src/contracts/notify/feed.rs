//! Users' in-app feeds in Redis: appending a notification to many feeds
//! (`feed_append.lua`), read marks (`feed_read.lua`), and what a stream reads to catch a
//! browser up.
//!
//! A feed is the user's newest [`FEED_KEEP`] notification ids, scored by the user's own
//! sequence number, and a state: `epoch` (when this feed began in this Redis: a Redis
//! that lost its data starts new feeds at a new epoch, so a browser can tell), `seq`,
//! `read_upto` and `unread`. PostgreSQL holds every item for good (`feed_items`); Redis
//! holds what live streams need.
//!
//! Live messages go out on the feed shard's channel ([`crate::channel::Channel::FeedShard`]),
//! one per appended chunk of users, and are read back with [`FeedLive::parse`].

use super::model::NotificationRecord;
use crate::channel::{Channel, PublishingScript};
use crate::keys::Keys;
use redis::RedisResult;
use redis::aio::ConnectionLike;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::LazyLock;
use uuid::Uuid;

static APPEND: LazyLock<PublishingScript> =
    LazyLock::new(|| PublishingScript::new(include_str!("../lua/feed_append.lua")));
static READ: LazyLock<PublishingScript> =
    LazyLock::new(|| PublishingScript::new(include_str!("../lua/feed_read.lua")));

/// Items a feed keeps in Redis (older ones are in PostgreSQL only).
pub const FEED_KEEP: usize = 1_000;
/// Feed items appended by one script call (users × notifications; a bound on how long
/// one call holds Redis). A call takes at least one notification.
pub const APPEND_CHUNK: usize = 1_000;

/// Where an item landed in a user's feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPosition {
    pub epoch: i64,
    pub seq: i64,
}

/// Appends notification `record` to the feeds of `users`, who must all be of one feed
/// shard, and publishes the new items. Returns each user's position of the item (the
/// existing one for a user who had it already).
///
/// # Errors
/// When Redis is unreachable (then some feeds may hold the item: appending again is safe).
pub async fn append<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    record: &NotificationRecord,
    users: &[&str],
    now_ms: i64,
) -> RedisResult<Vec<FeedPosition>> {
    Ok(append_many(conn, keys, &[record], users, now_ms)
        .await?
        .pop()
        .unwrap_or_default())
}

/// Appends notifications `records`, in order, to the feeds of `users`, who must all be of
/// one feed shard, in one script call, and publishes the new items (a message per
/// notification). Returns, per record, each user's position of its item (the existing
/// one for a user who had it already). Keep `records.len() * users.len()` near
/// [`APPEND_CHUNK`].
///
/// # Errors
/// When Redis is unreachable (then some feeds may hold some items: appending again is
/// safe, and keeps their order).
pub async fn append_many<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    records: &[&NotificationRecord],
    users: &[&str],
    now_ms: i64,
) -> RedisResult<Vec<Vec<FeedPosition>>> {
    let Some(first) = users.first() else {
        return Ok(vec![Vec::new(); records.len()]);
    };
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let shard = keys.feed(first).shard;
    let mut invocation = APPEND.for_keys(keys).prepare_invoke();
    for user in users {
        let k = keys.feed(user);
        debug_assert_eq!(k.shard, shard, "one feed shard per call");
        invocation.key(k.items).key(k.state).key(k.read);
    }
    invocation
        .arg(now_ms)
        .arg(FEED_KEEP)
        .arg(Channel::FeedShard(shard).name(keys))
        .arg(users.len());
    for user in users {
        invocation.arg(serde_json::Value::from(*user).to_string());
    }
    for record in records {
        invocation
            .arg(record.id.to_string())
            .arg(record.feed_json().to_string());
    }
    let flat: Vec<String> = invocation.invoke_async(conn).await?;
    let positions: Vec<FeedPosition> = flat
        .chunks_exact(2)
        .map(|p| FeedPosition {
            epoch: p[0].parse().unwrap_or(0),
            seq: p[1].parse().unwrap_or(0),
        })
        .collect();
    Ok(positions
        .chunks(users.len())
        .map(<[FeedPosition]>::to_vec)
        .collect())
}

/// Which items a read mark names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadMark {
    /// These notifications.
    Ids(Vec<Uuid>),
    /// Everything up to and including this notification.
    UpTo(Uuid),
    /// Everything in the feed.
    All,
}

/// Marks items of `user_id`'s feed read. Returns (items newly read, unread after).
///
/// # Errors
/// When Redis is unreachable (nothing changed then, or the change is complete).
pub async fn mark_read<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    user_id: &str,
    mark: &ReadMark,
    now_ms: i64,
) -> RedisResult<(i64, i64)> {
    let k = keys.feed(user_id);
    let mut message = serde_json::json!({
        "kind": "read",
        "user_id": user_id,
        "at_ms": now_ms,
        "queued_at_ms": now_ms,
    })
    .to_string();
    message.pop();
    let mut invocation = READ.for_keys(keys).prepare_invoke();
    invocation
        .key(&k.items)
        .key(&k.state)
        .key(&k.read)
        .key(&keys.feed_queue(k.shard).queue)
        .arg(match mark {
            ReadMark::Ids(_) => "ids",
            ReadMark::UpTo(_) => "up_to",
            ReadMark::All => "all",
        })
        .arg(Channel::FeedShard(k.shard).name(keys))
        .arg(serde_json::Value::from(user_id).to_string())
        .arg(message);
    match mark {
        ReadMark::Ids(ids) => {
            for id in ids {
                invocation.arg(id.to_string());
            }
        }
        ReadMark::UpTo(id) => {
            invocation.arg(id.to_string());
        }
        ReadMark::All => {}
    }
    let (newly, unread): (i64, i64) = invocation.invoke_async(conn).await?;
    Ok((newly, unread))
}

/// A read mark as queued for PostgreSQL (written by `feed_read.lua`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReadMessage {
    pub user_id: String,
    pub epoch: i64,
    pub at_ms: i64,
    /// Items read one by one.
    #[serde(default)]
    pub seqs: Vec<i64>,
    /// Everything of this epoch up to this sequence number (and every older epoch).
    #[serde(default)]
    pub up_to: Option<i64>,
}

/// A user's feed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedState {
    /// 0 for a feed that has never held an item.
    pub epoch: i64,
    pub seq: i64,
    pub unread: i64,
    /// Everything up to this sequence number is read.
    pub read_upto: i64,
}

/// The state of `user_id`'s feed.
///
/// # Errors
/// When Redis is unreachable.
pub async fn state<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    user_id: &str,
) -> RedisResult<FeedState> {
    let (epoch, seq, unread, read_upto): (Option<i64>, Option<i64>, Option<i64>, Option<i64>) =
        redis::cmd("HMGET")
            .arg(keys.feed(user_id).state)
            .arg("epoch")
            .arg("seq")
            .arg("unread")
            .arg("read_upto")
            .query_async(conn)
            .await?;
    Ok(FeedState {
        epoch: epoch.unwrap_or(0),
        seq: seq.unwrap_or(0),
        unread: unread.unwrap_or(0).max(0),
        read_upto: read_upto.unwrap_or(0),
    })
}

/// Whether each of `seqs` of `user_id`'s feed is read (at most `read_upto`, or read one
/// by one).
///
/// # Errors
/// When Redis is unreachable.
pub async fn read_flags<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    user_id: &str,
    seqs: &[i64],
    read_upto: i64,
) -> RedisResult<Vec<bool>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let one_by_one: Vec<bool> = redis::cmd("SMISMEMBER")
        .arg(keys.feed(user_id).read)
        .arg(seqs)
        .query_async(conn)
        .await?;
    Ok(seqs
        .iter()
        .zip(one_by_one)
        .map(|(seq, read)| *seq <= read_upto || read)
        .collect())
}

/// Up to `max` items of `user_id`'s feed after sequence number `after`, oldest first:
/// (sequence number, notification id).
///
/// # Errors
/// When Redis is unreachable.
pub async fn items_after<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    user_id: &str,
    after: i64,
    max: usize,
) -> RedisResult<Vec<(i64, String)>> {
    let flat: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.feed(user_id).items)
        .arg(format!("({after}"))
        .arg("+inf")
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(max)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    Ok(flat.into_iter().map(|(id, s)| (s as i64, id)).collect())
}

/// The newest `n` items of `user_id`'s feed, newest first.
///
/// # Errors
/// When Redis is unreachable.
pub async fn newest<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    user_id: &str,
    n: usize,
) -> RedisResult<Vec<(i64, String)>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let flat: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(keys.feed(user_id).items)
        .arg(0)
        .arg(n - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    Ok(flat.into_iter().map(|(id, s)| (s as i64, id)).collect())
}

/// The records of `ids` (in order; `None` for one no longer in Redis).
///
/// # Errors
/// When Redis is unreachable.
pub async fn records<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    ids: &[Uuid],
) -> RedisResult<Vec<Option<NotificationRecord>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("GET")
            .arg(keys.notification(super::model::shard_of(id), &id.to_string()));
    }
    let raw: Vec<Option<String>> = pipe.query_async(conn).await?;
    Ok(raw
        .into_iter()
        .map(|r| r.and_then(|r| serde_json::from_str(&r).ok()))
        .collect())
}

/// Where a user's feed stands after a live message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserPosition(pub String, pub i64, pub i64, pub i64);

impl UserPosition {
    pub fn user_id(&self) -> &str {
        &self.0
    }
    pub fn epoch(&self) -> i64 {
        self.1
    }
    pub fn seq(&self) -> i64 {
        self.2
    }
    pub fn unread(&self) -> i64 {
        self.3
    }
}

/// A message of a feed shard's channel.
#[derive(Debug)]
pub enum FeedLive {
    /// One notification appended to these users' feeds (`item` as feeds show it).
    Items {
        item: Box<RawValue>,
        users: Vec<UserPosition>,
    },
    /// A user's read marks changed their unread count.
    Read(UserPosition),
}

#[derive(Deserialize)]
struct Wire {
    n: Option<Box<RawValue>>,
    u: Option<Vec<UserPosition>>,
    r: Option<UserPosition>,
}

impl FeedLive {
    /// Reads a message published by `feed_append.lua` or `feed_read.lua`.
    pub fn parse(payload: &str) -> Option<Self> {
        let wire: Wire = serde_json::from_str(payload).ok()?;
        match (wire.n, wire.u, wire.r) {
            (Some(item), Some(users), None) => Some(Self::Items { item, users }),
            (None, None, Some(r)) => Some(Self::Read(r)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_messages_parse() {
        let items = r#"{"n":{"id":"x","title":"t"},"u":[["u\"1",1764,3,2],["u2",1764,1,1]]}"#;
        match FeedLive::parse(items) {
            Some(FeedLive::Items { item, users }) => {
                assert!(item.get().contains("\"title\""));
                assert_eq!(users[0].user_id(), "u\"1");
                assert_eq!((users[0].seq(), users[0].unread()), (3, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            FeedLive::parse(r#"{"r":["u",1,5,0]}"#),
            Some(FeedLive::Read(p)) if p.seq() == 5
        ));
        assert!(FeedLive::parse("{}").is_none());
    }

    #[test]
    fn read_messages_as_the_script_writes_them_parse() {
        let m: ReadMessage = serde_json::from_str(
            r#"{"kind":"read","user_id":"u","at_ms":5,"queued_at_ms":5,"epoch":7,"seqs":[1,3]}"#,
        )
        .expect("parses");
        assert_eq!((m.epoch, m.seqs.len(), m.up_to), (7, 2, None));
        let m: ReadMessage = serde_json::from_str(
            r#"{"kind":"read","user_id":"u","at_ms":5,"queued_at_ms":5,"epoch":7,"up_to":9}"#,
        )
        .expect("parses");
        assert_eq!(m.up_to, Some(9));
    }
}
