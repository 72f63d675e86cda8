//! stats-api: Tally's read side. Site stats, time series, poll results and the Grafana data
//! source are answered from the rollups the batch-worker keeps in PostgreSQL, in each
//! site's own time zone, and cached in Redis until the worker commits something new for the
//! site. Only filtered stats read raw events, and only over ranges known to be small
//! ([`filters`]). The query API ([`query`]) reads the visits the worker keeps and the
//! rollups.

pub mod bounds;
pub mod cache;
pub mod config;
pub mod error;
pub mod filters;
pub mod local_time;
pub mod query;
pub mod rollups;
pub mod routes;
pub mod sites;
pub mod startup;
pub mod visitors;
