//! The in-process fan-out of live updates.
//!
//! One Redis pattern subscription feeds [`Hub::on_message`]; each topic (a poll, a site)
//! has a `tokio::sync::broadcast` channel that every browser stream of that topic reads.
//! Broadcasting never waits for a reader: a reader that falls more than the channel's
//! capacity behind gets `Lagged` and is sent a fresh snapshot instead, so one stalled
//! browser neither blocks the others nor makes the gateway buffer for it.
//!
//! Updates are coalesced per topic: the first update after a quiet interval goes out at
//! once, later ones within the interval are folded into one emitted at the interval's end,
//! so a topic emits at most once per interval and always ends on its latest state. The last
//! emitted updates are kept so a browser reconnecting with `Last-Event-ID` can be replayed
//! what it missed.

use domain::keys::Keys;
use domain::redis_client::aio::ConnectionManager;
use domain::site::SiteBatchSummary;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// What a topic is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Poll(String),
    Site(String),
}

/// How a browser should apply an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A full state that replaces the client's (first event, resync, reset).
    Snapshot,
    /// A poll's new tally (also a full state, in sequence).
    Tally,
    /// A site's live activity.
    Activity,
}

impl Kind {
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Tally => "tally",
            Self::Activity => "activity",
        }
    }
}

/// One event as sent to browsers: `id` is the poll's sequence number (or the site
/// topic's own counter), `data` the JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub kind: Kind,
    pub id: i64,
    pub data: String,
}

/// Tuning of the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub poll_interval: Duration,
    pub site_interval: Duration,
    /// Emitted updates kept per topic for `Last-Event-ID` replay.
    pub history: usize,
    /// Updates a browser may fall behind before it is resynchronised with a snapshot.
    pub lag_capacity: usize,
}

#[derive(Default)]
struct TopicState {
    history: VecDeque<Arc<Update>>,
    pending: Option<Arc<Update>>,
    last_emit: Option<Instant>,
    timer_armed: bool,
    site: SiteWindow,
    site_seq: i64,
}

/// The fan-out point of one poll or site.
pub struct Topic {
    pub key: TopicKey,
    tx: broadcast::Sender<Arc<Update>>,
    latest: watch::Sender<Option<Arc<Update>>>,
    state: Mutex<TopicState>,
}

