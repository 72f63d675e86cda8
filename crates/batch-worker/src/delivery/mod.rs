//! Delivery lanes: one per channel (webhook, email, SMS) in each worker process, each
//! attempting up to its concurrency of deliveries at once.
//!
//! A lane claims deliveries into its in-flight hash (see
//! [`domain::notify::delivery_queue`]), attempts each with its channel's [`Sender`], and
//! finishes each as soon as its attempt ends: delivered, retried later on the schedule,
//! dead-lettered after the last attempt, or given up (no address, the endpoint disabled).
//! Finishing records the attempt for PostgreSQL in the same Redis step. A delivery whose
//! endpoint already has its share of this lane's slots, or is over its rate, is set aside
//! in the scheduled set for a moment instead of taking a slot, so one slow or failing
//! endpoint never holds up the others. Finishes are sent in small groups (every few
//! milliseconds) so ten thousand deliveries a second cost a few hundred Redis calls.
//!
//! [`maintain`] keeps the lane's heartbeat, takes back the deliveries of dead workers
//! (recording their attempts as interrupted), and refreshes the gauges.

pub mod email;
pub mod log;
pub mod records;
pub mod sms;
pub mod webhook;

use domain::keys::{DeliveryKeys, Keys};
use domain::notify::delivery::{AttemptOutcome, AttemptRecord, Delivery, RetrySchedule};
use domain::notify::delivery_queue::{DeliveryQueue, Finish, FinishAction, Reaped};
use domain::notify::{ChannelKind, DeliveryState};
use domain::queue::DeadLetter;
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use records::{Loaded, Records};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an attempt ended, as the channel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered {
        status: Option<u16>,
    },
    /// Worth another attempt.
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// The endpoint answered 410: it is disabled, the delivery given up.
    Gone {
        status: u16,
        error: String,
    },
    /// Can never succeed (no such address, the endpoint deleted or disabled, refused for
    /// good by the server).
    Refused {
        status: Option<u16>,
        error: String,
    },
}

/// What may happen before an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Not now: set it aside this long (`reason` for the metric).
    Later(Duration, &'static str),
    /// Never: give it up for this reason.
    Refuse(String),
}

/// One channel's way of delivering.
pub trait Sender: Send + Sync + 'static {
    const CHANNEL: ChannelKind;

    /// What this lane's slots are shared by (a webhook endpoint): at most
    /// `max_in_flight_per_key` deliveries of one key are attempted at once.
    fn key<'d>(&self, _delivery: &'d Delivery) -> Option<&'d str> {
        None
    }

    /// Checks made before an attempt (the endpoint exists and is enabled, its rate).
    fn gate<'a>(&'a self, _delivery: &'a Delivery) -> BoxFuture<'a, Gate> {
        Box::pin(std::future::ready(Gate::Go))
    }

    /// One attempt.
    fn attempt<'a>(
        &'a self,
        delivery: &'a Delivery,
        notification: &'a Loaded,
    ) -> BoxFuture<'a, Verdict>;

    /// After a [`Verdict::Gone`]: disable the endpoint.
    fn on_gone<'a>(&'a self, _delivery: &'a Delivery) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// How a lane runs.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    pub concurrency: usize,
    pub max_in_flight_per_key: usize,
    pub park: Duration,
    pub schedule: RetrySchedule,
    pub heartbeat_ttl: Duration,
    pub reap_interval: Duration,
    /// How long shutdown waits for attempts under way (then they are reaped later).
    pub drain_timeout: Duration,
}

/// Most deliveries claimed in one call.
const CLAIM_MAX: usize = 256;
/// Longest pause while the queue is empty (a new delivery waits at most this long).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How often due retries are moved back onto the queue.
const DUE_EVERY: Duration = Duration::from_millis(100);
/// Finishes are sent at least this often, or when this many are waiting.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
const FLUSH_AT: usize = 512;

/// An attempt that ended.
struct Ended {
    claim: String,
    delivery: Delivery,
    verdict: Verdict,
    started_ms: i64,
    took: Duration,
}

