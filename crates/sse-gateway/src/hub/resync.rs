//! Resynchronising every topic after the subscription was lost and messages may have been
//! missed: each topic's state is read afresh and sent to its browsers as a snapshot.
//!
//! The subscription and the connection the state is read on are separate sockets, and
//! they do not come back together: after a network cut the new subscription can be whole
//! while the command connection still holds the dead socket and fails its first command.
//! A read that fails is therefore asked again, with backoff, until it succeeds; giving up
//! after one try left browsers on a tally without the votes cast while the gateway was
//! cut off, with nothing to correct it until the next vote.

use super::{Hub, Position, Topic, Update};
use domain::backoff::Backoff;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The first pause before a topic whose state could not be read is asked again; pauses
/// double up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

impl Hub {
    /// Sends every topic's freshly read state as a snapshot, in the background so the
    /// subscription keeps delivering meanwhile. A topic is asked again until its state is
    /// read, nobody reads the topic any more, or a newer resynchronisation starts.
    pub fn resync(self: &Arc<Self>) -> JoinHandle<()> {
        let round = self.resync_round.fetch_add(1, Ordering::SeqCst) + 1;
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let superseded = || hub.resync_round.load(Ordering::SeqCst) != round;
            let mut pending = hub.all();
            let mut backoff = Backoff::new(FIRST_PAUSE, MAX_PAUSE);
            while !pending.is_empty() {
                let mut again = Vec::new();
                let mut last_error = None;
                for topic in pending {
                    if superseded() {
                        return;
                    }
                    match topic.feed.resync().await {
                        Ok(Some(update)) => {
                            if !topic.take_resync(update) {
                                again.push(topic);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            metrics::counter!("sse_gateway_resync_failures_total").increment(1);
                            last_error = Some(e);
                            again.push(topic);
                        }
                    }
                }
                pending = again.into_iter().filter(|t| t.in_use()).collect();
                if pending.is_empty() || superseded() {
                    return;
                }
                let pause = backoff.next_pause();
                if let Some(e) = last_error {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        topics = pending.len(),
                        retry_in_ms = pause.as_millis() as u64,
                        "could not resynchronise open streams yet"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        })
    }
}

impl Topic {
    /// Sends `update`, a state read afresh, to every reader as a snapshot, unless the topic
    /// already holds a newer one (an update that arrived on the new subscription while the
    /// state was read). Returns whether the topic now holds a state at least as new as
    /// `update`'s; `false` asks for another read, since sending the older state would take
    /// every browser back, and dropping it could lose what was missed before the newer
    /// update (a feed's items come one per message).
    fn take_resync(&self, update: Update) -> bool {
        let mut state = self.lock();
        let newest = Self::newest(&state).unwrap_or(Position::START);
        if newest > update.position {
            return false;
        }
        // An update waiting for the interval's end is older than this state: sending it
        // after the snapshot would take browsers back.
        state.pending = None;
        self.emit_locked(&mut state, Arc::new(update.as_snapshot()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Feed, HubSettings, Offer, SNAPSHOT};
    use domain::channel::Channel;
    use domain::keys::Keys;
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// A feed whose state reads fail `failures` times, then give the sequence numbers of
    /// `reads` in turn (the last one from then on).
    struct Flaky {
        failures: usize,
        reads: Vec<i64>,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn new(failures: usize, reads: &[i64]) -> Arc<Self> {
            Arc::new(Self {
                failures,
                reads: reads.to_vec(),
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Feed for Flaky {
        fn on_message(&self, payload: &str) -> Option<Offer> {
            let position = Position::parse_event_id(payload)?;
            Some(Offer::Ready(Update::new("tally", position, payload.into())))
        }

        fn resync(&self) -> BoxFuture<'_, anyhow::Result<Option<Update>>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if call < self.failures {
                    anyhow::bail!("the connection is still down");
                }
                let seq = self.reads[(call - self.failures).min(self.reads.len() - 1)];
                Ok(Some(Update::new("tally", at(seq), seq.to_string())))
            })
        }
    }

    fn at(seq: i64) -> Position {
        Position { epoch: 0, seq }
    }

    fn hub_with(feed: &Arc<Flaky>) -> (Arc<Hub>, Arc<Topic>) {
        let keys = Keys::new("t");
        let hub = Arc::new(Hub::new(
            &keys,
            HubSettings {
                history: 4,
                lag_capacity: 8,
            },
        ));
        let feed: Arc<dyn Feed> = feed.clone();
        let topic = hub.topic(Channel::Poll("p".into()), Duration::ZERO, || feed);
        (hub, topic)
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_that_cannot_be_read_yet_is_read_again_until_it_is_sent() {
        let feed = Flaky::new(3, &[7]);
        let (hub, topic) = hub_with(&feed);
        let mut reader = topic.subscribe();
        hub.resync()
            .await
            .expect("the task ends once every topic is sent");
        let sent = reader.recv().await.expect("the snapshot");
        assert_eq!((sent.event, sent.position), (SNAPSHOT, at(7)));
        assert_eq!(
            feed.calls.load(Ordering::SeqCst),
            4,
            "three failures, one read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_older_than_an_update_already_sent_is_read_again_not_sent() {
        let feed = Flaky::new(0, &[4, 9]);
        let (hub, topic) = hub_with(&feed);
        let mut reader = topic.subscribe();
        // An update on the new subscription got ahead of the first read.
        hub.on_message(&Channel::Poll("p".into()).name(&Keys::new("t")), "5");
        hub.resync().await.expect("the task ends");
        let live = reader.recv().await.expect("the live update");
        assert_eq!(live.position, at(5));
        let sent = reader.recv().await.expect("the snapshot");
        assert_eq!((sent.event, sent.position), (SNAPSHOT, at(9)));
        assert!(
            reader.try_recv().is_err(),
            "the stale read at 4 was never sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_resynchronisation_takes_over_and_nobody_reading_ends_it() {
        let feed = Flaky::new(usize::MAX, &[1]);
        let (hub, topic) = hub_with(&feed);
        let reader = topic.subscribe();
        let first = hub.resync();
        let second = hub.resync();
        first.await.expect("the older one gives way");
        drop(reader);
        second
            .await
            .expect("a topic nobody reads is not read again");
        assert!(topic.latest().is_none(), "nothing was ever sent");
    }
}
