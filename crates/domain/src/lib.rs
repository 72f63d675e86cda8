//! Shared core of Tally: everything two services must agree on lives here, once.
//!
//! The four services (`ingest-api`, `sse-gateway`, `batch-worker`, `stats-api`) talk to each
//! other only through Redis. The contracts of that conversation (key names, queue message
//! formats, Lua scripts, pub/sub payloads) are defined in this crate, together with the
//! pieces every service needs the same way: configuration loading, connection pools,
//! migrations, telemetry, metrics and the shutdown signal.
//!
//! The core is framework-free. The `actix` feature adds the HTTP glue all services share
//! (health and metrics routes, request metrics, JSON error bodies, client address
//! resolution) so it is not copied four times.

pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod event;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod poll;
pub mod queue;
pub mod redis;
pub mod shutdown;
pub mod site;
pub mod telemetry;

#[cfg(feature = "actix")]
pub mod http;

#[cfg(feature = "testing")]
pub mod testing;

/// Re-exported so services use exactly the versions `domain` was built against.
pub use ::redis as redis_client;
pub use deadpool_postgres;
pub use tokio_postgres;
