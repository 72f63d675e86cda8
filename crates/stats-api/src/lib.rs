//! stats-api: Tally's read side. Site stats, time series (and, with the polls work, poll
//! results and the Grafana data source) are answered from the rollups the batch-worker keeps
//! in PostgreSQL, never from a scan of raw events, and cached in Redis until the worker
//! commits something new for the site.

pub mod bounds;
pub mod cache;
pub mod config;
pub mod error;
pub mod rollups;
pub mod routes;
pub mod startup;
pub mod visitors;
