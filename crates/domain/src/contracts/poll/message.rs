//! What the worker reads from a vote shard queue.

use super::definition::{PollOption, PollSettings};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One message of a vote shard queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PollMessage {
    /// A poll was created.
    Poll {
        poll_id: String,
        question: String,
        options: Vec<PollOption>,
        closes_at_ms: Option<i64>,
        created_at_ms: i64,
        /// Absent in messages of polls made before settings existed: the defaults.
        #[serde(default)]
        settings: PollSettings,
        /// See [`crate::queue::queued_at_ms`].
        #[serde(default)]
        queued_at_ms: i64,
    },
    /// A poll was closed.
    Close {
        poll_id: String,
        closed_at_ms: i64,
        #[serde(default)]
        queued_at_ms: i64,
    },
    /// A vote was counted, or a voter moved theirs (written by `votes.lua`): the voter's
    /// choice as of `seq`, which replaces any earlier one.
    Vote {
        vote_id: Uuid,
        poll_id: String,
        /// The first of `option_ids` (the only one in messages written before several
        /// options could be chosen).
        option_id: String,
        #[serde(default)]
        option_ids: Vec<String>,
        user_id: String,
        seq: i64,
        voted_at_ms: i64,
        #[serde(default)]
        queued_at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
}

impl PollMessage {
    /// A vote's options (older messages carry only `option_id`).
    pub fn choices(&self) -> Vec<String> {
        match self {
            Self::Vote {
                option_id,
                option_ids,
                ..
            } if option_ids.is_empty() => vec![option_id.clone()],
            Self::Vote { option_ids, .. } => option_ids.clone(),
            _ => Vec::new(),
        }
    }
}
