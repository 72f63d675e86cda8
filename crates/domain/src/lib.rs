//! Shared core of Tally: everything two services must agree on lives here, once.
//!
//! The four services (`ingest-api`, `sse-gateway`, `batch-worker`, `stats-api`) talk to each
//! other only through Redis. The crate has two layers:
//!
//! - [`contracts`]: what crosses a process boundary. Key names, queue message formats, Lua
//!   scripts, pub/sub channels and payloads, and the functions that read and write them.
//!   A contract is a function here that the writer and every reader call, never a key
//!   name and a comment. This layer knows nothing of HTTP or PostgreSQL.
//! - [`runtime`]: what every service needs the same way: configuration, Redis connections,
//!   telemetry, metrics, the shutdown signal, retry backoff, bearer tokens; behind cargo
//!   features, PostgreSQL (`postgres`) and the shared HTTP glue (`actix`), so a service
//!   compiles only what it uses (ingest-api and sse-gateway never build the PostgreSQL
//!   driver).
//!
//! Every module is also re-exported at the crate root (`domain::keys`, `domain::poll`, ...)
//! so call sites stay short. Test helpers are behind the `testing` feature.

pub mod contracts;
pub mod runtime;

pub use contracts::{
    cache, channel, date_range, dead_letters, event, goals, jobs, keys, local_days, notify, poll,
    presence, queue, registry, site, site_registry, stream_token, visitor_salt, visits,
};
#[cfg(feature = "postgres")]
pub use runtime::postgres;
pub use runtime::{auth, backoff, config, metrics, net, redis, shutdown, telemetry};
#[cfg(feature = "actix")]
pub use runtime::{body_deadline, http, problem};

#[cfg(feature = "testing")]
pub mod testing;

/// Re-exported so services use exactly the versions `domain` was built against.
pub use ::redis as redis_client;
#[cfg(feature = "postgres")]
pub use deadpool_postgres;
#[cfg(feature = "redis-pool")]
pub use deadpool_redis;
#[cfg(feature = "postgres")]
pub use tokio_postgres;
