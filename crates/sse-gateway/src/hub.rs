//! The in-process fan-out of live updates, knowing nothing of polls or sites.
//!
//! The Redis subscription ([`crate::subscriber`]) feeds [`Hub::on_message`], which routes
//! each message by its [`Channel`] to the topic browsers of that channel read. A topic's [`Feed`] (a poll's,
//! a site's: see [`crate::feeds`]) turns the channel's messages into updates; the topic
//! does the rest, the same for every kind:
//!
//! - **Fan-out** through a `tokio::sync::broadcast` channel. Broadcasting never waits for
//!   a reader: one that falls more than the channel's capacity behind gets `Lagged` and is
//!   sent the latest state as a snapshot, so a stalled browser neither blocks the others
//!   nor makes the gateway buffer for it.
//! - **Coalescing**: the first update after a quiet interval goes out at once, later ones
//!   within the interval are folded into one emitted at the interval's end, so a topic
//!   emits at most once per interval and always ends on its latest state. A feed may
//!   instead say "my state changed" and render it at the interval's end.
//! - **History** of the last emitted updates, so a browser reconnecting with
//!   `Last-Event-ID` is replayed what it missed, or told with a snapshot that it cannot be.
//! - **Positions** `{epoch, seq}`: sequence numbers compare only within an epoch, and a new
//!   epoch (a poll restored after Redis lost it) is stated by the source, never inferred
//!   from a sequence number going backwards.

use bytestring::ByteString;
use domain::channel::Channel;
use domain::keys::Keys;
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

mod resync;

/// Where an update stands in its topic's history. Ordered by epoch, then sequence
/// number (epochs are times, so a later epoch is newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Position {
    /// Changes when the source's history was lost (0 for a poll never restored).
    pub epoch: i64,
    /// Increases with every change within an epoch.
    pub seq: i64,
}

impl Position {
    /// Before every position (a stream that has sent nothing yet).
    pub const START: Self = Self {
        epoch: i64::MIN,
        seq: i64::MIN,
    };

    /// The SSE event id: `seq` in epoch 0, `epoch.seq` after.
    pub fn event_id(self) -> String {
        if self.epoch == 0 {
            self.seq.to_string()
        } else {
            format!("{}.{}", self.epoch, self.seq)
        }
    }

    /// Reads an event id written by [`Position::event_id`] (a `Last-Event-ID` header).
    pub fn parse_event_id(id: &str) -> Option<Self> {
        let id = id.trim();
        match id.split_once('.') {
            Some((epoch, seq)) => Some(Self {
                epoch: epoch.parse().ok()?,
                seq: seq.parse().ok()?,
            }),
            None => Some(Self {
                epoch: 0,
                seq: id.parse().ok()?,
            }),
        }
    }
}

/// The SSE event name of a full state that replaces the browser's.
pub const SNAPSHOT: &str = "snapshot";

/// One event as sent to browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The SSE event name: [`SNAPSHOT`], or the feed's own (`tally`, `activity`).
    pub event: &'static str,
    pub position: Position,
    /// The JSON payload, serialised once for every browser: a shared buffer, so sending
    /// it to ten thousand browsers copies no payload (only the framing).
    pub data: ByteString,
    /// The payload for browsers that may not see everything (a poll whose settings hide
    /// its per-option counts from them), when it differs from `data`.
    pub hidden: Option<ByteString>,
    /// Not part of the topic's history (a presence count): sent to whoever is connected,
    /// never replayed, never a position.
    pub ephemeral: bool,
}

impl Update {
    /// An update whose payload is the same for every reader.
    pub fn new(event: &'static str, position: Position, data: String) -> Self {
        Self {
            event,
            position,
            data: data.into(),
            hidden: None,
            ephemeral: false,
        }
    }

    pub fn is_snapshot(&self) -> bool {
        self.event == SNAPSHOT
    }

    /// The payload for a reader who may (`true`) or may not see everything.
    pub fn data_for(&self, sees_everything: bool) -> &ByteString {
        match &self.hidden {
            Some(hidden) if !sees_everything => hidden,
            _ => &self.data,
        }
    }

    /// The same state as a snapshot.
    pub fn as_snapshot(&self) -> Self {
        Self {
            event: SNAPSHOT,
            ..self.clone()
        }
    }
}

/// What a feed makes of one message of its channel.
pub enum Offer {
    /// A finished update at its own position.
    Ready(Update),
    /// The state changed: render it at the end of the coalescing interval
    /// ([`Feed::render`]).
    Changed,
}