/// One channel's lane.
pub struct DeliveryLane<S: Sender> {
    queue: DeliveryQueue,
    sender: Arc<S>,
    records: Arc<Records>,
    redis: RedisConn,
    settings: LaneSettings,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl<S: Sender> DeliveryLane<S> {
    pub fn new(
        keys: &Keys,
        worker_id: &str,
        sender: Arc<S>,
        records: Arc<Records>,
        redis: RedisConn,
        settings: LaneSettings,
    ) -> Self {
        let channel_keys = keys.delivery(S::CHANNEL.as_str());
        Self {
            queue: DeliveryQueue::new(channel_keys, format!("{worker_id}.{}", S::CHANNEL.as_str())),
            sender,
            records,
            redis,
            settings,
        }
    }

    pub fn worker_id(&self) -> &str {
        self.queue.worker_id()
    }

    pub fn keys(&self) -> &DeliveryKeys {
        self.queue.keys()
    }

    /// Attempts deliveries until shutdown, then waits (up to the drain timeout) for the
    /// attempts under way and finishes them.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let channel = S::CHANNEL.as_str();
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(maintain(
            self.queue.keys().clone(),
            self.worker_id().to_string(),
            self.redis.clone(),
            self.settings.clone(),
            S::CHANNEL,
            stop_heartbeat.clone(),
        ));
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Ended>> = FuturesUnordered::new();
        let mut per_key: HashMap<String, usize> = HashMap::new();
        let mut finished: Vec<Finish> = Vec::new();
        let mut last_flush = Instant::now();
        let mut last_due = Instant::now() - DUE_EVERY;
        let mut draining_since: Option<Instant> = None;
        // Claims of a previous run under this worker id (a restart with WORKER_ID set)
        // are attempted again.
        let mut leftover = self
            .queue
            .in_flight(&mut self.redis)
            .await
            .unwrap_or_default();
        loop {
            if shutdown.is_cancelled() && draining_since.is_none() {
                draining_since = Some(Instant::now());
            }
            if let Some(since) = draining_since
                && (in_flight.is_empty() || since.elapsed() > self.settings.drain_timeout)
            {
                break;
            }
            if draining_since.is_none() && last_due.elapsed() >= DUE_EVERY {
                last_due = Instant::now();
                match self.queue.move_due(&mut self.redis, now_ms(), 10_000).await {
                    Ok(n) if n > 0 => {
                        metrics::counter!("batch_worker_deliveries_due_moved_total", "channel" => channel).increment(n);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, channel, "moving due deliveries failed"),
                }
            }
            let room = self.settings.concurrency.saturating_sub(in_flight.len());
            // Refill in steps, not one slot at a time: a claim per finished attempt would
            // make a Redis round trip per delivery the limit.
            let refill = (self.settings.concurrency / 4).clamp(1, CLAIM_MAX);
            let mut claimed = 0;
            let mut wanted = 0;
            if draining_since.is_none() && room > 0 && (room >= refill || in_flight.is_empty()) {
                wanted = room.min(CLAIM_MAX);
                let items = if leftover.is_empty() {
                    match self.queue.claim(&mut self.redis, room.min(CLAIM_MAX)).await {
                        Ok(items) => items,
                        Err(e) => {
                            tracing::warn!(error = %e, channel, "claiming deliveries failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Vec::new()
                        }
                    }
                } else {
                    std::mem::take(&mut leftover)
                };
                claimed = items.len();
                for (claim, raw) in items {
                    self.admit(claim, &raw, &mut in_flight, &mut per_key, &mut finished)
                        .await;
                }
            }
            // Take whatever attempts have ended without waiting.
            while let Some(Some(ended)) = in_flight.next().now_or_never() {
                self.conclude(ended, &mut per_key, &mut finished).await;
            }
            // Claimed all it asked for: there may be more right away. Otherwise wait for an
            // attempt to end, or a while when the queue is empty.
            let more_now = wanted > 0 && claimed == wanted;
            if !more_now && finished.len() < FLUSH_AT {
                let wait = if finished.is_empty() {
                    IDLE_POLL
                } else {
                    FLUSH_EVERY
                };
                tokio::select! {
                    ended = in_flight.next(), if !in_flight.is_empty() => {
                        if let Some(ended) = ended {
                            self.conclude(ended, &mut per_key, &mut finished).await;
                        }
                    }
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled(), if draining_since.is_none() => {}
                }
            }
            if !finished.is_empty()
                && (finished.len() >= FLUSH_AT || last_flush.elapsed() >= FLUSH_EVERY)
            {
                self.flush(&mut finished).await;
                last_flush = Instant::now();
            }
            metrics::gauge!("batch_worker_deliveries_in_flight", "channel" => channel)
                .set(in_flight.len() as f64);
        }
        self.flush(&mut finished).await;
        if !in_flight.is_empty() {
            tracing::warn!(
                attempts = in_flight.len(),
                channel,
                "shutting down with attempts under way; they will be reaped and attempted again"
            );
        } else if let Err(e) = self.queue.hand_back(&mut self.redis, &[]).await {
            tracing::warn!(error = %e, channel, "could not unregister the delivery lane");
        }
        stop_heartbeat.cancel();
        let _ = heartbeat.await;
    }

    async fn flush(&mut self, finished: &mut Vec<Finish>) {
        if finished.is_empty() {
            return;
        }
        match self.queue.finish(&mut self.redis, finished).await {
            Ok(_) => finished.clear(),
            Err(e) => {
                // Kept and sent again with the next flush; if this worker dies first, the
                // deliveries are reaped and attempted again (same delivery ids).
                tracing::warn!(error = %e, waiting = finished.len(), "finishing deliveries failed; will retry");
            }
        }
    }

    /// Starts the attempt of a claimed delivery, or decides it without one.
    async fn admit(
        &mut self,
        claim: String,
        raw: &[u8],
        in_flight: &mut FuturesUnordered<BoxFuture<'static, Ended>>,
        per_key: &mut HashMap<String, usize>,
        finished: &mut Vec<Finish>,
    ) {
        let channel = S::CHANNEL.as_str();
        let delivery: Delivery = match serde_json::from_slice(raw) {
            Ok(d) => d,
            Err(e) => {
                let item = String::from_utf8_lossy(raw);
                finished.push(Finish {
                    claim,
                    action: FinishAction::Dead {
                        letter: self.letter(&format!("unparseable: {e}"), &item),
                    },
                    record: None,
                    backlog_field: String::new(),
                });
                metrics::counter!("batch_worker_delivery_dead_letters_total", "channel" => channel, "reason" => "unparseable").increment(1);
                return;
            }
        };
        let key = self.sender.key(&delivery).map(str::to_string);
        if let Some(k) = &key
            && per_key.get(k).copied().unwrap_or(0) >= self.settings.max_in_flight_per_key
        {
            self.set_aside(claim, &delivery, self.settings.park, "busy", finished);
            return;
        }
        match self.sender.gate(&delivery).await {
            Gate::Go => {}
            Gate::Later(wait, reason) => {
                self.set_aside(
                    claim,
                    &delivery,
                    wait.max(Duration::from_millis(10)),
                    reason,
                    finished,
                );
                return;
            }
            Gate::Refuse(error) => {
                let verdict = Verdict::Refused {
                    status: None,
                    error,
                };
                self.decide(claim, delivery, verdict, now_ms(), Duration::ZERO, finished);
                return;
            }
        }
        let loaded = match self.records.get(&delivery.notification_id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                let verdict = Verdict::Refused {
                    status: None,
                    error: "the notification is gone (neither Redis nor PostgreSQL has it)".into(),
                };
                self.decide(claim, delivery, verdict, now_ms(), Duration::ZERO, finished);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not read a notification; setting its delivery aside"
                );
                self.set_aside(
                    claim,
                    &delivery,
                    Duration::from_secs(1),
                    "unavailable",
                    finished,
                );
                return;
            }
        };
        if let Some(k) = &key {
            *per_key.entry(k.clone()).or_default() += 1;
        }
        let sender = self.sender.clone();
        in_flight.push(Box::pin(async move {
            let started_ms = now_ms();
            let started = Instant::now();
            let verdict = sender.attempt(&delivery, &loaded).await;
            Ended {
                claim,
                delivery,
                verdict,
                started_ms,
                took: started.elapsed(),
            }
        }));
    }

    fn set_aside(
        &self,
        claim: String,
        delivery: &Delivery,
        wait: Duration,
        reason: &'static str,
        finished: &mut Vec<Finish>,
    ) {
        metrics::counter!("batch_worker_deliveries_parked_total", "channel" => S::CHANNEL.as_str(), "reason" => reason).increment(1);
        let due_ms = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
        finished.push(Finish {
            claim,
            action: FinishAction::Park {
                delivery: delivery.to_json(),
                due_ms,
            },
            record: None,
            backlog_field: String::new(),
        });
    }

    async fn conclude(
        &self,
        ended: Ended,
        per_key: &mut HashMap<String, usize>,
        finished: &mut Vec<Finish>,
    ) {
        if let Some(k) = self.sender.key(&ended.delivery)
            && let Some(n) = per_key.get_mut(k)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_key.remove(k);
            }
        }
        metrics::histogram!("batch_worker_delivery_attempt_seconds", "channel" => S::CHANNEL.as_str())
            .record(ended.took.as_secs_f64());
        if matches!(ended.verdict, Verdict::Gone { .. }) {
            self.sender.on_gone(&ended.delivery).await;
        }
        self.decide(
            ended.claim,
            ended.delivery,
            ended.verdict,
            ended.started_ms,
            ended.took,
            finished,
        );
    }

    fn letter(&self, reason: &str, item: &str) -> String {
        serde_json::to_string(&DeadLetter {
            reason,
            item,
            at_ms: now_ms(),
            worker_id: self.queue.worker_id(),
        })
        .unwrap_or_default()
    }

    /// What follows from an attempt's verdict (or a refusal without an attempt).
    fn decide(
        &self,
        claim: String,
        delivery: Delivery,
        verdict: Verdict,
        started_ms: i64,
        took: Duration,
        finished: &mut Vec<Finish>,
    ) {
        let channel = S::CHANNEL.as_str();
        let attempt = delivery.attempt + 1;
        let mut record = AttemptRecord {
            delivery_id: delivery.delivery_id.clone(),
            notification_id: delivery.notification_id,
            channel: delivery.channel,
            target: delivery.target.clone(),
            user_id: delivery.user_id.clone(),
            attempt,
            started_at_ms: started_ms,
            duration_ms: i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
            status_code: None,
            outcome: AttemptOutcome::Delivered,
            error: None,
            state: DeliveryState::Delivered,
            next_attempt_at_ms: None,
            queued_at_ms: now_ms(),
        };
        let backlog_field = delivery.backlog_field().to_string();
        let action = match verdict {
            Verdict::Delivered { status } => {
                record.status_code = status;
                FinishAction::Done
            }
            Verdict::Gone { status, error }
            | Verdict::Refused {
                status: Some(status),
                error,
            } => {
                record.status_code = Some(status);
                record.outcome = AttemptOutcome::Refused;
                record.state = DeliveryState::Failed;
                record.error = Some(error);
                FinishAction::Done
            }
            Verdict::Refused {
                status: None,
                error,
            } => {
                record.outcome = AttemptOutcome::Refused;
                record.state = DeliveryState::Failed;
                record.error = Some(error);
                FinishAction::Done
            }
            Verdict::Failed { status, error } => {
                record.status_code = status;
                let mut next = delivery.clone();
                next.attempt = attempt;
                next.queued_at_ms = now_ms();
                let series = attempt.saturating_sub(delivery.series_start);
                match self.settings.schedule.pause_after(series, jitter()) {
                    Some(pause) => {
                        let due_ms =
                            now_ms() + i64::try_from(pause.as_millis()).unwrap_or(i64::MAX / 2);
                        record.outcome = AttemptOutcome::Failed;
                        record.state = DeliveryState::Delivering;
                        record.next_attempt_at_ms = Some(due_ms);
                        record.error = Some(error);
                        FinishAction::Retry {
                            delivery: next.to_json(),
                            due_ms,
                        }
                    }
                    None => {
                        record.outcome = AttemptOutcome::Exhausted;
                        record.state = DeliveryState::Dead;
                        let reason = format!("retries_exhausted: {error}");
                        record.error = Some(error);
                        metrics::counter!("batch_worker_delivery_dead_letters_total", "channel" => channel, "reason" => "retries_exhausted").increment(1);
                        FinishAction::Dead {
                            letter: self.letter(&reason, &next.to_json()),
                        }
                    }
                }
            }
        };
        metrics::counter!("batch_worker_deliveries_total", "channel" => channel, "outcome" => record.outcome.as_str()).increment(1);
        finished.push(Finish {
            claim,
            action,
            record: Some(record.to_json()),
            backlog_field,
        });
    }
}

