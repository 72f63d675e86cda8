//! The contracts between services: Redis keys, queue messages, Lua scripts, pub/sub
//! channels and payloads, with the functions both sides of each contract call; and the
//! numbering of the visit rollups the worker writes and stats-api reads.

pub mod cache;
pub mod channel;
pub mod date_range;
pub mod dead_letters;
pub mod event;
pub mod goals;
pub mod jobs;
pub mod keys;
pub mod local_days;
pub mod notify;
pub mod poll;
pub mod presence;
pub mod queue;
pub mod registry;
pub mod site;
pub mod site_registry;
pub mod stream_token;
pub mod visitor_salt;
pub mod visits;
