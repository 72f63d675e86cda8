//! End-to-end tests: real binaries, real Redis and PostgreSQL.

mod analytics;
mod cluster;
mod crash;
mod exports;
mod goals;
mod half_open;
mod helpers;
mod hours;
mod metrics;
mod notifications;
mod notify;
mod polls;
mod proxy;
mod query;
mod readiness;
mod receiver;
mod replication;
mod sites;
mod traces;
mod triggers;
mod weeks;
