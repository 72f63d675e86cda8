//! A user's notification feed: each new item is one `notification` event at the user's
//! position `{epoch, seq}` (never coalesced: every item matters), and read marks send the
//! new unread count as an ephemeral `unread` event.
//!
//! Messages do not arrive per user: `feed_append.lua` publishes one message per chunk of
//! users on their feed shard's channel, and [`dispatch`] hands each user's part to their
//! topic when this gateway has one.

use crate::hub::{Feed, Hub, Offer, Position, SNAPSHOT, Update};
use anyhow::Context;
use domain::channel::Channel;
use domain::keys::Keys;
use domain::notify::feed::{self, FeedLive};
use domain::redis::RedisConn;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use uuid::Uuid;

/// The SSE event of a new feed item.
pub const NOTIFICATION: &str = "notification";
/// The SSE event of a changed unread count (ephemeral).
pub const UNREAD: &str = "unread";
/// Items a snapshot carries (the bell's list; older ones are a REST call away).
pub const SNAPSHOT_ITEMS: usize = 20;
/// Most items replayed to a reconnecting browser.
pub const MAX_REPLAY: usize = 1_000;

/// The event of one feed item.
fn item_update(position: Position, unread: i64, item: &str) -> Update {
    Update::new(
        NOTIFICATION,
        position,
        format!(
            r#"{{"seq":{},"unread":{unread},"notification":{item}}}"#,
            position.seq
        ),
    )
}

/// Routes a feed shard's message to the topics of the users it names.
pub fn dispatch(hub: &Arc<Hub>, payload: &str) {
    match FeedLive::parse(payload) {
        Some(FeedLive::Items { item, users }) => {
            for u in users {
                if let Some(topic) = hub.existing(&Channel::Feed(u.user_id().to_string())) {
                    let position = Position {
                        epoch: u.epoch(),
                        seq: u.seq(),
                    };
                    hub.offer(
                        &topic,
                        Arc::new(item_update(position, u.unread(), item.get())),
                    );
                }
            }
        }
        Some(FeedLive::Read(u)) => {
            if let Some(topic) = hub.existing(&Channel::Feed(u.user_id().to_string())) {
                let mut update = Update::new(
                    UNREAD,
                    Position {
                        epoch: u.epoch(),
                        seq: u.seq(),
                    },
                    format!(r#"{{"unread":{}}}"#, u.unread()),
                );
                update.ephemeral = true;
                topic.announce(Arc::new(update));
            }
        }
        None => tracing::warn!("unreadable feed message"),
    }
}

/// What every user's feed reads Redis with (one per gateway, shared: a feed topic exists
/// per connected user, so what it holds is paid per stream).
pub struct FeedReads {
    pub keys: Keys,
    pub redis: RedisConn,
}

/// The feed of one user's topic (its messages come through [`dispatch`]).
pub struct UserFeed {
    user_id: String,
    reads: Arc<FeedReads>,
}

impl UserFeed {
    pub fn new(user_id: String, reads: Arc<FeedReads>) -> Self {
        Self { user_id, reads }
    }
}

impl Feed for UserFeed {
    fn on_message(&self, _payload: &str) -> Option<Offer> {
        None
    }

    fn resync(&self) -> BoxFuture<'_, anyhow::Result<Option<Update>>> {
        Box::pin(async move {
            let reads = &self.reads;
            let (update, _) = snapshot(&mut reads.redis.clone(), &reads.keys, &self.user_id)
                .await
                .context("reading a user's feed")?;
            Ok(Some(update))
        })
    }
}

/// The feed items of `ids` as feeds show them (an item whose notification Redis no
/// longer holds shows its id only).
async fn items(
    redis: &mut RedisConn,
    keys: &Keys,
    list: &[(i64, String)],
) -> anyhow::Result<Vec<(i64, String)>> {
    let ids: Vec<Uuid> = list.iter().filter_map(|(_, id)| id.parse().ok()).collect();
    let records = feed::records(redis, keys, &ids).await?;
    Ok(list
        .iter()
        .zip(records)
        .map(|((seq, id), record)| {
            let json = record.map_or_else(
                || serde_json::json!({ "id": id, "expired": true }).to_string(),
                |r| r.feed_json().to_string(),
            );
            (*seq, json)
        })
        .collect())
}

/// The user's feed now as a snapshot: unread count, position, newest items.
///
/// # Errors
/// When Redis is unreachable.
pub async fn snapshot(
    redis: &mut RedisConn,
    keys: &Keys,
    user_id: &str,
) -> anyhow::Result<(Update, feed::FeedState)> {
    let state = feed::state(redis, keys, user_id).await?;
    let newest = feed::newest(redis, keys, user_id, SNAPSHOT_ITEMS).await?;
    let seqs: Vec<i64> = newest.iter().map(|(seq, _)| *seq).collect();
    let read = feed::read_flags(redis, keys, user_id, &seqs, state.read_upto).await?;
    let list: Vec<String> = items(redis, keys, &newest)
        .await?
        .into_iter()
        .zip(read)
        .map(|((seq, json), read)| {
            format!(r#"{{"seq":{seq},"read":{read},"notification":{json}}}"#)
        })
        .collect();
    let position = Position {
        epoch: state.epoch,
        seq: state.seq,
    };
    let data = format!(
        r#"{{"epoch":{},"seq":{},"unread":{},"items":[{}]}}"#,
        state.epoch,
        state.seq,
        state.unread,
        list.join(",")
    );
    Ok((Update::new(SNAPSHOT, position, data), state))
}

/// What a browser resuming at `last_event` gets first: the items it missed (when the feed
/// still holds every one of them, in the same epoch), else a snapshot. Returns the updates
/// and the position the browser is taken to hold.
///
/// # Errors
/// When Redis is unreachable.
pub async fn catch_up(
    redis: &mut RedisConn,
    keys: &Keys,
    user_id: &str,
    last_event: Option<Position>,
) -> anyhow::Result<(Vec<Arc<Update>>, Position)> {
    let state = feed::state(redis, keys, user_id).await?;
    if let Some(k) = last_event
        && k.epoch == state.epoch
        && k.seq <= state.seq
    {
        if k.seq == state.seq {
            return Ok((Vec::new(), k));
        }
        let missed = feed::items_after(redis, keys, user_id, k.seq, MAX_REPLAY).await?;
        let complete = missed.first().is_some_and(|(seq, _)| *seq == k.seq + 1)
            && missed.len() as i64 == state.seq - k.seq;
        if complete {
            let updates = items(redis, keys, &missed)
                .await?
                .into_iter()
                .map(|(seq, json)| {
                    Arc::new(item_update(
                        Position {
                            epoch: state.epoch,
                            seq,
                        },
                        state.unread,
                        &json,
                    ))
                })
                .collect();
            return Ok((updates, k));
        }
    }
    let (update, _) = snapshot(redis, keys, user_id).await?;
    Ok((vec![Arc::new(update)], Position::START))
}
