//! A batch's in-app notifications appended to their audience's feeds together: every
//! user's items in the batch's order, each once, whatever the calls they were cut into,
//! and once only when the batch is replayed.

use crate::helpers::{Harness, trigger};
use batch_worker::lane::Work;
use batch_worker::notify::NotifyWork;
use batch_worker::notify::directory::EndpointDirectory;
use batch_worker::notify::fanout::{Placed, append_to_feeds};
use domain::keys::feed_shard;
use domain::notify::feed::FEED_KEEP;
use domain::notify::{Notification, NotificationRecord, Recipient};
use domain::testing::TestRedis;
use std::sync::Arc;

fn recipient(user_id: &str) -> Recipient {
    Recipient {
        user_id: user_id.into(),
        email: None,
        phone: None,
    }
}

/// Two users of one feed shard (so they share script calls) and one of another.
fn users() -> Vec<Recipient> {
    let names: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    let first = &names[0];
    let same = names[1..]
        .iter()
        .find(|n| feed_shard(n) == feed_shard(first))
        .expect("two users of one shard");
    let other = names[1..]
        .iter()
        .find(|n| feed_shard(n) != feed_shard(first))
        .expect("a user of another shard");
    [first, same, other].map(|n| recipient(n)).to_vec()
}

/// Each notification's users in user order (the chunks answer in any order).
fn sorted(mut placed: Vec<Placed>) -> Vec<Placed> {
    for per_user in &mut placed {
        per_user.sort_by(|a, b| a.0.cmp(&b.0));
    }
    placed
}

#[tokio::test]
async fn a_run_of_notifications_lands_in_every_feed_in_order_once() {
    let redis = TestRedis::new();
    let (conn, keys) = (redis.conn().await, redis.keys());
    let users = users();
    // More than a call holds for the pair (1,800 items: two calls),
    // fewer than a feed keeps (a replay finds every item).
    let records: Vec<NotificationRecord> = (0..900)
        .map(|i| trigger(&format!("goal.converted:s:g:v{i}:d")).record())
        .collect();
    let run: Vec<&NotificationRecord> = records.iter().collect();
    let placed = sorted(
        append_to_feeds(&conn, &keys, &run, &users, 1)
            .await
            .expect("appended"),
    );
    assert_eq!(placed.len(), records.len());
    for (i, per_user) in placed.iter().enumerate() {
        let got: Vec<(&str, i64)> = per_user.iter().map(|(u, p)| (u.as_str(), p.seq)).collect();
        let mut want: Vec<(&str, i64)> = users
            .iter()
            .map(|u| (u.user_id.as_str(), i as i64 + 1))
            .collect();
        want.sort_unstable();
        assert_eq!(
            got, want,
            "notification {i}: every user, at its place in the batch"
        );
    }
    // Every feed holds them in the batch's order.
    let want: Vec<String> = records.iter().map(|r| r.id.to_string()).collect();
    for u in &users {
        let k = keys.feed(&u.user_id);
        let items: Vec<String> = domain::redis_client::cmd("ZRANGE")
            .arg(&k.items)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn.clone())
            .await
            .expect("read");
        assert_eq!(items, want, "{}'s feed", u.user_id);
    }

    // Replayed (a batch fanned out again after a crash): the same places, nothing new.
    let again = sorted(
        append_to_feeds(&conn, &keys, &run, &users, 2)
            .await
            .expect("appended"),
    );
    assert_eq!(again, placed);
    for u in &users {
        let (seq, unread): (i64, i64) = domain::redis_client::cmd("HMGET")
            .arg(&keys.feed(&u.user_id).state)
            .arg("seq")
            .arg("unread")
            .query_async(&mut conn.clone())
            .await
            .expect("read");
        assert_eq!((seq, unread), (900, 900), "{}'s feed", u.user_id);
    }
}

#[tokio::test]
async fn a_stored_notification_replayed_after_its_item_left_the_feed_is_not_appended_again() {
    let h = Harness::new().await;
    let keys = h.keys();
    let work = NotifyWork {
        pg: h.db.pool(),
        redis: domain::redis::connection(&h.redis.config).expect("redis"),
        keys: keys.clone(),
        directory: Arc::new(EndpointDirectory::new(keys.clone())),
    };
    let to_ann = |i: usize| {
        let mut n = trigger(&format!("to-ann-{i}"));
        n.topic = None;
        n.recipients = vec![recipient("ann")];
        n
    };
    let first = to_ann(0);
    work.write(std::slice::from_ref(&first))
        .await
        .expect("stored");
    // A feed's worth of newer notifications pushes the first out of ann's feed.
    let newer: Vec<Notification> = (1..=FEED_KEEP).map(to_ann).collect();
    work.write(&newer).await.expect("stored");
    let feed = keys.feed("ann");
    let mut conn = h.redis.conn().await;
    let first_id = first.notification_id.to_string();
    assert_eq!(
        place_in(&mut conn, &feed, &first_id).await,
        None,
        "the first item left the feed"
    );
    let before = counters_of(&mut conn, &feed).await;
    assert_eq!(before.0, FEED_KEEP as i64 + 1);

    // The first batch again, as after a lost acknowledgement.
    work.write(std::slice::from_ref(&first))
        .await
        .expect("replayed");
    assert_eq!(
        place_in(&mut conn, &feed, &first_id).await,
        None,
        "the replay did not put the item back as the newest"
    );
    assert_eq!(
        counters_of(&mut conn, &feed).await,
        before,
        "nor count it again"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM feed_items WHERE user_id = 'ann'")
            .await,
        FEED_KEEP as i64 + 1
    );
}

/// Where notification `id` is in a feed (its sequence number), if it is there.
async fn place_in(
    conn: &mut domain::redis::RedisConn,
    feed: &domain::keys::FeedKeys,
    id: &str,
) -> Option<i64> {
    domain::redis_client::cmd("ZSCORE")
        .arg(&feed.items)
        .arg(id)
        .query_async(conn)
        .await
        .expect("ZSCORE")
}

/// A feed's sequence number and unread count.
async fn counters_of(
    conn: &mut domain::redis::RedisConn,
    feed: &domain::keys::FeedKeys,
) -> (i64, i64) {
    domain::redis_client::cmd("HMGET")
        .arg(&feed.state)
        .arg("seq")
        .arg("unread")
        .query_async(conn)
        .await
        .expect("HMGET")
}
