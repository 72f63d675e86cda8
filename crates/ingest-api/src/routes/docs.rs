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
    /// Browser events: the page's URL (http or https, up to 2048 characters). The server
    /// derives `path` (when not given), `hostname` and the UTM fields from it.
    pub url: Option<String>,
    /// Browser events: `document.referrer`; the server derives the referrer and its source.
    pub referrer: Option<String>,
    /// Browser events: the viewport width in CSS pixels (device class: under 576 mobile,
    /// under 992 tablet, else desktop).
    pub screen_width: Option<u32>,
    /// Browser events: `navigator.webdriver`; `true` drops the event (automation).
    pub automated: Option<bool>,
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
    /// Events left out as bot traffic, by reason (`bot_user_agent`, `headless`,
    /// `automation`, `no_user_agent`, `data_center`); absent when none was.
    pub dropped: Option<std::collections::HashMap<String, u64>>,
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
    /// Fewest options a vote names (default 1).
    pub min_choices: Option<u8>,
    /// Most options a vote names (default: `min_choices`, or 1); at most the options.
    pub max_choices: Option<u8>,
    /// `always` (default), `after_vote` (a voter sees counts in their vote's answer and,
    /// with its `results_token`, on streams), `after_close` (the total only until closed).
    pub results: Option<String>,
    /// A voter may move their vote until the poll closes (default false).
    pub allow_change: Option<bool>,
    /// `open` (default: `user_id` trusted) or `signed` (a vote carries `voter_token`,
    /// needs `VOTER_TOKEN_SECRET`).
    pub voters: Option<String>,
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

/// `POST /v1/polls/{poll_id}/votes`: `option_id`, or `option_ids` for a multi-choice poll.
#[derive(ToSchema)]
pub struct Vote {
    pub option_id: Option<String>,
    /// Distinct option ids, between the poll's `min_choices` and `max_choices`.
    pub option_ids: Option<Vec<String>>,
    /// One vote per user per poll (moved, not repeated, when the poll allows changes).
    pub user_id: String,
    /// `voters: signed` polls: `"v1." + base64url(HMAC-SHA256(VOTER_TOKEN_SECRET,
    /// "v1.voter." + poll_id + "." + user_id))`, minted by the host application.
    pub voter_token: Option<String>,
}

/// `202` of a vote: the poll's state after it.
#[derive(ToSchema)]
pub struct VoteAccepted {
    /// `accepted`, or `unchanged` (a moved vote that chose what it had).
    pub status: String,
    pub seq: i64,
    /// Option id → votes; absent while the poll's results are hidden (`after_close`).
    pub tally: Option<std::collections::HashMap<String, i64>>,
    /// Voters (one vote each).
    pub total: i64,
    /// `hidden` (counts withheld until the close) or `after_vote`.
    pub results: Option<String>,
    /// `after_vote` polls: a stream token that opens the poll's counts on streams
    /// (`?token=`), valid 24 h.
    pub results_token: Option<String>,
}

/// `POST /api/vote` (the poll design's shape).
#[derive(ToSchema)]
#[allow(non_snake_case)]
pub struct CompatVote {
    pub pollId: String,
    pub optionId: String,
    pub userId: String,
    /// Milliseconds since the epoch (0 to 253402300799999), or an ISO 8601 date string.
    /// Checked, not used: the server's clock orders votes.
    #[schema(value_type = Option<Object>)]
    pub timestamp: Option<serde_json::Value>,
    pub idempotencyKey: Option<String>,
}

/// `200` of `POST /v1/polls/{poll_id}/close`.
#[derive(ToSchema)]
pub struct PollClosed {
    pub poll_id: String,
    /// Always `true`.
    pub closed: bool,
}

/// `202` of `POST /api/vote`: `{"status": "accepted"}`.
#[derive(ToSchema)]
pub struct CompatAccepted {
    pub status: String,
}

/// An error: `{"error": code, "details"?: [...]}`.
#[derive(ToSchema)]
pub struct CodedError {
    /// A stable code: `unknown_site`, `domain_not_allowed`, `site_exists`, `site_not_found`,
    /// `invalid_body`, `restoring`, `unauthorized`.
    pub error: String,
    pub details: Option<Vec<String>>,
}

/// `POST /v1/sites`.
#[derive(ToSchema)]
pub struct NewSite {
    /// 1 to 255 characters, no control characters: the `site_id` events carry.
    pub site_id: String,
    /// Hosts browser events may come from; a domain covers its subdomains. Empty (the
    /// default): any host. At most 100.
    pub domains: Option<Vec<String>>,
    /// IANA time zone of the site's days in every stats answer (default `UTC`).
    pub timezone: Option<String>,
    /// Stats and the live stream readable without a token (default false).
    pub public: Option<bool>,
}

/// `PATCH /v1/sites/{site_id}`: what changes.
#[derive(ToSchema)]
pub struct SitePatch {
    pub domains: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub public: Option<bool>,
}

/// A registered site.
#[derive(ToSchema)]
pub struct SiteBody {
    pub site_id: String,
    pub domains: Vec<String>,
    pub timezone: String,
    pub public: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /v1/sites`.
#[derive(ToSchema)]
pub struct SiteList {
    pub sites: Vec<SiteBody>,
}

/// An error: `{"error": code}` (`details` for invalid bodies).
#[derive(ToSchema)]
pub struct PollError {
    pub error: String,
    pub details: Option<Vec<String>>,
}