/// What turns a channel's messages into a topic's updates.
pub trait Feed: Send + Sync + 'static {
    /// A message from the topic's channel; `None` when it is unreadable (logged).
    fn on_message(&self, payload: &str) -> Option<Offer>;

    /// The current state as an update at `position`, for feeds that answer
    /// [`Offer::Changed`] and for the first event of a new stream.
    fn render(&self, _position: Position) -> BoxFuture<'_, Option<Update>> {
        Box::pin(std::future::ready(None))
    }

    /// The current state read afresh (after the subscription was lost and messages may
    /// have been missed); `None` when there is nothing to correct, an error when the state
    /// could not be read (it is asked again: see [`Hub::resync`]).
    fn resync(&self) -> BoxFuture<'_, anyhow::Result<Option<Update>>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Tuning of the hub (or of one topic).
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Emitted updates kept per topic for `Last-Event-ID` replay.
    pub history: usize,
    /// Updates a browser may fall behind before it is resynchronised with a snapshot.
    pub lag_capacity: usize,
}

struct TopicState {
    history: VecDeque<Arc<Update>>,
    pending: Option<Arc<Update>>,
    /// The feed's state changed since the last emit (rendered at the interval's end).
    changed: bool,
    last_emit: Option<Instant>,
    timer_armed: bool,
    /// Positions of rendered updates: a new epoch per topic instance.
    rendered: Position,
}

/// The fan-out point of one channel.
pub struct Topic {
    pub channel: Channel,
    feed: Arc<dyn Feed>,
    interval: Duration,
    history_len: usize,
    tx: broadcast::Sender<Arc<Update>>,
    latest: watch::Sender<Option<Arc<Update>>>,
    state: Mutex<TopicState>,
}

