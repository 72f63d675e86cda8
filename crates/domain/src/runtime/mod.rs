//! What every service needs the same way at run time. PostgreSQL and the HTTP glue are
//! behind the `postgres` and `actix` features.

pub mod auth;
pub mod backoff;
#[cfg(feature = "actix")]
pub mod body_deadline;
pub mod config;
#[cfg(feature = "actix")]
pub mod http;
pub mod metrics;
pub mod net;
#[cfg(feature = "actix")]
pub mod openapi;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "actix")]
pub mod problem;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
