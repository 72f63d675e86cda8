//! sse-gateway against real Redis.

mod feed;
mod helpers;
mod multiplexed;
mod ops;
mod polls;
mod settings;
mod sites;
mod tracker;
