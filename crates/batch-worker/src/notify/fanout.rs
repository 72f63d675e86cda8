//! The Redis half of a fan-out: who the audience is, the in-app copies in their feeds
//! (with their live publication), and the deliveries of the other channels, queued once
//! per group. Every step may run again after a crash and changes nothing the second
//! time: a feed keeps one item per notification, a delivery's id is derived from its
//! notification, channel and target, and a group of deliveries is queued behind a marker.
//! A feed keeps only its newest items, so a notification already stored in PostgreSQL is
//! not appended again at all ([`super::store::already_stored`]): its item may have left
//! the feed since, and would come back as new.

use super::directory::EndpointDirectory;
use domain::keys::Keys;
use domain::notify::delivery::Delivery;
use domain::notify::delivery_queue::{self, push_group};
use domain::notify::feed::{self, APPEND_CHUNK, FeedPosition};
use domain::notify::{ChannelKind, Notification, NotificationRecord, Recipient, topics};
use domain::redis::RedisConn;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

/// Feed chunks appended at once (pipelined on the shared connection).
const APPEND_PARALLELISM: usize = 8;

/// What the Redis half of a fan-out produced, for PostgreSQL.
#[derive(Debug, Default)]
pub struct FannedOut {
    pub record: Option<NotificationRecord>,
    /// The in-app copies: user, and the item's place in their feed.
    pub feed: Vec<(String, FeedPosition)>,
    /// Deliveries on the webhook, email and SMS channels.
    pub deliveries: Vec<Delivery>,
    /// Recipients a channel could not reach (no address), by channel.
    pub skipped: BTreeMap<&'static str, u64>,
    /// The audience's size.
    pub audience: usize,
}

/// The users a notification goes to.
///
/// # Errors
/// When Redis is unreachable.
pub async fn audience(
    redis: &mut RedisConn,
    keys: &Keys,
    n: &Notification,
) -> anyhow::Result<Vec<Recipient>> {
    match &n.topic {
        Some(topic) => Ok(topics::subscribers(redis, keys, topic).await?),
        None => Ok(n.recipients.clone()),
    }
}

/// Users and where an item landed in their feeds.
pub type Placed = Vec<(String, FeedPosition)>;

/// Appends notifications `records` (in order) to the feeds of every one of `users`, by
/// feed shard, in chunks of about [`APPEND_CHUNK`] items: a trigger's batch to its one
/// subscriber is a script call per thousand notifications, not one per notification.
/// Returns, per record, the users and where its item landed.
///
/// A user's items must land in the records' order: each chunk of users takes the records
/// group after group, one call at a time; the chunks (other users) go on at once.
///
/// # Errors
/// When Redis fails (some feeds may hold some items: running again is safe).
pub async fn append_to_feeds(
    redis: &RedisConn,
    keys: &Keys,
    records: &[&NotificationRecord],
    users: &[Recipient],
    now_ms: i64,
) -> anyhow::Result<Vec<Placed>> {
    let mut by_shard: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for u in users {
        by_shard
            .entry(domain::keys::feed_shard(&u.user_id))
            .or_default()
            .push(&u.user_id);
    }
    let chunks: Vec<&[&str]> = by_shard
        .values()
        .flat_map(|users| users.chunks(APPEND_CHUNK))
        .collect();
    // Boxed futures, not a closure over the stream: a closure here is not general enough
    // over lifetimes for the lane's `Send` future.
    let mut appends: Vec<BoxFuture<'_, anyhow::Result<Vec<Placed>>>> =
        Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let mut redis = redis.clone();
        let per_call = (APPEND_CHUNK / chunk.len()).max(1);
        appends.push(Box::pin(async move {
            let mut placed = Vec::with_capacity(records.len());
            for group in records.chunks(per_call) {
                for positions in feed::append_many(&mut redis, keys, group, chunk, now_ms).await? {
                    placed.push(
                        chunk
                            .iter()
                            .map(|u| (*u).to_string())
                            .zip(positions)
                            .collect::<Placed>(),
                    );
                }
            }
            Ok(placed)
        }));
    }
    let results: Vec<anyhow::Result<Vec<Placed>>> = futures_util::stream::iter(appends)
        .buffer_unordered(APPEND_PARALLELISM)
        .collect()
        .await;
    let mut out: Vec<Placed> = vec![Vec::new(); records.len()];
    for r in results {
        for (record, placed) in out.iter_mut().zip(r?) {
            record.extend(placed);
        }
    }
    Ok(out)
}

/// The deliveries of the webhook, email and SMS channels, and how many recipients a
/// channel could not reach.
///
/// # Errors
/// When the endpoints cannot be read.
pub async fn deliveries(
    redis: &mut RedisConn,
    directory: &EndpointDirectory,
    n: &Notification,
    users: &[Recipient],
    now_ms: i64,
) -> anyhow::Result<(Vec<Delivery>, BTreeMap<&'static str, u64>)> {
    let mut out = Vec::new();
    let mut skipped = BTreeMap::new();
    if n.has(ChannelKind::Webhook) {
        let endpoints = directory.current(redis).await?;
        let mut matching: Vec<_> = endpoints
            .values()
            .filter(|e| !e.disabled && e.accepts(&n.event_type))
            .collect();
        matching.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        out.extend(matching.into_iter().map(|e| {
            Delivery::new(
                n.notification_id,
                ChannelKind::Webhook,
                &e.endpoint_id,
                None,
                now_ms,
            )
        }));
    }
    for (channel, address) in [
        (
            ChannelKind::Email,
            (|r: &Recipient| r.email.clone()) as fn(&Recipient) -> Option<String>,
        ),
        (ChannelKind::Sms, |r: &Recipient| r.phone.clone()),
    ] {
        if !n.has(channel) {
            continue;
        }
        let mut missing = 0;
        for u in users {
            match address(u) {
                Some(a) => out.push(Delivery::new(
                    n.notification_id,
                    channel,
                    &a,
                    Some(&u.user_id),
                    now_ms,
                )),
                None => missing += 1,
            }
        }
        if missing > 0 {
            skipped.insert(channel.as_str(), missing);
        }
    }
    Ok((out, skipped))
}

/// Queues `deliveries` of one notification on their channels' queues, each group once.
/// Returns how many were queued now.
///
/// # Errors
/// When Redis fails (groups already queued stay queued; running again is safe).
pub async fn queue_deliveries(
    redis: &RedisConn,
    keys: &Keys,
    notification_id: &str,
    deliveries: &[Delivery],
) -> anyhow::Result<u64> {
    let mut groups: BTreeMap<(ChannelKind, u32), Vec<Delivery>> = BTreeMap::new();
    for d in deliveries {
        groups
            .entry((d.channel, push_group(&d.delivery_id)))
            .or_default()
            .push(d.clone());
    }
    let mut pushes: Vec<BoxFuture<'_, anyhow::Result<u64>>> = Vec::with_capacity(groups.len());
    for ((channel, group), list) in groups {
        let mut redis = redis.clone();
        pushes.push(Box::pin(async move {
            let channel_keys = keys.delivery(channel.as_str());
            Ok(
                delivery_queue::push(&mut redis, &channel_keys, notification_id, group, &list)
                    .await?,
            )
        }));
    }
    let results: Vec<anyhow::Result<u64>> = futures_util::stream::iter(pushes)
        .buffer_unordered(APPEND_PARALLELISM)
        .collect()
        .await;
    let mut queued = 0;
    for r in results {
        queued += r?;
    }
    Ok(queued)
}
