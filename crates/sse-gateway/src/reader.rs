//! What one browser reads of one topic: what it missed first (or a snapshot), then every
//! update newer than what it was sent, a snapshot when it fell behind, and ephemeral
//! updates (presence) as they come. Single-topic streams and the multiplexed stream both
//! read topics through it.

use crate::hub::{Position, Topic, Update};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// One browser's reading of one topic.
pub struct TopicReader {
    pub topic: Arc<Topic>,
    initial: VecDeque<Arc<Update>>,
    rx: broadcast::Receiver<Arc<Update>>,
    /// The position of the last update sent (what `Last-Event-ID` will say).
    pub last_sent: Position,
    /// Whether this browser may see everything (a hidden poll's counts).
    pub sees_everything: bool,
}

impl TopicReader {
    /// `rx` must have been taken before the state `initial` was read from, so nothing
    /// published in between is missed (duplicates are dropped by position).
    pub fn new(
        topic: Arc<Topic>,
        rx: broadcast::Receiver<Arc<Update>>,
        initial: Vec<Arc<Update>>,
        last_sent: Position,
        sees_everything: bool,
    ) -> Self {
        Self {
            topic,
            initial: initial.into(),
            rx,
            last_sent,
            sees_everything,
        }
    }

    /// The next update to send; `None` when the topic is gone.
    pub async fn next(&mut self) -> Option<Arc<Update>> {
        if let Some(u) = self.initial.pop_front() {
            self.last_sent = u.position;
            return Some(u);
        }
        loop {
            match self.rx.recv().await {
                Ok(u) if u.ephemeral => return Some(u),
                Ok(u) if u.is_snapshot() || u.position > self.last_sent => {
                    self.last_sent = u.position;
                    return Some(u);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("sse_gateway_clients_lagged_total").increment(1);
                    tracing::debug!(missed, "a client fell behind; sending a snapshot");
                    if let Some(latest) = self.topic.latest() {
                        self.last_sent = latest.position;
                        return Some(Arc::new(latest.as_snapshot()));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// What a browser resuming at `last_event` gets before live updates: nothing when it is
/// current, the updates it missed when the topic's history still holds them, otherwise the
/// current state as a snapshot (another epoch, or a gap too old). Returns the initial
/// updates and the position the browser is taken to hold.
pub fn resume(
    topic: &Topic,
    current: Arc<Update>,
    last_event: Option<Position>,
) -> (Vec<Arc<Update>>, Position) {
    let now = current.position;
    match last_event {
        Some(k) if k == now => (Vec::new(), k),
        Some(k) if k.epoch == now.epoch && k.seq < now.seq => match topic.replay_since(k, now) {
            Some(missed) => (missed, k),
            None => (vec![current], k),
        },
        // No id, one of another epoch (the poll was restored since), or from the future.
        _ => (vec![current], Position::START),
    }
}
