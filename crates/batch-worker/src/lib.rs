//! batch-worker: drains Tally's Redis queues into PostgreSQL.
//!
//! [`lane`] is the generic reliable drain: items are claimed into a per-lane processing
//! list (never popped into memory only), written in batches, and acknowledged after the
//! commit together with the work's Redis side effects; heartbeats keep a lane's batch its
//! own and any worker requeues the batch of a lane whose heartbeat expired. Each kind of
//! work implements [`lane::Work`] in its own module: [`events`] (analytics events and their
//! rollups), [`votes`] (polls and votes) and [`sites`] (the site registry); [`restore`] puts
//! back the polls and the registry when Redis lost them.

pub mod config;
pub mod delivery;
pub mod events;
pub mod exports;
pub mod lane;
pub mod notify;
pub mod restore;
pub mod sites;
pub mod startup;
pub mod triggers;
pub mod votes;
