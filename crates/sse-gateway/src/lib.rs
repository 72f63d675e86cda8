//! sse-gateway: streams live poll tallies and live site activity to browsers over
//! Server-Sent Events, with a long-polling fallback and a demo page.
//!
//! One Redis pattern subscription per process feeds an in-process hub ([`hub`]) that fans
//! updates out to any number of browsers, coalescing bursts and resynchronising browsers
//! that fall behind or reconnect.

pub mod config;
pub mod error;
pub mod hub;
pub mod limits;
pub mod routes;
pub mod startup;
pub mod subscriber;