impl Topic {
    fn new(key: TopicKey, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (latest, _) = watch::channel(None);
        Self {
            key,
            tx,
            latest,
            state: Mutex::new(TopicState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TopicState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters more than losing live updates, so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of every update emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.tx.subscribe()
    }

    /// Updates held for readers that have not taken them yet (bounded by the lag capacity).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Watches the latest emitted update (long polling).
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Update>>> {
        self.latest.subscribe()
    }

    /// The latest emitted update.
    pub fn latest(&self) -> Option<Arc<Update>> {
        self.latest.borrow().clone()
    }

    /// The updates after `last_seen`, when the history still covers it up to at least
    /// `current`; `None` when the gap is older than what is kept (send a snapshot).
    pub fn replay_since(&self, last_seen: i64, current: i64) -> Option<Vec<Arc<Update>>> {
        let state = self.lock();
        let first = state.history.front()?;
        let last = state.history.back()?;
        if first.id > last_seen || last.id < current {
            return None;
        }
        Some(
            state
                .history
                .iter()
                .filter(|u| u.id > last_seen)
                .cloned()
                .collect(),
        )
    }

    fn in_use(&self) -> bool {
        self.tx.receiver_count() > 0 || self.latest.receiver_count() > 0
    }

    /// Records a state read from Redis for a new stream, unless the topic already has it or
    /// newer: the hub then knows what browsers hold (a later lower sequence number is a
    /// reset, sent as a snapshot) and can replay from it.
    pub fn seed(&self, snapshot: &Arc<Update>) {
        let mut state = self.lock();
        let newest = state
            .pending
            .as_ref()
            .or(state.history.back())
            .map(|u| u.id);
        if newest.is_none_or(|n| n < snapshot.id) {
            state.history.push_back(Arc::new(Update {
                kind: Kind::Tally,
                ..(**snapshot).clone()
            }));
            self.latest.send_replace(Some(snapshot.clone()));
        }
    }

    /// Sends an update to every reader now and records it.
    pub fn emit(&self, update: Arc<Update>, history: usize) {
        let mut state = self.lock();
        self.emit_locked(&mut state, update, history);
    }

    fn emit_locked(&self, state: &mut TopicState, update: Arc<Update>, history: usize) {
        if update.kind == Kind::Snapshot {
            state.history.clear();
        }
        state.history.push_back(update.clone());
        while state.history.len() > history {
            state.history.pop_front();
        }
        state.last_emit = Some(Instant::now());
        self.latest.send_replace(Some(update.clone()));
        let readers = self.tx.send(update).unwrap_or(0);
        metrics::counter!("sse_gateway_updates_emitted_total").increment(1);
        metrics::counter!("sse_gateway_events_fanned_out_total").increment(readers as u64);
    }
}

/// All topics of this gateway.
pub struct Hub {
    topics: Mutex<HashMap<TopicKey, Arc<Topic>>>,
    settings: HubSettings,
    channel_prefix: String,
    keys: Keys,
    /// Counts recent site visitors (`PFCOUNT`); without it (unit tests) they read 0.
    redis: Option<ConnectionManager>,
}

impl Hub {
    pub fn new(keys: &Keys, settings: HubSettings, redis: Option<ConnectionManager>) -> Self {
        let channel_prefix = keys.channel_pattern().trim_end_matches('*').to_string();
        Self {
            topics: Mutex::new(HashMap::new()),
            settings,
            channel_prefix,
            keys: keys.clone(),
            redis,
        }
    }

    /// A site's live activity now, as an update of `kind` numbered `id`.
    pub async fn site_update(&self, topic: &Topic, kind: Kind, id: i64) -> Arc<Update> {
        let TopicKey::Site(site_id) = &topic.key else {
            return Arc::new(Update {
                kind,
                id,
                data: "{}".into(),
            });
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let aggregate = topic.lock().site.aggregate(now_ms);
        let mut visitors = 0u64;
        if let Some(redis) = &self.redis {
            let keys = domain::site::recent_visitor_keys(&self.keys, site_id, now_ms);
            match domain::redis_client::cmd("PFCOUNT")
                .arg(keys)
                .query_async::<u64>(&mut redis.clone())
                .await
            {
                Ok(n) => visitors = n,
                Err(e) => tracing::debug!(error = %e, "could not count recent visitors"),
            }
        }
        let data = serde_json::json!({
            "site_id": site_id,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "visitors_last_5m": visitors,
            "events_last_10s": aggregate.events_last_10s,
            "events_per_second": aggregate.events_per_second,
            "events_last_5m": aggregate.events_last_5m,
            "page_views_last_5m": aggregate.page_views_last_5m,
            "top_paths": aggregate.top_paths,
        });
        Arc::new(Update {
            kind,
            id,
            data: data.to_string(),
        })
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<TopicKey, Arc<Topic>>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The topic for `key`, created when missing.
    pub fn topic(&self, key: TopicKey) -> Arc<Topic> {
        let capacity = self.settings.lag_capacity;
        self.topics()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Topic::new(key, capacity)))
            .clone()
    }

    /// The topic for `key`, if someone is interested in it.
    pub fn existing(&self, key: &TopicKey) -> Option<Arc<Topic>> {
        self.topics().get(key).cloned()
    }

    /// Every topic (for resynchronisation after a Redis reconnect).
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics().values().cloned().collect()
    }

    /// Forgets topics nobody reads any more.
    pub fn collect_garbage(&self) {
        self.topics().retain(|_, t| t.in_use());
        metrics::gauge!("sse_gateway_topics").set(self.topics().len() as f64);
    }

    /// Routes one pub/sub message. Messages of topics nobody watches cost a lookup.
    pub fn on_message(self: &Arc<Self>, channel: &str, payload: &str) {
        let Some(rest) = channel.strip_prefix(&self.channel_prefix) else {
            return;
        };
        if let Some(poll_id) = rest.strip_prefix("poll:") {
            let Some(topic) = self.existing(&TopicKey::Poll(poll_id.to_string())) else {
                return;
            };
            match serde_json::from_str::<SeqOnly>(payload) {
                Ok(p) => self.offer_poll(
                    &topic,
                    Arc::new(Update {
                        kind: Kind::Tally,
                        id: p.seq,
                        data: payload.to_string(),
                    }),
                ),
                Err(e) => tracing::warn!(error = %e, channel, "unreadable poll update"),
            }
        } else if let Some(site_id) = rest.strip_prefix("site:") {
            let Some(topic) = self.existing(&TopicKey::Site(site_id.to_string())) else {
                return;
            };
            match serde_json::from_str::<SiteBatchSummary>(payload) {
                Ok(summary) => {
                    topic.lock().site.add(&summary);
                    self.schedule(&topic, self.settings.site_interval);
                }
                Err(e) => tracing::warn!(error = %e, channel, "unreadable site summary"),
            }
        }
    }

    /// Coalesces a poll update: out now, or folded into the one at the interval's end.
    pub fn offer_poll(self: &Arc<Self>, topic: &Arc<Topic>, mut update: Arc<Update>) {
        let interval = self.settings.poll_interval;
        let mut state = topic.lock();
        let newest = state
            .pending
            .as_ref()
            .or(state.history.back())
            .map(|u| u.id);
        if let Some(newest) = newest
            && update.id <= newest
        {
            if update.id == newest {
                return; // already have it
            }
            // The sequence went backwards: the poll was restored after Redis lost recent
            // votes. Clients must replace their state, not wait for a number they will
            // never see.
            update = Arc::new(Update {
                kind: Kind::Snapshot,
                ..(*update).clone()
            });
            state.pending = None;
        }
        let due = state.last_emit.is_none_or(|t| t.elapsed() >= interval);
        if due && !state.timer_armed {
            topic.emit_locked(&mut state, update, self.settings.history);
        } else {
            state.pending = Some(update);
            self.arm_timer(topic, &mut state, interval);
        }
    }

    /// Marks a site topic dirty and makes sure it is emitted within `interval`.
    fn schedule(self: &Arc<Self>, topic: &Arc<Topic>, interval: Duration) {
        let mut state = topic.lock();
        self.arm_timer(topic, &mut state, interval);
    }

    fn arm_timer(self: &Arc<Self>, topic: &Arc<Topic>, state: &mut TopicState, interval: Duration) {
        if state.timer_armed {
            return;
        }
        state.timer_armed = true;
        let at = state.last_emit.map_or_else(Instant::now, |t| t + interval);
        let (hub, topic) = (Arc::clone(self), Arc::clone(topic));
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            hub.flush(&topic).await;
        });
    }

    async fn flush(&self, topic: &Arc<Topic>) {
        match &topic.key {
            TopicKey::Poll(_) => {
                let mut state = topic.lock();
                state.timer_armed = false;
                if let Some(update) = state.pending.take() {
                    topic.emit_locked(&mut state, update, self.settings.history);
                }
            }
            TopicKey::Site(_) => {
                let id = {
                    let mut state = topic.lock();
                    state.timer_armed = false;
                    state.site_seq += 1;
                    state.site_seq
                };
                let update = self.site_update(topic, Kind::Activity, id).await;
                topic.emit(update, self.settings.history);
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: i64,
}

/// Width of one bucket of a site's activity window.
const BUCKET_MS: i64 = 10_000;
/// Buckets kept: five minutes.
const BUCKETS: usize = 30;
/// Paths remembered per bucket (the summaries carry each batch's top 10).
const MAX_PATHS_PER_BUCKET: usize = 500;

#[derive(Default)]
struct Bucket {
    start_ms: i64,
    events: u64,
    page_views: u64,
    paths: HashMap<String, u64>,
}

/// A site's last five minutes of batch summaries, in ten-second buckets.
#[derive(Default)]
pub struct SiteWindow {
    buckets: VecDeque<Bucket>,
}

/// A site's live activity, without the visitor count (filled from Redis).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteAggregate {
    pub events_last_10s: u64,
    pub events_per_second: f64,
    pub events_last_5m: u64,
    pub page_views_last_5m: u64,
    pub top_paths: Vec<PathViews>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathViews {
    pub path: String,
    pub views: u64,
}

impl SiteWindow {
    pub fn add(&mut self, s: &SiteBatchSummary) {
        let start = s.at_ms - s.at_ms.rem_euclid(BUCKET_MS);
        if self.buckets.back().is_none_or(|b| b.start_ms != start) {
            self.buckets.push_back(Bucket {
                start_ms: start,
                ..Default::default()
            });
        }
        while self.buckets.len() > BUCKETS {
            self.buckets.pop_front();
        }
        if let Some(b) = self.buckets.back_mut() {
            b.events += s.events;
            b.page_views += s.page_views;
            for (path, n) in &s.paths {
                if b.paths.len() < MAX_PATHS_PER_BUCKET || b.paths.contains_key(path) {
                    *b.paths.entry(path.clone()).or_default() += n;
                }
            }
        }
    }

    pub fn aggregate(&self, now_ms: i64) -> SiteAggregate {
        let recent: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.start_ms > now_ms - (BUCKETS as i64) * BUCKET_MS)
            .collect();
        let last_10s: u64 = recent
            .iter()
            .filter(|b| b.start_ms > now_ms - 2 * BUCKET_MS)
            .map(|b| b.events)
            .sum();
        let mut paths: HashMap<&str, u64> = HashMap::new();
        for b in &recent {
            for (p, n) in &b.paths {
                *paths.entry(p).or_default() += n;
            }
        }
        let mut top: Vec<PathViews> = paths
            .into_iter()
            .map(|(p, n)| PathViews {
                path: p.to_string(),
                views: n,
            })
            .collect();
        top.sort_unstable_by(|a, b| b.views.cmp(&a.views).then_with(|| a.path.cmp(&b.path)));
        top.truncate(10);
        SiteAggregate {
            events_last_10s: last_10s,
            events_per_second: last_10s as f64 / 20.0,
            events_last_5m: recent.iter().map(|b| b.events).sum(),
            page_views_last_5m: recent.iter().map(|b| b.page_views).sum(),
            top_paths: top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(interval_ms: u64) -> Arc<Hub> {
        Arc::new(Hub::new(
            &Keys::new("t"),
            HubSettings {
                poll_interval: Duration::from_millis(interval_ms),
                site_interval: Duration::from_millis(interval_ms),
                history: 4,
                lag_capacity: 8,
            },
            None,
        ))
    }

    fn tally(seq: i64) -> String {
        format!(
            r#"{{"poll_id":"p","seq":{seq},"tally":{{"o1":{seq}}},"total":{seq},"closed":false}}"#
        )
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced_and_end_on_the_latest_state() {
        let hub = hub(100);
        let topic = hub.topic(TopicKey::Poll("p".into()));
        let mut rx = topic.subscribe();
        for seq in 1..=5 {
            hub.on_message("t:chan:poll:p", &tally(seq));
        }
        // The first goes out at once, the rest fold into one at the interval's end.
        assert_eq!(rx.recv().await.map(|u| u.id).ok(), Some(1));
        assert!(rx.try_recv().is_err());
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(rx.recv().await.map(|u| u.id).ok(), Some(5));
        assert!(rx.try_recv().is_err(), "at most one event per interval");
    }

    #[tokio::test(start_paused = true)]
    async fn history_replays_what_a_reconnecting_client_missed_or_says_it_cannot() {
        let hub = hub(0);
        let topic = hub.topic(TopicKey::Poll("p".into()));
        for seq in 1..=6 {
            hub.on_message("t:chan:poll:p", &tally(seq));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let replay = topic.replay_since(4, 6).expect("covered");
        assert_eq!(replay.iter().map(|u| u.id).collect::<Vec<_>>(), vec![5, 6]);
        assert!(
            topic.replay_since(1, 6).is_none(),
            "history keeps 4: seq 2 is gone"
        );
        assert!(
            topic.replay_since(4, 7).is_none(),
            "history does not reach the current state"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sequence_going_backwards_is_sent_as_a_snapshot() {
        let hub = hub(0);
        let topic = hub.topic(TopicKey::Poll("p".into()));
        let mut rx = topic.subscribe();
        hub.on_message("t:chan:poll:p", &tally(10));
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.on_message("t:chan:poll:p", &tally(3));
        assert_eq!(rx.recv().await.map(|u| u.kind).ok(), Some(Kind::Tally));
        let reset = rx.recv().await.expect("reset");
        assert_eq!((reset.kind, reset.id), (Kind::Snapshot, 3));
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_lags_instead_of_blocking() {
        let hub = hub(0);
        let topic = hub.topic(TopicKey::Poll("p".into()));
        let mut slow = topic.subscribe();
        for seq in 1..=50 {
            topic.emit(
                Arc::new(Update {
                    kind: Kind::Tally,
                    id: seq,
                    data: tally(seq),
                }),
                4,
            );
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        assert_eq!(topic.latest().map(|u| u.id), Some(50));
    }

    #[test]
    fn messages_of_unwatched_topics_are_ignored() {
        let hub = hub(0);
        hub.on_message("t:chan:poll:nobody", &tally(1));
        assert!(hub.existing(&TopicKey::Poll("nobody".into())).is_none());
    }

    #[test]
    fn the_site_window_ranks_paths_over_five_minutes() {
        let mut w = SiteWindow::default();
        let s = |at_ms, events, paths: &[(&str, u64)]| SiteBatchSummary {
            site_id: "s".into(),
            at_ms,
            events,
            page_views: events,
            paths: paths.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        };
        w.add(&s(1_000_000, 5, &[("/a", 3), ("/b", 2)]));
        w.add(&s(1_005_000, 4, &[("/b", 4)]));
        w.add(&s(1_200_000, 1, &[("/c", 1)]));
        let agg = w.aggregate(1_205_000);
        assert_eq!(agg.events_last_5m, 10);
        assert_eq!(agg.events_last_10s, 1);
        assert_eq!(
            agg.top_paths[0],
            PathViews {
                path: "/b".into(),
                views: 6
            }
        );
        let later = w.aggregate(1_000_000 + 400_000);
        assert_eq!(later.events_last_5m, 1, "old buckets age out");
    }
}
