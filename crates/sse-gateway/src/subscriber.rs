//! The gateway's one Redis subscription: a pattern over every Tally channel, feeding the
//! hub. It reconnects by itself, and after a reconnect has every topic's feed send a fresh
//! snapshot, so no browser keeps a tally that missed updates while Redis was away.

use crate::hub::Hub;
use domain::backoff::Backoff;
use domain::keys::Keys;
use domain::shutdown::CancellationToken;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs the subscription until `shutdown`. `subscribed` says whether it is live now.
pub async fn run(
    redis_url: String,
    keys: Keys,
    hub: Arc<Hub>,
    subscribed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let pattern = domain::channel::pattern(&keys);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = true;
    while !shutdown.is_cancelled() {
        let connected = async {
            let client = domain::redis_client::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, domain::redis_client::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connected => r,
        };
        let mut pubsub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "Redis subscription failed");
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
            hub.resync().await;
        }
        first = false;
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
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