impl Topic {
    fn new(
        channel: Channel,
        feed: Arc<dyn Feed>,
        interval: Duration,
        settings: &HubSettings,
    ) -> Self {
        let (tx, _) = broadcast::channel(settings.lag_capacity.max(1));
        let (latest, _) = watch::channel(None);
        Self {
            channel,
            feed,
            interval,
            history_len: settings.history,
            tx,
            latest,
            state: Mutex::new(TopicState {
                history: VecDeque::new(),
                pending: None,
                changed: false,
                last_emit: None,
                timer_armed: false,
                rendered: Position {
                    epoch: chrono::Utc::now().timestamp_millis(),
                    seq: 0,
                },
            }),
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

    /// The updates after `last_seen` up to `current`, when both are in the same epoch and
    /// the history still covers the gap; `None` otherwise (send a snapshot).
    pub fn replay_since(&self, last_seen: Position, current: Position) -> Option<Vec<Arc<Update>>> {
        if last_seen.epoch != current.epoch {
            return None;
        }
        let state = self.lock();
        let first = state.history.front()?.position;
        let last = state.history.back()?.position;
        if first.epoch != current.epoch || first.seq > last_seen.seq || last != current {
            return None;
        }
        Some(
            state
                .history
                .iter()
                .filter(|u| u.position.seq > last_seen.seq)
                .cloned()
                .collect(),
        )
    }

    /// Streams reading this topic on this gateway right now.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Sends an ephemeral update (presence) to the topic's readers; not recorded.
    pub fn announce(&self, update: Arc<Update>) {
        let _ = self.tx.send(update);
    }

    fn in_use(&self) -> bool {
        self.tx.receiver_count() > 0 || self.latest.receiver_count() > 0
    }

    /// The newest position the topic knows (pending or emitted).
    fn newest(state: &TopicState) -> Option<Position> {
        state
            .pending
            .as_ref()
            .or(state.history.back())
            .map(|u| u.position)
    }

    /// Records a state read from Redis for a new stream, unless the topic already has it or
    /// newer in the same epoch: the topic then knows what browsers hold and can replay from
    /// it.
    pub fn seed(&self, snapshot: &Arc<Update>) {
        let mut state = self.lock();
        let known = Self::newest(&state)
            .is_some_and(|n| n.epoch == snapshot.position.epoch && n.seq >= snapshot.position.seq);
        if !known {
            if Self::newest(&state).is_some_and(|n| n.epoch != snapshot.position.epoch) {
                state.history.clear();
                state.pending = None;
            }
            state.history.push_back(snapshot.clone());
            self.latest.send_replace(Some(snapshot.clone()));
        }
    }

    /// The feed's current state as a snapshot at the topic's rendered position (the first
    /// event of a new stream of a rendered feed).
    pub async fn render_snapshot(&self) -> Option<Arc<Update>> {
        let position = self.lock().rendered;
        let update = self.feed.render(position).await?;
        Some(Arc::new(update.as_snapshot()))
    }

    /// Sends an update to every reader now and records it.
    pub fn emit(&self, update: Arc<Update>) {
        let mut state = self.lock();
        self.emit_locked(&mut state, update);
    }

    fn emit_locked(&self, state: &mut TopicState, update: Arc<Update>) {
        if update.is_snapshot() {
            state.history.clear();
        }
        state.history.push_back(update.clone());
        while state.history.len() > self.history_len {
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
    topics: Mutex<HashMap<Channel, Arc<Topic>>>,
    settings: HubSettings,
    keys: Keys,
    /// Counts resynchronisations started; a running one gives way to a newer one.
    resync_round: AtomicU64,
}

impl Hub {
    pub fn new(keys: &Keys, settings: HubSettings) -> Self {
        Self {
            topics: Mutex::new(HashMap::new()),
            settings,
            keys: keys.clone(),
            resync_round: AtomicU64::new(0),
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Channel, Arc<Topic>>> {
        self.topics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The topic of `channel`, created with the feed `make_feed` gives and coalescing
    /// `interval` when missing.
    pub fn topic(
        &self,
        channel: Channel,
        interval: Duration,
        make_feed: impl FnOnce() -> Arc<dyn Feed>,
    ) -> Arc<Topic> {
        self.topic_sized(channel, interval, &self.settings, make_feed)
    }

    /// [`Hub::topic`] with history and lag capacity of its own: a user's feed topic has
    /// one reader and replays from Redis, so it keeps far less than a poll's topic shared
    /// by thousands (each slot of a topic's channel is memory held per topic).
    pub fn topic_sized(
        &self,
        channel: Channel,
        interval: Duration,
        settings: &HubSettings,
        make_feed: impl FnOnce() -> Arc<dyn Feed>,
    ) -> Arc<Topic> {
        self.topics()
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Topic::new(channel, make_feed(), interval, settings)))
            .clone()
    }

    /// The topic of `channel`, if someone is interested in it.
    pub fn existing(&self, channel: &Channel) -> Option<Arc<Topic>> {
        self.topics().get(channel).cloned()
    }

    /// Every topic of this gateway.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics().values().cloned().collect()
    }

    /// Forgets topics nobody reads any more.
    pub fn collect_garbage(&self) {
        self.topics().retain(|_, t| t.in_use());
        metrics::gauge!("sse_gateway_topics").set(self.topics().len() as f64);
    }

    /// Routes one pub/sub message. Messages of topics nobody watches cost a lookup.
    pub fn on_message(self: &Arc<Self>, channel_name: &str, payload: &str) {
        let Some(channel) = Channel::parse(&self.keys, channel_name) else {
            return;
        };
        if let Channel::FeedShard(_) = channel {
            // One message for the feeds of many users.
            crate::feeds::feed::dispatch(self, payload);
            return;
        }
        let Some(topic) = self.existing(&channel) else {
            return;
        };
        match topic.feed.on_message(payload) {
            Some(Offer::Ready(update)) => self.offer(&topic, Arc::new(update)),
            Some(Offer::Changed) => self.changed(&topic),
            None => tracing::warn!(channel = channel_name, "unreadable live update"),
        }
    }

    /// Coalesces a finished update: out now, or folded into the one at the interval's end.
    /// An update of another epoch than the topic's newest replaces the browsers' state (a
    /// snapshot); one already known is dropped.
    pub fn offer(self: &Arc<Self>, topic: &Arc<Topic>, mut update: Arc<Update>) {
        let mut state = topic.lock();
        if let Some(newest) = Topic::newest(&state) {
            if newest.epoch == update.position.epoch {
                if update.position.seq <= newest.seq {
                    return;
                }
            } else {
                update = Arc::new(update.as_snapshot());
                state.pending = None;
            }
        }
        let due = state
            .last_emit
            .is_none_or(|t| t.elapsed() >= topic.interval);
        if due && !state.timer_armed {
            topic.emit_locked(&mut state, update);
        } else {
            state.pending = Some(update);
            self.arm_timer(topic, &mut state);
        }
    }

    /// Marks a rendered topic changed; it is rendered and emitted within its interval.
    fn changed(self: &Arc<Self>, topic: &Arc<Topic>) {
        let mut state = topic.lock();
        state.changed = true;
        self.arm_timer(topic, &mut state);
    }

    fn arm_timer(self: &Arc<Self>, topic: &Arc<Topic>, state: &mut TopicState) {
        if state.timer_armed {
            return;
        }
        state.timer_armed = true;
        let at = state
            .last_emit
            .map_or_else(Instant::now, |t| t + topic.interval);
        let topic = Arc::clone(topic);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            Self::flush(&topic).await;
        });
    }

    async fn flush(topic: &Arc<Topic>) {
        let render_at = {
            let mut state = topic.lock();
            state.timer_armed = false;
            if let Some(update) = state.pending.take() {
                topic.emit_locked(&mut state, update);
                return;
            }
            if !std::mem::take(&mut state.changed) {
                return;
            }
            state.rendered.seq += 1;
            state.rendered
        };
        if let Some(update) = topic.feed.render(render_at).await {
            topic.emit(Arc::new(update));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed whose messages are `epoch.seq` pairs.
    struct Numbers;

    impl Feed for Numbers {
        fn on_message(&self, payload: &str) -> Option<Offer> {
            let position = Position::parse_event_id(payload)?;
            Some(Offer::Ready(Update::new(
                "tally",
                position,
                payload.to_string(),
            )))
        }
    }

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(
            &Keys::new("t"),
            HubSettings {
                history: 4,
                lag_capacity: 8,
            },
        ))
    }

    fn topic(hub: &Hub, interval_ms: u64) -> Arc<Topic> {
        hub.topic(
            Channel::Poll("p".into()),
            Duration::from_millis(interval_ms),
            || Arc::new(Numbers),
        )
    }

    /// The name topic `p` is published on.
    fn channel() -> String {
        Channel::Poll("p".into()).name(&Keys::new("t"))
    }

    fn at(seq: i64) -> Position {
        Position { epoch: 0, seq }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced_and_end_on_the_latest_state() {
        let hub = hub();
        let topic = topic(&hub, 100);
        let mut rx = topic.subscribe();
        for seq in 1..=5 {
            hub.on_message(&channel(), &seq.to_string());
        }
        // The first goes out at once, the rest fold into one at the interval's end.
        assert_eq!(rx.recv().await.map(|u| u.position.seq).ok(), Some(1));
        assert!(rx.try_recv().is_err());
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(rx.recv().await.map(|u| u.position.seq).ok(), Some(5));
        assert!(rx.try_recv().is_err(), "at most one event per interval");
    }

    #[tokio::test(start_paused = true)]
    async fn history_replays_what_a_reconnecting_client_missed_or_says_it_cannot() {
        let hub = hub();
        let topic = topic(&hub, 0);
        for seq in 1..=6 {
            hub.on_message(&channel(), &seq.to_string());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let replay = topic.replay_since(at(4), at(6)).expect("covered");
        assert_eq!(
            replay.iter().map(|u| u.position.seq).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert!(
            topic.replay_since(at(1), at(6)).is_none(),
            "history keeps 4: seq 2 is gone"
        );
        assert!(
            topic.replay_since(at(4), at(7)).is_none(),
            "history does not reach the current state"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_epoch_is_sent_as_a_snapshot_and_ends_replay_across_it() {
        let hub = hub();
        let topic = topic(&hub, 0);
        let mut rx = topic.subscribe();
        hub.on_message(&channel(), "10");
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.on_message(&channel(), "77.3");
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.on_message(&channel(), "77.12");
        assert_eq!(rx.recv().await.map(|u| u.event).ok(), Some("tally"));
        let reset = rx.recv().await.expect("reset");
        assert_eq!(
            (reset.event, reset.position),
            (SNAPSHOT, Position { epoch: 77, seq: 3 })
        );
        let current = Position { epoch: 77, seq: 12 };
        assert!(
            topic.replay_since(at(10), current).is_none(),
            "a position of the old epoch is never replayed into the new one"
        );
        assert!(
            topic
                .replay_since(Position { epoch: 77, seq: 3 }, current)
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_sequence_number_already_seen_in_the_same_epoch_is_dropped() {
        let hub = hub();
        let topic = topic(&hub, 0);
        let mut rx = topic.subscribe();
        hub.on_message(&channel(), "5");
        tokio::time::sleep(Duration::from_millis(1)).await;
        hub.on_message(&channel(), "3");
        hub.on_message(&channel(), "5");
        assert_eq!(rx.recv().await.map(|u| u.position.seq).ok(), Some(5));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_lags_instead_of_blocking() {
        let hub = hub();
        let topic = topic(&hub, 0);
        let mut slow = topic.subscribe();
        for seq in 1..=50 {
            topic.emit(Arc::new(Update::new("tally", at(seq), seq.to_string())));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        assert_eq!(topic.latest().map(|u| u.position.seq), Some(50));
    }

    #[test]
    fn messages_of_unwatched_topics_are_ignored() {
        let hub = hub();
        hub.on_message(&Channel::Poll("nobody".into()).name(&Keys::new("t")), "1");
        assert!(hub.existing(&Channel::Poll("nobody".into())).is_none());
    }

    #[test]
    fn event_ids_carry_the_epoch_once_there_is_one() {
        for p in [
            at(0),
            at(42),
            Position {
                epoch: 1_763_114_400_000,
                seq: 7,
            },
        ] {
            assert_eq!(Position::parse_event_id(&p.event_id()), Some(p));
        }
        assert_eq!(at(42).event_id(), "42");
        assert_eq!(Position::parse_event_id("x.1"), None);
    }
}
