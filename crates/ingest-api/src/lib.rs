//! ingest-api: the write side of Tally. Accepts analytics events, votes, and poll and site
//! administration, validates them, and queues them in Redis (concurrent requests' events
//! in one push, see [`pusher`]). It never talks to PostgreSQL: a 202 means the item is in
//! Redis, and the batch-worker takes it from there.

pub mod admission;
pub mod ballot_box;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod limits;
pub mod pusher;
pub mod routes;
pub mod sites;
pub mod startup;
pub mod visitor;
