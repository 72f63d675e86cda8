//! Polls and votes: the vote shard queues' messages (poll definitions, closes, votes)
//! stored in PostgreSQL ([`store`]), and polls put back into Redis after Redis lost them
//! ([`restore`]).

pub mod restore;
pub mod store;

use crate::lane::{Outcome, StoreError, Work};
use domain::deadpool_postgres::Pool;
use domain::poll::PollMessage;
use futures_util::future::BoxFuture;
use tracing::Instrument;

/// The vote shard queues' work.
pub struct VoteWork {
    pub pg: Pool,
    /// Sends `poll.closed` and `poll.votes_reached` after a batch is stored.
    pub triggers: Option<std::sync::Arc<crate::triggers::Triggers>>,
}

/// What a stored batch of poll messages changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VotesWritten {
    /// Polls and closes written, plus votes newly counted (replays are not).
    pub inserted: u64,
}

impl Outcome for VotesWritten {
    fn inserted(&self) -> u64 {
        self.inserted
    }

    fn merge(&mut self, other: Self) {
        self.inserted += other.inserted;
    }
}

impl Work for VoteWork {
    type Item<'a> = PollMessage;
    type Outcome = VotesWritten;
    const NAME: &'static str = "votes";

    fn parse(&self, raw: &[u8]) -> Result<PollMessage, String> {
        serde_json::from_slice(raw).map_err(|e| e.to_string())
    }

    fn traceparent<'a>(&self, item: &'a PollMessage) -> Option<&'a str> {
        match item {
            PollMessage::Vote { traceparent, .. } => traceparent.as_deref(),
            _ => None,
        }
    }

    fn write<'s, 'i: 's>(
        &'s self,
        messages: &'s [PollMessage],
    ) -> BoxFuture<'s, Result<VotesWritten, StoreError>> {
        let span = tracing::info_span!(
            "postgres.write",
            tables = "polls, poll_options, votes",
            rows = messages.len()
        );
        Box::pin(async move {
            let written = store::store_poll_messages(&self.pg, messages)
                .instrument(span)
                .await?;
            if let Some(triggers) = &self.triggers {
                triggers
                    .after_poll_batch(messages)
                    .await
                    .map_err(|e| StoreError::Transient(e.context("sending poll triggers")))?;
            }
            Ok(written)
        })
    }
}
