//! Shapes of request and response bodies, for the OpenAPI document only (the handlers
//! parse and build JSON themselves, to report every validation problem at once).

#![allow(dead_code)]

use utoipa::ToSchema;

/// An analytics event.
#[derive(ToSchema)]
pub struct Event {
    /// 1 to 255 characters.
    pub site_id: String,
    /// 1 to 100 characters, e.g. `page_view`, `click`.
    pub event_type: String,
    /// RFC 3339 with a zone; any age.
    pub timestamp: String,
    /// Up to 1000 characters.
    pub path: Option<String>,
    /// Anonymous visitor id, up to 255 characters.
    pub user_id: Option<String>,
    /// A UUID; the same id twice is stored once. Assigned (UUIDv7) when absent.
    pub event_id: Option<String>,
    /// A JSON object of at most 4096 bytes.
    pub props: Option<serde_json::Value>,
}

/// Up to 1000 events; one invalid event refuses the whole batch.
#[derive(ToSchema)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

/// `202` of `POST /v1/events`.
#[derive(ToSchema)]
pub struct EventsAccepted {
    pub success: bool,
    pub accepted: usize,
    pub event_ids: Vec<String>,
}

/// `400` of the event endpoints: every problem listed.
#[derive(ToSchema)]
pub struct ValidationFailed {
    pub success: bool,
    /// `Validation failed` or `Invalid JSON body`.
    pub error: String,
    pub details: Vec<String>,
}

/// `202` of `POST /api/event`.
#[derive(ToSchema)]
pub struct EventReceived {
    pub success: bool,
    /// `Event received and queued for processing`.
    pub message: String,
}

/// `POST /v1/polls`.
#[derive(ToSchema)]
pub struct NewPoll {
    pub question: String,
    /// 2 to 20 distinct labels; their ids are `o1`, `o2`, ... in this order.
    pub options: Vec<String>,
    /// RFC 3339, in the future.
    pub closes_at: Option<String>,
}

#[derive(ToSchema)]
pub struct PollOption {
    pub id: String,
    pub label: String,
}

/// `201` of `POST /v1/polls`.
#[derive(ToSchema)]
pub struct PollCreated {
    pub poll_id: String,
    pub question: String,
    pub options: Vec<PollOption>,
    pub closes_at: Option<String>,
}

/// `POST /v1/polls/{poll_id}/votes`.
#[derive(ToSchema)]
pub struct Vote {
    pub option_id: String,
    /// One vote per user per poll, ever.
    pub user_id: String,
}

/// `202` of a vote: the poll's state after it.
#[derive(ToSchema)]
pub struct VoteAccepted {
    /// `accepted`.
    pub status: String,
    pub seq: i64,
    /// Option id → votes.
    pub tally: std::collections::HashMap<String, i64>,
    pub total: i64,
}

/// `POST /api/vote` (the poll design's shape).
#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct CompatVote {
    pub pollId: String,
    pub optionId: String,
    pub userId: String,
    /// Accepted and ignored: the server's clock orders votes.
    pub timestamp: Option<i64>,
    pub idempotencyKey: Option<String>,
}

/// An error: `{"error": code}` (`details` for invalid bodies).
#[derive(ToSchema)]
pub struct PollError {
    pub error: String,
    pub details: Option<Vec<String>>,
}
