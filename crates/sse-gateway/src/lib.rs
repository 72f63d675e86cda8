//! sse-gateway: streams live poll tallies and live site activity to browsers over
//! Server-Sent Events, with a long-polling fallback and a demo page.
//!
//! One Redis pattern subscription per process (a subscription per channel on a cluster:
//! [`subscriber`]) feeds an in-process hub ([`hub`]) of generic topics that fan updates
//! out to any number of browsers, coalescing bursts and resynchronising browsers that fall
//! behind or reconnect. What each kind of
//! topic makes of its channel's messages is a feed ([`feeds`]: polls, sites).

pub mod config;
pub mod error;
pub mod feeds;
pub mod hub;
pub mod limits;
pub mod peer;
pub mod presence;
pub mod reader;
pub mod routes;
pub mod startup;
pub mod subscriber;
