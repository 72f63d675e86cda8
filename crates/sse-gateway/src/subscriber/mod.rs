//! The gateway's Redis subscriptions, feeding the hub. On one server, one pattern
//! subscription carries every Tally channel ([`pattern`]). On a Redis Cluster, where live
//! updates go out on sharded channels (see `domain::channel`), which take no patterns, a
//! channel is subscribed when a topic here first needs it and dropped when the hub forgets
//! the topic ([`sharded`]). Either way the subscription mends itself, and after a gap every
//! topic's feed sends a fresh snapshot.

pub mod pattern;
pub mod sharded;

use crate::hub::Hub;
use domain::config::RedisConfig;
use domain::keys::Keys;
use domain::shutdown::CancellationToken;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a reader waits for before it reads the state it will follow: that its channel's
/// messages reach the hub (else an update between the read and the subscription is lost).
#[derive(Clone)]
pub enum Listener {
    /// The one pattern subscription carries every channel.
    Everything,
    /// Channels are subscribed one by one, by the task behind these requests.
    PerChannel(sharded::Requests),
}

impl Listener {
    /// Whether `channel`'s messages reach the hub, asking for them within `timeout`.
    pub async fn listen(&self, channel: String, timeout: Duration) -> bool {
        match self {
            Self::Everything => true,
            Self::PerChannel(requests) => {
                let (done, answer) = tokio::sync::oneshot::channel();
                if requests.send(sharded::Request { channel, done }).is_err() {
                    return false;
                }
                matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(true)))
            }
        }
    }
}

/// What a subscription task works with.
pub struct Subscriber {
    pub redis: RedisConfig,
    /// How often the subscription is checked (`SUBSCRIPTION_PING_MS`).
    pub ping_every: Duration,
    pub keys: Keys,
    pub hub: Arc<Hub>,
    /// Whether the subscription is whole now (readiness).
    pub subscribed: Arc<AtomicBool>,
}

/// Starts the subscription `subscriber.redis` calls for, running until `shutdown`.
/// Returns what readers wait on, and the task.
pub fn start(subscriber: Subscriber, shutdown: CancellationToken) -> (Listener, JoinHandle<()>) {
    if subscriber.keys.sharded_channels() {
        let (requests, received) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(sharded::run(subscriber, received, shutdown));
        (Listener::PerChannel(requests), task)
    } else {
        let task = tokio::spawn(pattern::run(subscriber, shutdown));
        (Listener::Everything, task)
    }
}
