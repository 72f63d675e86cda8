//! batch-worker: drains Tally's Redis queues into PostgreSQL.
//!
//! Items are claimed into a per-worker processing list (never popped into memory only),
//! written in batches with one statement that also updates the rollups, and acknowledged
//! after the commit. A heartbeat keeps a worker's batch its own; any worker requeues the
//! batch of a worker whose heartbeat expired. PostgreSQL outages are retried with backoff;
//! rows PostgreSQL can never store go to the dead-letter list with the reason.

pub mod config;
pub mod liveness;
pub mod polls;
pub mod restore;
pub mod retention;
pub mod rollup;
pub mod startup;
pub mod store;
pub mod worker;