/// A number in [0, 1) for retry jitter.
fn jitter() -> f64 {
    f64::from(uuid::Uuid::new_v4().as_u128() as u32) / (f64::from(u32::MAX) + 1.0)
}

/// A lane's background duties: its heartbeat (every third of its TTL), and every reap
/// interval taking back dead workers' deliveries and refreshing the channel's gauges.
async fn maintain(
    keys: DeliveryKeys,
    worker_id: String,
    redis: RedisConn,
    settings: LaneSettings,
    channel: ChannelKind,
    stop: CancellationToken,
) {
    let queue = DeliveryQueue::new(keys.clone(), worker_id.clone());
    let mut heartbeat = tokio::time::interval(settings.heartbeat_ttl / 3);
    let mut reap = tokio::time::interval(settings.reap_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut redis = redis.clone();
        tokio::select! {
            () = stop.cancelled() => return,
            _ = heartbeat.tick() => {
                if let Err(e) = queue.heartbeat(&mut redis, settings.heartbeat_ttl).await {
                    metrics::counter!("batch_worker_heartbeat_failures_total").increment(1);
                    tracing::warn!(error = %e, worker = worker_id, "delivery lane heartbeat failed");
                }
            }
            _ = reap.tick() => {
                if let Err(e) = reap_dead(&keys, &worker_id, &mut redis, &settings.schedule, channel).await {
                    tracing::warn!(error = format!("{e:#}"), channel = channel.as_str(), "reaping dead delivery workers failed");
                }
                if let Err(e) = measure(&keys, &mut redis, channel).await {
                    tracing::debug!(error = format!("{e:#}"), "could not refresh delivery gauges");
                }
            }
        }
    }
}

