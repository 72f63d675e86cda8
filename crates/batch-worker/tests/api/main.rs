//! batch-worker against real Redis and PostgreSQL.

mod accept;
mod drain;
mod enrichment;
mod feeds;
mod helpers;
mod hours;
mod polls;
mod reliability;
mod retention;
mod sites;
mod waiting;
mod weeks;
