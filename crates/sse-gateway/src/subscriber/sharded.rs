//! Sharded subscriptions on a Redis Cluster: one `SSUBSCRIBE` per channel a topic of this
//! gateway needs, made when a reader asks ([`super::Listener::listen`]) and dropped once
//! the hub has forgotten the topic. A sharded message is delivered by the nodes of its
//! slot's shard only, where a classic one is copied to every node of the cluster.
//!
//! The connection subscribes a node's channels again when it reconnects to it, but what
//! was published meanwhile is gone, and it does not follow a failover by itself: a stream
//! whose shard lost its master stayed silent (the e2e test of it). So at any sign of a gap
//! (a node's connection lost, the server dropping a channel whose slot moved, the masters
//! not answering PING, the cluster's slots served by other masters than at the last look)
//! every channel the hub needs is subscribed again, retried until that succeeds, and then
//! every topic is resynchronised, as after a lost pattern subscription. Readiness is red
//! from the gap until then.

use super::Subscriber;
use domain::backoff::Backoff;
use domain::redis_client::cluster_async::ClusterConnection;
use domain::redis_client::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use domain::redis_client::{PushInfo, PushKind, Value};
use domain::shutdown::CancellationToken;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A reader's request for a channel; answered `true` once its messages reach the hub.
pub struct Request {
    pub channel: String,
    pub done: oneshot::Sender<bool>,
}

pub type Requests = mpsc::UnboundedSender<Request>;

/// Channels subscribed at once (each is a command of its own: channels of different
/// slots live on different nodes).
const CONCURRENT_SUBSCRIPTIONS: usize = 64;
/// Requests answered together.
const REQUESTS_PER_ROUND: usize = 256;

/// The subscriptions of one cluster connection.
struct Session {
    conn: ClusterConnection,
    timeout: Duration,
    /// Channels whose subscription the server confirmed.
    listening: HashSet<String>,
    /// When every channel is to be subscribed again (after a gap), if one was seen.
    repair_at: Option<Instant>,
    /// Which master served which slots at the last look (`CLUSTER SLOTS`).
    topology: Option<String>,
    backoff: Backoff,
}

