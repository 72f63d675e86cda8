//! stats-api against real Redis and PostgreSQL. Rollup rows are written directly here (the
//! worker's side is tested in batch-worker and end to end in e2e).

mod filters;
mod grafana;
mod helpers;
mod hostile;
mod openapi;
mod polls;
mod stats;
mod timeseries;
mod zones;