/// Takes back the deliveries of this channel's dead workers: each attempt under way when
/// its worker died is recorded as interrupted and attempted again (or dead-lettered when
/// it was the last).
async fn reap_dead(
    keys: &DeliveryKeys,
    me: &str,
    redis: &mut RedisConn,
    schedule: &RetrySchedule,
    channel: ChannelKind,
) -> anyhow::Result<()> {
    use domain::notify::delivery_queue::{in_flight_of, reap, workers};
    for (worker, alive) in workers(redis, keys).await? {
        if alive || worker == me {
            continue;
        }
        let items = in_flight_of(redis, keys, &worker).await?;
        let now = now_ms();
        let reaped: Vec<Reaped> = items
            .into_iter()
            .map(|(claim, raw)| reaped_item(claim, &raw, &worker, schedule, now))
            .collect();
        let n = reap(redis, keys, &worker, &reaped, false).await?;
        if n >= 0 {
            metrics::counter!("batch_worker_reaped_workers_total", "queue" => keys.queue.name.clone()).increment(1);
            metrics::counter!("batch_worker_reaped_items_total", "queue" => keys.queue.name.clone())
                .increment(u64::try_from(n).unwrap_or(0));
            metrics::counter!("batch_worker_deliveries_total", "channel" => channel.as_str(), "outcome" => "interrupted")
                .increment(u64::try_from(n).unwrap_or(0));
            tracing::warn!(dead_worker = %worker, deliveries = n, channel = channel.as_str(), "took back the deliveries of a dead worker");
        }
    }
    Ok(())
}

