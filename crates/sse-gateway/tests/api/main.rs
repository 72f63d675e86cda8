//! sse-gateway against real Redis.

mod helpers;
mod ops;
mod polls;
mod sites;
mod tracker;
