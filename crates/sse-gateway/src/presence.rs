//! Presence: every `PRESENCE_INTERVAL_MS`, this gateway reports how many streams read each
//! of its topics (`domain::presence`), reads the totals over every gateway, and tells each
//! topic's readers when its total changed (an ephemeral `presence` event).

use crate::hub::{Hub, Position, Update};
use domain::channel::Channel;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The SSE event name of a watcher count.
pub const PRESENCE: &str = "presence";

#[derive(Default, Clone, Copy)]
struct Known {
    reported: u64,
    announced: Option<u64>,
}

/// Reports and announces presence until `stop`.
pub async fn run(
    hub: Arc<Hub>,
    redis: RedisConn,
    keys: Keys,
    gateway_id: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let known: Arc<Mutex<HashMap<Channel, Known>>> = Arc::default();
    every(interval, stop, || {
        let (hub, mut redis, keys, gateway_id, known) = (
            hub.clone(),
            redis.clone(),
            keys.clone(),
            gateway_id.clone(),
            known.clone(),
        );
        async move {
            if let Err(e) = tick(&hub, &mut redis, &keys, &gateway_id, interval, &known).await {
                tracing::debug!(error = %e, "presence not reported");
            }
        }
    })
    .await;
}

async fn tick(
    hub: &Hub,
    redis: &mut RedisConn,
    keys: &Keys,
    gateway_id: &str,
    interval: Duration,
    known: &Mutex<HashMap<Channel, Known>>,
) -> domain::redis_client::RedisResult<()> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    // A report stays valid for three intervals: one missed tick does not drop the count.
    let expires_ms = now_ms + 3 * i64::try_from(interval.as_millis()).unwrap_or(i64::MAX / 4);
    // Presence is a poll's and a site's; a user's feed has one reader, its user.
    let topics: Vec<_> = hub
        .all()
        .into_iter()
        .filter(|t| !matches!(t.channel, Channel::Feed(_)))
        .collect();
    let mut watched = Vec::new();
    let mut pipe = domain::redis_client::pipe();
    {
        let mut known = known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let present: Vec<Channel> = topics.iter().map(|t| t.channel.clone()).collect();
        // Topics gone from the hub report 0 once.
        for (channel, k) in known.iter_mut() {
            if !present.contains(channel) && k.reported > 0 {
                domain::presence::report_in(&mut pipe, keys, channel, gateway_id, 0, expires_ms);
                k.reported = 0;
            }
        }
        known.retain(|c, k| present.contains(c) || k.reported > 0);
        for topic in &topics {
            let local = topic.watchers() as u64;
            let k = known.entry(topic.channel.clone()).or_default();
            if local > 0 || k.reported > 0 {
                domain::presence::report_in(
                    &mut pipe,
                    keys,
                    &topic.channel,
                    gateway_id,
                    local,
                    expires_ms,
                );
                k.reported = local;
            }
            if local > 0 {
                watched.push(topic.clone());
            }
        }
    }
    let _: () = pipe.query_async(redis).await?;
    let channels: Vec<Channel> = watched.iter().map(|t| t.channel.clone()).collect();
    let totals = domain::presence::counts(redis, keys, &channels, now_ms).await?;
    let mut known = known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (topic, total) in watched.iter().zip(totals) {
        let k = known.entry(topic.channel.clone()).or_default();
        if k.announced == Some(total) {
            continue;
        }
        k.announced = Some(total);
        let data = serde_json::json!({"topic": topic.channel.topic(), "watchers": total});
        topic.announce(Arc::new(Update {
            ephemeral: true,
            ..Update::new(PRESENCE, Position::default(), data.to_string())
        }));
    }
    metrics::gauge!("sse_gateway_presence_topics").set(watched.len() as f64);
    Ok(())
}
