//! A poll's live tally: every message of the poll's channel is its full state after a vote,
//! close or restore, at the poll's position `{epoch, seq}`; the hub coalesces them.

use crate::hub::{Feed, Offer, Position, SNAPSHOT, Update};
use anyhow::Context;
use domain::keys::Keys;
use domain::poll::{PollLookup, PollState};
use domain::redis::RedisConn;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// The SSE event name of a poll's new tally.
pub const TALLY: &str = "tally";

/// The feed of one poll's topic.
pub struct PollFeed {
    poll_id: String,
    keys: Keys,
    redis: RedisConn,
}

impl PollFeed {
    pub fn new(poll_id: String, keys: Keys, redis: RedisConn) -> Self {
        Self {
            poll_id,
            keys,
            redis,
        }
    }
}

#[derive(serde::Deserialize)]
struct PositionOnly {
    #[serde(default)]
    epoch: i64,
    seq: i64,
}

/// A poll's position in its state's JSON.
pub fn position_of(state: &PollState) -> Position {
    Position {
        epoch: state.epoch,
        seq: state.seq,
    }
}

/// A poll's state as an update named `event`, with the total-only payload beside it when
/// the poll's settings hide its counts from readers who have not voted.
fn update_of(event: &'static str, state: &PollState, data: String) -> Update {
    Update {
        hidden: (!state.results_public()).then(|| {
            serde_json::to_string(&state.without_counts())
                .unwrap_or_default()
                .into()
        }),
        ..Update::new(event, position_of(state), data)
    }
}

/// A poll's state as a snapshot.
pub fn snapshot(state: &PollState) -> Arc<Update> {
    Arc::new(update_of(
        SNAPSHOT,
        state,
        serde_json::to_string(state).unwrap_or_default(),
    ))
}

impl Feed for PollFeed {
    fn on_message(&self, payload: &str) -> Option<Offer> {
        // Most polls show their counts to everyone: then only the position is read and the
        // payload goes out as published.
        if !payload.contains("\"results\":\"after_") {
            let p: PositionOnly = serde_json::from_str(payload).ok()?;
            return Some(Offer::Ready(Update::new(
                TALLY,
                Position {
                    epoch: p.epoch,
                    seq: p.seq,
                },
                payload.to_string(),
            )));
        }
        let state: PollState = serde_json::from_str(payload).ok()?;
        Some(Offer::Ready(update_of(TALLY, &state, payload.to_string())))
    }

    fn resync(&self) -> BoxFuture<'_, anyhow::Result<Option<Update>>> {
        Box::pin(async move {
            let mut redis = self.redis.clone();
            let now = chrono::Utc::now();
            let lookup = domain::poll::lookup(&mut redis, &self.keys, &self.poll_id, now).await;
            match lookup.with_context(|| format!("reading poll {}", self.poll_id))? {
                PollLookup::Found(state) => Ok(Some((*snapshot(&state)).clone())),
                _ => Ok(None),
            }
        })
    }
}
