//! ingest-api against real Redis: one binary, one module per resource.

mod ballots;
mod events;
mod goals;
mod helpers;
mod notifications;
mod ops;
mod poll_settings;
mod polls;
mod sites;
mod slow_clients;
mod visitors;