fn reaped_item(
    claim: String,
    raw: &[u8],
    worker: &str,
    schedule: &RetrySchedule,
    now: i64,
) -> Reaped {
    let text = String::from_utf8_lossy(raw).into_owned();
    let letter = |reason: &str, item: &str| {
        serde_json::to_string(&DeadLetter {
            reason,
            item,
            at_ms: now,
            worker_id: worker,
        })
        .unwrap_or_default()
    };
    let Ok(delivery) = serde_json::from_slice::<Delivery>(raw) else {
        return Reaped {
            claim,
            payload: letter("unparseable", &text),
            dead: true,
            record: None,
            backlog_field: String::new(),
        };
    };
    let attempt = delivery.attempt + 1;
    let mut next = delivery.clone();
    next.attempt = attempt;
    next.queued_at_ms = now;
    let last = attempt.saturating_sub(delivery.series_start) >= schedule.max_attempts();
    let error = "the worker stopped during the attempt (the receiver may have seen it)";
    let record = AttemptRecord {
        delivery_id: delivery.delivery_id.clone(),
        notification_id: delivery.notification_id,
        channel: delivery.channel,
        target: delivery.target.clone(),
        user_id: delivery.user_id.clone(),
        attempt,
        started_at_ms: now,
        duration_ms: 0,
        status_code: None,
        outcome: if last {
            AttemptOutcome::Exhausted
        } else {
            AttemptOutcome::Interrupted
        },
        error: Some(error.into()),
        state: if last {
            DeliveryState::Dead
        } else {
            DeliveryState::Delivering
        },
        next_attempt_at_ms: (!last).then_some(now),
        queued_at_ms: now,
    };
    Reaped {
        claim,
        payload: if last {
            letter(&format!("retries_exhausted: {error}"), &next.to_json())
        } else {
            next.to_json()
        },
        dead: last,
        record: Some(record.to_json()),
        backlog_field: delivery.backlog_field().to_string(),
    }
}

