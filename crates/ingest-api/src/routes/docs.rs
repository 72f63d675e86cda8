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
    /// How many goals and funnels the site has (`GET /v1/sites/{site_id}/goals` lists them).
    pub goals: usize,
    pub funnels: usize,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/sites/{site_id}/exports`.
#[derive(ToSchema)]
pub struct NewExport {
    /// The site's local days: `day`, `7d`, `28d`, `30d`, `91d`, `month`, `year`, `6mo`,
    /// `12mo`, `all` (at most 3 years back), or `["YYYY-MM-DD", "YYYY-MM-DD"]` (first and last
    /// day, inclusive; at most 3 years). Resolved when the export is asked for.
    #[schema(value_type = Object)]
    pub date_range: serde_json::Value,
    /// `csv` (the default and only format).
    pub format: Option<String>,
    /// `events` (raw events, the default) or `visits`.
    pub kind: Option<String>,
}

/// An export job accepted.
#[derive(ToSchema)]
pub struct ExportAccepted {
    pub job_id: String,
    /// `queued`, or for a replayed key the job's state now.
    pub state: String,
    /// `GET` it (stats-api) for state and progress.
    pub status_url: String,
    /// Server-Sent Events of its progress (stats-api).
    pub stream_url: String,
}

/// `POST /v1/sites/{site_id}/goals`: exactly one of `event_name` and `page_path`.
#[derive(ToSchema)]
pub struct NewGoal {
    /// A custom event's name (1 to 120 characters; not `page_view`).
    pub event_name: Option<String>,
    /// A page path pattern starting with `/`: `*` matches within one path segment, `**`
    /// across segments (`/blog/**`).
    pub page_path: Option<String>,
    /// How answers name the goal (`event:goal`); default the event name, or
    /// `Visit <page_path>`. Unique within the site.
    pub display_name: Option<String>,
}

/// A goal.
#[derive(ToSchema)]
pub struct GoalBody {
    pub goal_id: String,
    /// `event` or `page`.
    pub goal_type: String,
    pub display_name: String,
    pub event_name: Option<String>,
    pub page_path: Option<String>,
}

/// `POST /v1/sites/{site_id}/funnels`.
#[derive(ToSchema)]
pub struct NewFunnel {
    /// 1 to 120 characters, unique within the site.
    pub name: String,
    /// 2 to 8 of the site's goals, by `goal_id` or `display_name`, in order.
    pub steps: Vec<String>,
}

/// A funnel step.
#[derive(ToSchema)]
pub struct FunnelStep {
    pub goal_id: String,
    pub display_name: String,
}

/// A funnel.
#[derive(ToSchema)]
pub struct FunnelBody {
    pub funnel_id: String,
    pub name: String,
    pub steps: Vec<FunnelStep>,
}

/// `GET /v1/sites/{site_id}/goals`.
#[derive(ToSchema)]
pub struct GoalList {
    pub goals: Vec<GoalBody>,
    pub funnels: Vec<FunnelBody>,
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

/// A recipient: a user id, or a user with the addresses email and SMS use.
#[derive(ToSchema)]
pub struct RecipientBody {
    /// 1 to 255 characters.
    pub user_id: String,
    pub email: Option<String>,
    /// E.164 (`+14155550100`).
    pub phone: Option<String>,
}

/// `POST /v1/notifications`: `recipients` or `topic`.
#[derive(ToSchema)]
pub struct NewNotification {
    /// 1 to 10,000 user ids or recipient objects (a user named twice counts once).
    #[schema(value_type = Option<Vec<Object>>)]
    pub recipients: Option<Vec<serde_json::Value>>,
    /// Every subscriber of this topic when the notification is fanned out.
    pub topic: Option<String>,
    /// 1 to 200 characters.
    pub title: String,
    /// 1 to 10,000 characters (the feed text, the email's text part, the SMS).
    pub body: String,
    /// The email's HTML part (up to 100,000 characters).
    pub html: Option<String>,
    /// A JSON object of at most 16 KiB, carried to feeds and webhooks.
    pub data: Option<serde_json::Value>,
    /// One or more of `in_app`, `webhook`, `email`, `sms`.
    pub channels: Vec<String>,
    /// `low`, `normal` (default) or `high`.
    pub priority: Option<String>,
    /// What webhook endpoints subscribe to (default `notification`).
    pub event_type: Option<String>,
}

/// `202` of `POST /v1/notifications`.
#[derive(ToSchema)]
pub struct NotificationAccepted {
    pub notification_id: String,
}

/// `POST /v1/webhooks/endpoints`.
#[derive(ToSchema)]
pub struct NewEndpoint {
    /// `http` or `https`; not on a loopback, private or link-local address (unless the
    /// operator sets WEBHOOK_ALLOW_INTERNAL).
    pub url: String,
    /// Event types it receives (`poll.closed`, a family `poll.*`, or `*`); empty or
    /// absent: every type.
    pub event_types: Option<Vec<String>>,
    /// Most deliveries per second to it (1 to 100,000); absent: no limit.
    pub rate_limit_per_s: Option<u32>,
    pub description: Option<String>,
}

/// `PATCH /v1/webhooks/endpoints/{endpoint_id}`: what changes.
#[derive(ToSchema)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `null` removes the limit.
    pub rate_limit_per_s: Option<u32>,
    pub description: Option<String>,
    /// `false` re-enables an endpoint disabled by a 410 or by an admin.
    pub disabled: Option<bool>,
}

/// A webhook endpoint.
#[derive(ToSchema)]
pub struct EndpointBody {
    pub endpoint_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub rate_limit_per_s: Option<u32>,
    pub description: String,
    pub disabled: bool,
    /// `gone` (it answered 410) or `admin`.
    pub disabled_reason: Option<String>,
    /// After a secret rotation: until when the old secret still signs beside the new one.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `201` of `POST /v1/webhooks/endpoints`: the endpoint and its signing secret.
#[derive(ToSchema)]
pub struct EndpointCreated {
    pub endpoint_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub rate_limit_per_s: Option<u32>,
    pub description: String,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
    /// After a rotation: until when the old secret still signs beside this one.
    pub previous_secret_expires_at: Option<String>,
    /// `whsec_` and base64: the Standard Webhooks signing secret, shown only here.
    pub secret: String,
}

/// `GET /v1/webhooks/endpoints`.
#[derive(ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointBody>,
}

/// `POST /v1/topics/{topic}/subscribers`.
#[derive(ToSchema)]
pub struct SubscribersBody {
    /// 1 to 10,000 user ids or recipient objects.
    #[schema(value_type = Vec<Object>)]
    pub subscribers: Vec<serde_json::Value>,
}

/// A topic.
#[derive(ToSchema)]
pub struct TopicBody {
    pub topic: String,
    /// Users whose subscription changed (subscribe only).
    pub changed: Option<u64>,
    pub subscribers: u64,
}

/// `POST /v1/users/{user_id}/feed/read`: exactly one of the three.
#[derive(ToSchema)]
pub struct ReadMarkBody {
    pub ids: Option<Vec<String>>,
    pub up_to: Option<String>,
    pub all: Option<bool>,
}

/// `200` of a read mark.
#[derive(ToSchema)]
pub struct ReadMarked {
    pub marked: i64,
    pub unread: i64,
}
