//! Shapes of JSON response bodies, for the OpenAPI document only.

#![allow(dead_code)]

use utoipa::ToSchema;

/// `GET /config.json`: where the demo page sends votes and reads results (empty: its own
/// origin).
#[derive(ToSchema)]
pub struct DemoConfig {
    pub ingest_url: String,
    pub stats_url: String,
    /// The user whose feed the demo's bell shows (`DEMO_FEED_USER`), and its feed token.
    pub feed_user: Option<String>,
    pub feed_token: Option<String>,
}

/// `GET /v1/polls/{poll_id}/updates`.
#[derive(ToSchema)]
pub struct PollUpdate {
    pub seq: i64,
    /// Option id → votes; empty while the poll's settings hide its counts.
    pub tally: std::collections::HashMap<String, i64>,
    /// Voters.
    pub total: i64,
    pub closed: bool,
    /// Whether `seq` is past the `since_seq` asked for.
    pub changed: bool,
    /// Present (true) while the counts are hidden.
    pub hidden: Option<bool>,
}