async fn measure(
    keys: &DeliveryKeys,
    redis: &mut RedisConn,
    channel: ChannelKind,
) -> anyhow::Result<()> {
    use domain::notify::delivery_queue::{backlog, depth, due_count};
    let name = channel.as_str();
    let (queued, scheduled) = depth(redis, keys).await?;
    let due = due_count(redis, keys, now_ms()).await?;
    let dead = domain::queue::dead_len(redis, &keys.queue).await?;
    metrics::gauge!("batch_worker_deliveries_queued", "channel" => name).set(queued as f64);
    metrics::gauge!("batch_worker_deliveries_scheduled", "channel" => name).set(scheduled as f64);
    metrics::gauge!("batch_worker_deliveries_due", "channel" => name).set(due as f64);
    metrics::gauge!("batch_worker_dead_letters", "queue" => keys.queue.name.clone())
        .set(dead as f64);
    if channel == ChannelKind::Webhook {
        for (endpoint, n) in backlog(redis, keys).await? {
            metrics::gauge!("batch_worker_endpoint_backlog", "endpoint" => endpoint).set(n as f64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_reaped_mid_attempt_is_requeued_with_the_attempt_counted() {
        let schedule = RetrySchedule::parse("1s,1s").expect("schedule");
        let mut d = Delivery::new(uuid::Uuid::nil(), ChannelKind::Webhook, "ep", None, 1);
        let r = reaped_item("c1".into(), d.to_json().as_bytes(), "w", &schedule, 5);
        assert!(!r.dead);
        let next: Delivery = serde_json::from_str(&r.payload).expect("delivery");
        assert_eq!(
            (next.attempt, next.delivery_id.as_str()),
            (1, d.delivery_id.as_str())
        );
        let record: AttemptRecord =
            serde_json::from_str(r.record.as_deref().unwrap_or("")).expect("record");
        assert_eq!(record.outcome, AttemptOutcome::Interrupted);
        d.attempt = 2;
        let last = reaped_item("c2".into(), d.to_json().as_bytes(), "w", &schedule, 5);
        assert!(last.dead, "the third attempt of three was the last");
        assert!(last.payload.contains("retries_exhausted"));
    }
}