/// Runs the subscriptions until `shutdown`, answering `requests`.
pub async fn run(
    subscriber: Subscriber,
    mut requests: mpsc::UnboundedReceiver<Request>,
    shutdown: CancellationToken,
) {
    let timeout = Duration::from_millis(subscriber.redis.redis_timeout_ms);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let (push_sender, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
    let conn = loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            c = domain::redis::sharded_subscription(&subscriber.redis, push_sender.clone()) => c,
        };
        match connected {
            Ok(Some(conn)) => break conn,
            Ok(None) => {
                tracing::error!("sharded subscriptions need a Redis Cluster URL");
                return;
            }
            Err(e) => {
                let pause = backoff.next_pause();
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "Redis Cluster subscription connection failed"
                );
                // Readers asking meanwhile are told no (503) rather than kept waiting.
                while let Ok(request) = requests.try_recv() {
                    let _ = request.done.send(false);
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    };
    let mut session = Session {
        conn,
        timeout,
        listening: HashSet::new(),
        // The hub may hold topics already (readers refused while the cluster was away).
        repair_at: Some(Instant::now()),
        topology: None,
        backoff,
    };
    let mut first_repair = true;
    let mut ping = tokio::time::interval(subscriber.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    loop {
        let repair_at = session.repair_at;
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(request) = requests.recv() => {
                let mut round = vec![request];
                while round.len() < REQUESTS_PER_ROUND {
                    match requests.try_recv() {
                        Ok(r) => round.push(r),
                        Err(_) => break,
                    }
                }
                session.answer(round).await;
            }
            Some(push) = pushes.recv() => session.on_push(&subscriber, push),
            _ = ping.tick() => {
                session.check(&subscriber).await;
                session.forget_unneeded(&subscriber).await;
            }
            () = sleep_until(repair_at), if repair_at.is_some() => {
                if session.repair(&subscriber).await && !std::mem::take(&mut first_repair) {
                    metrics::counter!("sse_gateway_redis_resubscriptions_total").increment(1);
                    tracing::info!(
                        channels = session.listening.len(),
                        "sharded subscriptions restored; resynchronising open streams"
                    );
                    subscriber.hub.resync();
                }
            }
        }
        metrics::gauge!("sse_gateway_redis_channels").set(session.listening.len() as f64);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Subscribes the channels of `round` not subscribed yet, then answers each request.
    async fn answer(&mut self, round: Vec<Request>) {
        let wanted: HashSet<String> = round
            .iter()
            .map(|r| r.channel.clone())
            .filter(|c| !self.listening.contains(c))
            .collect();
        let failed = self.subscribe(wanted).await;
        if failed > 0 {
            self.gap_seen("SSUBSCRIBE failed");
        }
        for request in round {
            let _ = request.done.send(self.listening.contains(&request.channel));
        }
    }

    /// Subscribes `channels`, adding each confirmed one to `listening`. Returns how many
    /// failed.
    async fn subscribe(&mut self, channels: HashSet<String>) -> usize {
        let timeout = self.timeout;
        let conn = self.conn.clone();
        let results: Vec<(String, bool)> = futures_util::stream::iter(channels)
            .map(|channel| {
                let mut conn = conn.clone();
                async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, conn.ssubscribe(&channel)).await,
                        Ok(Ok(()))
                    );
                    (channel, ok)
                }
            })
            .buffer_unordered(CONCURRENT_SUBSCRIPTIONS)
            .collect()
            .await;
        let mut failed = 0;
        for (channel, ok) in results {
            if ok {
                self.listening.insert(channel);
            } else {
                failed += 1;
            }
        }
        failed
    }

    fn on_push(&mut self, subscriber: &Subscriber, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => {
                metrics::counter!("sse_gateway_redis_messages_total").increment(1);
                let mut data = push.data.into_iter();
                match (data.next().map(text), data.next().map(text)) {
                    (Some(Some(channel)), Some(Some(payload))) => {
                        subscriber.hub.on_message(&channel, &payload);
                    }
                    _ => tracing::warn!("unreadable sharded pub/sub message"),
                }
            }
            PushKind::Disconnection => {
                subscriber.subscribed.store(false, Ordering::SeqCst);
                self.gap_seen("a node's connection was lost");
            }
            // The server drops a channel whose slot moved to another node; ours are removed
            // from `listening` before we unsubscribe them.
            PushKind::SUnsubscribe => {
                let channel = push.data.into_iter().next().and_then(text);
                if channel.is_some_and(|c| self.listening.contains(&c)) {
                    subscriber.subscribed.store(false, Ordering::SeqCst);
                    self.gap_seen("the server dropped a channel (its slot moved)");
                }
            }
            _ => {}
        }
    }

    /// PINGs every master (a silent one may be holding our channels on a dead socket), and
    /// sees whether other masters serve the slots now (a failover, a resharding).
    async fn check(&mut self, subscriber: &Subscriber) {
        let slots = tokio::time::timeout(
            self.timeout,
            self.conn.route_command(
                domain::redis_client::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ),
        )
        .await;
        if let Ok(Ok(slots)) = slots {
            let now = masters_by_slots(slots);
            if self.topology.as_ref().is_some_and(|before| *before != now) {
                subscriber.subscribed.store(false, Ordering::SeqCst);
                self.gap_seen("other masters serve the slots");
            }
            self.topology = Some(now);
        }
        let routing = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        let answer = tokio::time::timeout(
            self.timeout,
            self.conn
                .route_command(domain::redis_client::cmd("PING"), routing),
        )
        .await;
        if let Err(why) = answer
            .map_err(|_| "unanswered".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            metrics::counter!("sse_gateway_redis_ping_failures_total").increment(1);
            tracing::warn!(error = %why, "Redis Cluster masters did not answer PING");
            subscriber.subscribed.store(false, Ordering::SeqCst);
            self.gap_seen("PING unanswered");
        }
    }

    /// Unsubscribes channels no topic of the hub needs any more.
    async fn forget_unneeded(&mut self, subscriber: &Subscriber) {
        let needed = needed(subscriber);
        let unneeded: Vec<String> = self
            .listening
            .iter()
            .filter(|c| !needed.contains(*c))
            .cloned()
            .collect();
        for channel in unneeded {
            self.listening.remove(&channel);
            // A failure leaves a channel whose messages find no topic: harmless.
            let _ = tokio::time::timeout(self.timeout, self.conn.sunsubscribe(&channel)).await;
        }
    }

    fn gap_seen(&mut self, why: &str) {
        if self.repair_at.is_none() {
            tracing::warn!(
                reason = why,
                "sharded subscriptions may have missed messages"
            );
            // A moment for the connection to find the slot's node again.
            self.repair_at = Some(Instant::now() + Duration::from_millis(100));
        }
    }

    /// Subscribes every channel the hub needs again; `true` when all are confirmed.
    async fn repair(&mut self, subscriber: &Subscriber) -> bool {
        let needed = needed(subscriber);
        self.listening.retain(|c| needed.contains(c));
        let failed = self.subscribe(needed).await;
        if failed > 0 {
            let pause = self.backoff.next_pause();
            tracing::warn!(
                failed,
                retry_in_ms = pause.as_millis() as u64,
                "sharded subscriptions not restored yet"
            );
            self.repair_at = Some(Instant::now() + pause);
            return false;
        }
        self.repair_at = None;
        self.backoff.reset();
        subscriber.subscribed.store(true, Ordering::SeqCst);
        true
    }
}

/// `CLUSTER SLOTS` reduced to what moves a sharded channel: each slot range's master.
fn masters_by_slots(slots: Value) -> String {
    let Value::Array(ranges) = slots else {
        return String::new();
    };
    let mut lines: Vec<String> = ranges
        .into_iter()
        .filter_map(|range| match range {
            Value::Array(fields) => {
                let mut fields = fields.into_iter();
                let (start, end, master) = (fields.next()?, fields.next()?, fields.next()?);
                let Value::Array(master) = master else {
                    return None;
                };
                let mut master = master.into_iter();
                Some(format!(
                    "{start:?}-{end:?}:{:?}:{:?}",
                    master.next()?,
                    master.next()?
                ))
            }
            _ => None,
        })
        .collect();
    lines.sort();
    lines.join(",")
}

/// The channels of every topic of the hub.
fn needed(subscriber: &Subscriber) -> HashSet<String> {
    subscriber
        .hub
        .all()
        .iter()
        .map(|t| t.channel.name(&subscriber.keys))
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
