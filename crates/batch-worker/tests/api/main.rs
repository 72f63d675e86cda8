//! batch-worker against real Redis and PostgreSQL.

mod drain;
mod helpers;
mod polls;
mod reliability;
mod retention;
