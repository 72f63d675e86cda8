//! The subscription on one Redis server: a pattern over every Tally channel, feeding the
//! hub. It reconnects by itself, and after a reconnect has every topic's feed send a
//! fresh snapshot, so no browser keeps a tally that missed updates while Redis was away.
//!
//! A subscription only listens, so a socket whose peer vanished without a FIN (a host
//! crash, a dropped NAT entry) would look quiet, not dead. The subscription is PINGed every
//! `SUBSCRIPTION_PING_MS`; an answer missing for `REDIS_TIMEOUT_MS` drops it (readiness
//! turns red at once) and a new one is made.

use super::Subscriber;
use domain::backoff::Backoff;
use domain::shutdown::CancellationToken;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs the subscription until `shutdown`, PINGing it every `ping_every`.
pub async fn run(subscriber: Subscriber, shutdown: CancellationToken) {
    let Subscriber {
        redis,
        ping_every,
        keys,
        hub,
        subscribed,
    } = subscriber;
    let pattern = domain::channel::pattern(&keys);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = true;
    let timeout = Duration::from_millis(redis.redis_timeout_ms);
    // Should the services publish classic messages on a cluster, any node carries every one
    // of them; a node that is down is skipped for the next one at the next attempt.
    let mut attempt = 0usize;
    while !shutdown.is_cancelled() {
        let connected = async {
            let mut nodes = domain::redis::node_clients(&redis)?;
            let client = nodes.swap_remove(attempt % nodes.len());
            attempt = attempt.wrapping_add(1);
            let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| anyhow::anyhow!("no connection within REDIS_TIMEOUT_MS"))??;
            tokio::time::timeout(timeout, pubsub.psubscribe(&pattern))
                .await
                .map_err(|_| anyhow::anyhow!("PSUBSCRIBE unanswered within REDIS_TIMEOUT_MS"))??;
            Ok::<_, anyhow::Error>(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connected => r,
        };
        let pubsub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "Redis subscription failed"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        subscribed.store(true, Ordering::SeqCst);
        backoff.reset();
        if !first {
            metrics::counter!("sse_gateway_redis_resubscriptions_total").increment(1);
            tracing::info!("Redis subscription restored; resynchronising open streams");
            hub.resync();
        }
        first = false;
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ping.tick() => {
                    // Any answer will do: in subscribed mode a RESP2 server answers PING with
                    // ["pong", ""], not "PONG" (asking for a string dropped the subscription
                    // at every PING).
                    let answer = tokio::time::timeout(timeout, sink.ping::<domain::redis_client::Value>()).await;
                    if let Err(why) = answer.map_err(|_| "unanswered".to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                        metrics::counter!("sse_gateway_redis_ping_failures_total").increment(1);
                        tracing::warn!(error = %why, "Redis subscription did not answer PING");
                        break;
                    }
                    continue;
                }
                m = messages.next() => m,
            };
            let Some(message) = message else { break };
            metrics::counter!("sse_gateway_redis_messages_total").increment(1);
            let payload: String = match message.get_payload() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "non-text pub/sub payload");
                    continue;
                }
            };
            hub.on_message(message.get_channel_name(), &payload);
        }
        subscribed.store(false, Ordering::SeqCst);
        tracing::warn!("Redis subscription lost; reconnecting");
    }
}
