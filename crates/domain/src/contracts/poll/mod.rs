//! Polls and votes: request validation ([`definition`], [`ballot`]), the queue messages the
//! worker stores ([`message`]), and the Redis operations (Lua scripts) that make voting
//! atomic ([`voting`], [`lifecycle`], [`state`]).
//!
//! Redis holds the hot state (definition and settings, tally, voters); PostgreSQL the
//! durable record. Every change is one script: it checks, changes the state, queues a
//! message for the worker in the poll's shard queue, and publishes the new state for live
//! watchers.

pub mod ballot;
pub mod definition;
pub mod lifecycle;
pub mod message;
pub mod state;
pub mod voting;

pub use ballot::{
    Ballot, BallotError, IDEMPOTENCY_TTL_SECONDS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_USER_ID_CHARS,
    check_ballot, check_idempotency_key, voter_token,
};
pub use definition::{
    MAX_LABEL_CHARS, MAX_OPTIONS, MAX_QUESTION_CHARS, MIN_OPTIONS, NewPoll, PollOption,
    PollSettings, Results, Voters, parse_new_poll,
};
pub use lifecycle::{CloseOutcome, PersistedPoll, close, create, restore};
pub use message::PollMessage;
pub use state::{PollLookup, PollState, lookup, read_state, shard_marker};
pub use voting::{MAX_VOTES_PER_CALL, Vote, VoteOutcome, vote, vote_all};
