//! Notifications the rest of Tally sends by itself, to the webhook endpoints that take
//! their event type and the users subscribed to the topic of the same name:
//!
//! - `poll.closed`, when the worker stores a poll's close (with its final results);
//! - `poll.votes_reached`, when a poll's voters reach one of `POLL_VOTE_THRESHOLDS`;
//! - `site.traffic_spike`, when a site's visitors in the current UTC hour pass
//!   `TRAFFIC_SPIKE_MULTIPLE` times its usual level for that hour (the mean of the same
//!   hour over the previous seven days), checked every `TRAFFIC_SPIKE_INTERVAL_MS` by one
//!   worker at a time;
//! - `goal.converted`, when a batch of events holds a visitor's first conversion of one of
//!   the site's goals on a UTC day.
//!
//! A trigger's notification id and idempotency key come from its subject
//! (`poll.closed:<poll>`, `poll.votes_reached:<poll>:<n>`, `site.traffic_spike:<site>:<hour>`,
//! `goal.converted:<site>:<goal>:<visitor>:<day>`), so a trigger emitted again (a batch
//! replayed after a crash, two workers checking at once) is one notification.

use crate::notify::directory::EndpointDirectory;
use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use domain::deadpool_postgres::Pool;
use domain::event::QueuedEvent;
use domain::goals::Goal;
use domain::keys::Keys;
use domain::notify::accept::{self, trigger_id};
use domain::notify::{ChannelKind, Notification, Priority, endpoints, topics};
use domain::poll::PollMessage;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the goals read from PostgreSQL are used before they are read again (a goal
/// made or removed takes effect within this).
const GOALS_TTL: Duration = Duration::from_secs(5);

/// Conversions older than this (an import, a replay of old data) notify nobody.
const CONVERSION_NOTICE_WINDOW: TimeDelta = TimeDelta::hours(24);

/// The sites with goals, as last read, and when.
type SiteGoals = Option<(Instant, Arc<HashMap<String, Vec<Goal>>>)>;

/// What triggers send and when.
pub struct Triggers {
    pub redis: RedisConn,
    pub keys: Keys,
    pub pg: Pool,
    pub channels: Vec<ChannelKind>,
    pub vote_thresholds: Vec<i64>,
    /// A site's usual visitors at an hour, by (site, hour): computed once per hour.
    pub usual: std::sync::Mutex<std::collections::HashMap<(String, i64), f64>>,
    /// The goals of every site that has some, read again after [`GOALS_TTL`].
    pub goals: tokio::sync::Mutex<SiteGoals>,
    /// The webhook endpoints (shared with the fan-out), to tell whether anyone listens.
    pub directory: Arc<EndpointDirectory>,
}

impl Triggers {
    fn usual_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, i64), f64>> {
        self.usual
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends one trigger's notification (once, however often it is called).
    async fn emit(&self, notice: Notification) -> anyhow::Result<()> {
        let event_type = notice.event_type.clone();
        self.send(&event_type, &[notice]).await
    }

    /// The notification of trigger `subject`: its id and idempotency key are the subject's.
    fn notice(
        &self,
        event_type: &str,
        subject: &str,
        title: String,
        body: String,
        data: Value,
    ) -> Notification {
        let now = Utc::now().timestamp_millis();
        Notification {
            notification_id: trigger_id(subject),
            event_type: event_type.to_string(),
            title,
            body,
            html: None,
            data,
            channels: self.channels.clone(),
            priority: Priority::Normal,
            recipients: Vec::new(),
            topic: Some(event_type.to_string()),
            created_at_ms: now,
            queued_at_ms: now,
            idempotency_key: Some(subject.to_string()),
            traceparent: None,
        }
    }

    /// Sends `notices` of `event_type` (made by [`Self::notice`]), in one script call per
    /// notification shard; none when nobody listens to `event_type`.
    async fn send(&self, event_type: &str, notices: &[Notification]) -> anyhow::Result<()> {
        if self.channels.is_empty() || notices.is_empty() {
            return Ok(());
        }
        if !self.listened(event_type).await? {
            metrics::counter!("batch_worker_triggers_unheard_total", "event_type" => event_type.to_string())
                .increment(notices.len() as u64);
            return Ok(());
        }
        // A trigger's fingerprint is its subject, which is also its idempotency key.
        let pairs: Vec<(&Notification, &str)> = notices
            .iter()
            .map(|n| (n, n.idempotency_key.as_deref().unwrap_or_default()))
            .collect();
        let outcomes = accept::accept_many(&self.redis, &self.keys, &pairs).await?;
        let mut sent = 0;
        for ((_, subject), outcome) in pairs.iter().zip(outcomes) {
            if matches!(outcome, accept::AcceptOutcome::Accepted(_)) {
                sent += 1;
                tracing::debug!(event_type, subject, "trigger sent");
            }
        }
        if sent > 0 {
            metrics::counter!("batch_worker_triggers_total", "event_type" => event_type.to_string()).increment(sent);
            tracing::info!(event_type, sent, "triggers sent");
        }
        Ok(())
    }

    /// Whether anyone would receive a notification of `event_type`: a webhook endpoint that
    /// takes it, or a subscriber of its topic (on the trigger channels). Read as of now (a
    /// trigger must reach an endpoint made just before its events), and yes while a
    /// registry is being restored after Redis lost it.
    async fn listened(&self, event_type: &str) -> anyhow::Result<bool> {
        let mut redis = self.redis.clone();
        if self.channels.contains(&ChannelKind::Webhook) {
            let (version, restored) = endpoints::version(&mut redis, &self.keys).await?;
            if !restored {
                return Ok(true);
            }
            let endpoints = self.directory.as_of(&mut redis, version).await?;
            if endpoints
                .values()
                .any(|e| !e.disabled && e.accepts(event_type))
            {
                return Ok(true);
            }
        }
        if self.channels.iter().any(|c| *c != ChannelKind::Webhook) {
            return Ok(!topics::restored(&mut redis, &self.keys).await?
                || topics::count(&mut redis, &self.keys, event_type).await? > 0);
        }
        Ok(false)
    }

    /// After a batch of poll messages is stored: `poll.closed` for its closes,
    /// `poll.votes_reached` for thresholds its polls passed.
    ///
    /// # Errors
    /// When Redis or PostgreSQL fails (the batch is retried, and what was sent is not sent
    /// twice).
    pub async fn after_poll_batch(&self, messages: &[PollMessage]) -> anyhow::Result<()> {
        let mut voted: BTreeSet<&str> = BTreeSet::new();
        for m in messages {
            match m {
                PollMessage::Close { poll_id, .. } => self.poll_closed(poll_id).await?,
                PollMessage::Vote { poll_id, .. } => {
                    voted.insert(poll_id);
                }
                PollMessage::Poll { .. } => {}
            }
        }
        if !self.vote_thresholds.is_empty() {
            for poll_id in voted {
                self.votes_reached(poll_id).await?;
            }
        }
        Ok(())
    }

    /// After a batch of events is stored: `goal.converted` for each visitor, goal and UTC
    /// day the batch converts (replays and later conversions the same day are the same
    /// notification), for events of the last 24 hours.
    ///
    /// # Errors
    /// When Redis or PostgreSQL fails (the batch is retried).
    pub async fn after_event_batch(&self, events: &[QueuedEvent<'_>]) -> anyhow::Result<()> {
        if self.channels.is_empty() {
            return Ok(());
        }
        let goals = self.site_goals().await?;
        if goals.is_empty() {
            return Ok(());
        }
        let mut conversions: BTreeMap<String, (&QueuedEvent<'_>, &Goal)> = BTreeMap::new();
        let recent = Utc::now() - CONVERSION_NOTICE_WINDOW;
        for e in events.iter().filter(|e| e.ts >= recent) {
            let (Some(visitor), Some(site_goals)) =
                (e.user_id.as_deref(), goals.get(e.site_id.as_ref()))
            else {
                continue;
            };
            let path = crate::events::enrich::path_of(e);
            for goal in site_goals
                .iter()
                .filter(|g| g.matches(&e.event_type, path.as_deref()))
            {
                let subject = format!(
                    "goal.converted:{}:{}:{visitor}:{}",
                    e.site_id,
                    goal.goal_id,
                    e.ts.format("%Y-%m-%d")
                );
                // The day's first conversion in the batch speaks for it.
                conversions
                    .entry(subject)
                    .and_modify(|(first, _)| {
                        if e.ts < first.ts {
                            *first = e;
                        }
                    })
                    .or_insert((e, goal));
            }
        }
        let notices: Vec<Notification> =
            conversions
                .into_iter()
                .map(|(subject, (e, goal))| {
                    self.notice(
                    "goal.converted",
                    &subject,
                    format!("{}: {}", e.site_id, goal.display_name),
                    format!("A visitor of {} converted on {}.", e.site_id, goal.display_name),
                    json!({"site_id": e.site_id, "goal_id": goal.goal_id, "goal": goal.display_name,
                           "visitor": e.user_id, "event_id": e.event_id, "event_type": e.event_type,
                           "at": e.ts}),
                )
                })
                .collect();
        self.send("goal.converted", &notices).await
    }

    /// The goals of every site that has some (read from PostgreSQL at most every
    /// [`GOALS_TTL`]).
    async fn site_goals(&self) -> anyhow::Result<Arc<HashMap<String, Vec<Goal>>>> {
        let mut cached = self.goals.lock().await;
        if let Some((at, goals)) = cached.as_ref()
            && at.elapsed() < GOALS_TTL
        {
            return Ok(goals.clone());
        }
        let client = self.pg.get().await?;
        let rows = client
            .query(
                "SELECT site_id, goals::text FROM sites WHERE deleted_at IS NULL AND goals <> '[]'",
                &[],
            )
            .await?;
        let mut goals = HashMap::with_capacity(rows.len());
        for row in rows {
            let list: Vec<Goal> = serde_json::from_str(row.get(1))?;
            goals.insert(row.get::<_, String>(0), list);
        }
        let goals = Arc::new(goals);
        *cached = Some((Instant::now(), goals.clone()));
        Ok(goals)
    }

    async fn poll_closed(&self, poll_id: &str) -> anyhow::Result<()> {
        let client = self.pg.get().await?;
        let question: Option<String> = client
            .query_opt("SELECT question FROM polls WHERE poll_id = $1", &[&poll_id])
            .await?
            .and_then(|r| r.get(0));
        let options = client
            .query(
                "SELECT option_id, coalesce(label, option_id), votes FROM poll_options
                 WHERE poll_id = $1 ORDER BY position NULLS LAST, option_id",
                &[&poll_id],
            )
            .await?;
        let results: Vec<Value> = options
            .iter()
            .map(|r| json!({"id": r.get::<_, String>(0), "label": r.get::<_, String>(1), "votes": r.get::<_, i64>(2)}))
            .collect();
        let summary = options
            .iter()
            .map(|r| format!("{} {}", r.get::<_, String>(1), r.get::<_, i64>(2)))
            .collect::<Vec<_>>()
            .join(", ");
        let question = question.unwrap_or_else(|| poll_id.to_string());
        self.emit(self.notice(
            "poll.closed",
            &format!("poll.closed:{poll_id}"),
            format!("Poll closed: {question}"),
            format!("Final results: {summary}"),
            json!({"poll_id": poll_id, "question": question, "results": results}),
        ))
        .await
    }

    async fn votes_reached(&self, poll_id: &str) -> anyhow::Result<()> {
        let k = self.keys.poll(poll_id);
        let mut redis = self.redis.clone();
        let (total, question): (Option<i64>, Option<String>) = domain::redis_client::cmd("HMGET")
            .arg(&k.def)
            .arg("total")
            .arg("question")
            .query_async(&mut redis)
            .await?;
        let total = total.unwrap_or(0);
        let passed: Vec<i64> = self
            .vote_thresholds
            .iter()
            .copied()
            .filter(|t| *t <= total)
            .collect();
        if passed.is_empty() {
            return Ok(());
        }
        let sent: Vec<bool> = domain::redis_client::cmd("SMISMEMBER")
            .arg(k.thresholds_reached())
            .arg(&passed)
            .query_async(&mut redis)
            .await?;
        for (threshold, _) in passed.iter().zip(sent).filter(|(_, sent)| !sent) {
            let question = question.clone().unwrap_or_else(|| poll_id.to_string());
            self.emit(self.notice(
                "poll.votes_reached",
                &format!("poll.votes_reached:{poll_id}:{threshold}"),
                format!("{threshold} votes: {question}"),
                format!("The poll \"{question}\" has {total} votes."),
                json!({"poll_id": poll_id, "question": question, "threshold": threshold, "votes": total}),
            ))
            .await?;
            // Marked after it is sent: a crash in between sends it again, which its
            // idempotency key makes the same notification.
            let _: () = domain::redis_client::cmd("SADD")
                .arg(k.thresholds_reached())
                .arg(threshold)
                .query_async(&mut redis)
                .await?;
        }
        Ok(())
    }

    /// Checks every site active this hour for a traffic spike.
    ///
    /// # Errors
    /// When PostgreSQL or Redis fails.
    pub async fn check_traffic(
        &self,
        multiple: f64,
        min_visitors: i64,
        now: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let hour = now.duration_trunc(TimeDelta::hours(1))?;
        let h =
            i32::try_from(hour.format("%H").to_string().parse::<u32>().unwrap_or(0)).unwrap_or(0);
        let today = hour.date_naive();
        let week_ago = today - TimeDelta::days(7);
        let client = self.pg.get().await?;
        // Visitors this hour of the sites active this hour.
        let now_rows = client
            .query(
                "WITH active AS (
                     SELECT DISTINCT site_id FROM rollup_hourly
                     WHERE event_type = 'page_view' AND bucket = $1
                 )
                 SELECT v.site_id, count(*) FROM daily_visitors v JOIN active USING (site_id)
                 WHERE v.event_type = 'page_view' AND v.day = $2 AND v.hours & (1 << $3) <> 0
                 GROUP BY v.site_id HAVING count(*) >= $4",
                &[&hour, &today, &h, &min_visitors],
            )
            .await?;
        // The usual level of this hour, only for sites that could spike, and once per site
        // and hour (the previous week does not change within the hour).
        let mut rows = Vec::with_capacity(now_rows.len());
        for row in now_rows {
            let (site, visitors): (String, i64) = (row.get(0), row.get(1));
            let cached = self
                .usual_lock()
                .get(&(site.clone(), hour.timestamp()))
                .copied();
            let usual = match cached {
                Some(u) => u,
                None => {
                    let u: f64 = client
                        .query_one(
                            "SELECT (count(*) / 7.0)::float8 FROM daily_visitors
                             WHERE site_id = $1 AND event_type = 'page_view' AND day >= $2
                               AND day < $3 AND hours & (1 << $4) <> 0",
                            &[&site, &week_ago, &today, &h],
                        )
                        .await?
                        .get(0);
                    let mut cache = self.usual_lock();
                    cache.retain(|(_, at), _| *at == hour.timestamp());
                    cache.insert((site.clone(), hour.timestamp()), u);
                    u
                }
            };
            rows.push((site, visitors, usual));
        }
        let mut spikes = 0;
        for (site, visitors, usual) in rows {
            if (visitors as f64) <= multiple * usual.max(1.0) {
                continue;
            }
            spikes += 1;
            let at = hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            self.emit(self.notice(
                "site.traffic_spike",
                &format!("site.traffic_spike:{site}:{}", hour.timestamp()),
                format!("Traffic spike on {site}"),
                format!("{visitors} visitors since {at}, against {usual:.1} usually at this hour."),
                json!({"site_id": site, "hour": at, "visitors": visitors, "usual": usual, "multiple": multiple}),
            ))
            .await?;
        }
        Ok(spikes)
    }
}

/// Checks for traffic spikes every `interval` until `stop`; one worker per interval does
/// it (a lock in Redis), the others skip.
pub async fn watch_traffic(
    triggers: std::sync::Arc<Triggers>,
    worker_id: String,
    multiple: f64,
    min_visitors: i64,
    interval: Duration,
    stop: CancellationToken,
) {
    every(interval, stop, || {
        let (triggers, worker_id) = (triggers.clone(), worker_id.clone());
        async move {
            let lock = triggers.keys.traffic_check_lock();
            let ttl_ms = u64::try_from(interval.as_millis())
                .unwrap_or(60_000)
                .max(1_000)
                - 500;
            let taken = domain::registry::marker::lock(
                &mut triggers.redis.clone(),
                &lock,
                &worker_id,
                ttl_ms,
            )
            .await;
            if !matches!(taken, Ok(true)) {
                return;
            }
            metrics::counter!("batch_worker_traffic_checks_total").increment(1);
            match triggers
                .check_traffic(multiple, min_visitors, Utc::now())
                .await
            {
                Ok(n) if n > 0 => tracing::info!(spikes = n, "traffic spikes found"),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "checking for traffic spikes failed"
                ),
            }
        }
    })
    .await;
}
