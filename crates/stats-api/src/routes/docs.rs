//! Shapes of response bodies, for the OpenAPI document only (the handlers build their JSON
//! with `json!`, adding fields only when they apply).

#![allow(dead_code)]

use utoipa::ToSchema;

/// A path and its views.
#[derive(ToSchema)]
pub struct PathViews {
    pub path: String,
    pub views: i64,
}

/// `200` of `GET /v1/stats`.
#[derive(ToSchema)]
pub struct SiteStats {
    pub site_id: String,
    /// The day (`YYYY-MM-DD`), `all-time`, or `FROM/TO` for a range (`..` for an open end).
    pub date: String,
    pub total_views: i64,
    pub unique_users: i64,
    /// Present (true) when `unique_users` is a HyperLogLog estimate.
    pub unique_users_estimated: Option<bool>,
    pub top_paths: Vec<PathViews>,
    /// The range's first and last local day, when `from`/`to` were given.
    pub from: Option<String>,
    pub to: Option<String>,
    /// When not `page_view`.
    pub event_type: Option<String>,
    /// The site's time zone, when not UTC.
    pub timezone: Option<String>,
    /// The filters applied, when any.
    pub filters: Option<String>,
    /// Browsers on the site's live stream now, over every gateway; null when Redis cannot say.
    pub watchers: Option<u64>,
}

/// `200` of `GET /api/stats` (the analytics design's shape).
#[derive(ToSchema)]
pub struct CompatStats {
    pub site_id: String,
    pub date: String,
    pub total_views: i64,
    pub unique_users: i64,
    pub unique_users_estimated: Option<bool>,
    pub top_paths: Vec<PathViews>,
}

/// One point of a time series.
#[derive(ToSchema)]
pub struct Point {
    /// The bucket's start, RFC 3339.
    pub t: String,
    pub value: i64,
}

/// An option of a persisted poll.
#[derive(ToSchema)]
pub struct OptionVotes {
    pub id: String,
    pub label: String,
    /// Absent while the poll's settings hide counts.
    pub votes: Option<i64>,
}

/// A poll's settings.
#[derive(ToSchema)]
pub struct PollSettings {
    pub min_choices: u8,
    pub max_choices: u8,
    /// `always`, `after_vote` or `after_close`.
    pub results: String,
    pub allow_change: bool,
    /// `open` or `signed`.
    pub voters: String,
}

/// `200` of `GET /v1/polls/{poll_id}`.
#[derive(ToSchema)]
pub struct PollResults {
    pub poll_id: String,
    pub question: String,
    pub options: Vec<OptionVotes>,
    /// Voters (one vote each).
    pub total: i64,
    pub closed: bool,
    pub closes_at: Option<String>,
    pub settings: PollSettings,
    /// Present (true) while the settings hide per-option counts.
    pub hidden: Option<bool>,
    /// Browsers watching the poll's streams now; null when Redis cannot say.
    pub watchers: Option<u64>,
}

/// `{"status": "ok"}`.
#[derive(ToSchema)]
pub struct Status {
    pub status: String,
}

/// A chartable metric of the Grafana data source, with the payloads it takes.
#[derive(ToSchema)]
pub struct GrafanaMetric {
    pub label: String,
    pub value: String,
    #[schema(value_type = Vec<Object>)]
    pub payloads: Vec<serde_json::Value>,
}

/// A choice of a select payload.
#[derive(ToSchema)]
pub struct LabelValue {
    pub label: String,
    pub value: String,
}

/// A time series (`{target, refId, datapoints: [[value, ms]]}`) or a table
/// (`{type: "table", refId, columns, rows}`).
#[derive(ToSchema)]
pub struct GrafanaResult {
    pub target: Option<String>,
    #[schema(rename = "refId")]
    pub ref_id: Option<String>,
    /// Time series: `[value, epoch milliseconds]` pairs.
    #[schema(value_type = Option<Vec<Vec<f64>>>)]
    pub datapoints: Option<serde_json::Value>,
    /// Tables: `table`.
    #[schema(rename = "type")]
    pub kind: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub columns: Option<serde_json::Value>,
    /// Rows of cells (strings and numbers).
    #[schema(value_type = Option<Vec<Vec<serde_json::Value>>>)]
    pub rows: Option<serde_json::Value>,
}

/// A value of a dashboard variable.
#[derive(ToSchema)]
pub struct VariableValue {
    pub __text: String,
    pub __value: String,
}

/// An ad hoc filter key.
#[derive(ToSchema)]
pub struct TagKey {
    #[schema(rename = "type")]
    pub kind: String,
    pub text: String,
}

/// An ad hoc filter value.
#[derive(ToSchema)]
pub struct TagValue {
    pub text: String,
}

/// One channel of a notification's status.
#[derive(ToSchema)]
pub struct ChannelStatus {
    /// `queued`, `delivering`, `delivered`, `failed` or `dead`.
    pub state: String,
    pub completed: i64,
    pub total: Option<i64>,
    /// Attempts made on this channel (deliveries only).
    pub attempts: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    /// Deliveries by state.
    pub counts: Option<std::collections::HashMap<String, i64>>,
    /// Recipients the channel could not reach (no address).
    pub skipped: Option<i64>,
}

/// `progress` of a notification.
#[derive(ToSchema)]
pub struct Progress {
    pub completed: i64,
    pub total: Option<i64>,
}

/// `GET /v1/jobs/{job_id}`.
#[derive(ToSchema)]
pub struct JobStatus {
    pub job_id: String,
    /// `export`.
    #[schema(rename = "type")]
    pub job_type: String,
    pub site_id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Percent done (100 once done).
    pub progress: f64,
    /// Rows written so far.
    pub completed: u64,
    /// Rows expected (counted when the job was planned, corrected as it runs; the rows
    /// written once done).
    pub total: u64,
    /// Workers that took the job (more than 1: one stopped and another resumed it).
    pub attempts: u32,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When the job and its file are deleted (24 hours after it ended).
    pub expires_at: Option<String>,
    pub export: Option<ExportDescription>,
    /// Once done: the CSV.
    pub download_url: Option<String>,
    /// Once failed: why.
    pub error: Option<String>,
}

/// What an export job exports.
#[derive(ToSchema)]
pub struct ExportDescription {
    /// `events` or `visits`.
    pub kind: String,
    /// `csv`.
    pub format: String,
    /// First and last local day.
    pub date_range: Vec<String>,
}

/// `GET /v1/notifications/{id}`.
#[derive(ToSchema)]
pub struct NotificationStatus {
    pub notification_id: String,
    pub event_type: String,
    pub title: String,
    pub created_at: String,
    pub topic: Option<String>,
    pub state: String,
    pub progress: Progress,
    /// By channel name.
    pub channels: std::collections::HashMap<String, ChannelStatus>,
}

/// One attempt of a delivery.
#[derive(ToSchema)]
pub struct AttemptBody {
    pub attempt: i32,
    pub started_at: String,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    /// `delivered`, `failed`, `exhausted`, `refused`, `interrupted`.
    pub outcome: String,
    pub error: Option<String>,
}

/// A delivery with its attempts.
#[derive(ToSchema)]
pub struct DeliveryBody {
    /// The `webhook-id` of every attempt.
    pub delivery_id: String,
    pub channel: String,
    pub target: String,
    pub user_id: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub attempt_log: Vec<AttemptBody>,
}

/// `GET /v1/notifications/{id}/deliveries`.
#[derive(ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryBody>,
    pub next_cursor: Option<String>,
}

/// One feed item.
#[derive(ToSchema)]
pub struct FeedItem {
    /// The notification id.
    pub id: String,
    pub epoch: i64,
    pub seq: i64,
    pub event_type: String,
    pub title: String,
    pub body: String,
    pub data: Option<serde_json::Value>,
    pub priority: String,
    pub created_at: String,
    pub read: bool,
}

/// `GET /v1/users/{user_id}/feed`.
#[derive(ToSchema)]
pub struct FeedPage {
    pub user_id: String,
    pub unread: i64,
    pub items: Vec<FeedItem>,
    pub next_cursor: Option<String>,
}

/// One dead letter.
#[derive(ToSchema)]
pub struct DeadLetterBody {
    /// Names it in a retry.
    pub id: String,
    pub queue: String,
    pub reason: Option<String>,
    pub at: Option<String>,
    pub worker_id: Option<String>,
    /// What it carried (JSON when it was JSON).
    pub item: Option<serde_json::Value>,
    /// A letter that is not a dead-letter record, as stored.
    pub raw: Option<String>,
}

/// `GET /v1/dead-letters`.
#[derive(ToSchema)]
pub struct DeadLetterList {
    pub total: usize,
    pub dead_letters: Vec<DeadLetterBody>,
}

/// `POST /v1/dead-letters/retry`: `ids`, or a `queue` (and a `reason` filter).
#[derive(ToSchema)]
pub struct RetryBody {
    pub queue: Option<String>,
    pub ids: Option<Vec<String>>,
    pub reason: Option<String>,
}

#[derive(ToSchema)]
pub struct Retried {
    pub retried: u64,
}

#[derive(ToSchema)]
pub struct Purged {
    pub purged: u64,
}

/// One row of a `POST /v2/query` answer.
#[derive(ToSchema)]
pub struct QueryRow {
    /// In the order of the query's `metrics` (numbers).
    pub metrics: Vec<f64>,
    /// In the order of the query's `dimensions`.
    pub dimensions: Vec<String>,
}

/// A funnel step's goal.
#[derive(ToSchema)]
pub struct FunnelStepGoal {
    pub goal_id: String,
    pub display_name: Option<String>,
}

/// A funnel's definition.
#[derive(ToSchema)]
pub struct FunnelDefinition {
    pub funnel_id: String,
    pub name: String,
    pub steps: Vec<FunnelStepGoal>,
}

/// `200` of `GET /v1/sites/{site_id}/funnels`.
#[derive(ToSchema)]
pub struct FunnelList {
    pub funnels: Vec<FunnelDefinition>,
}

/// A step of a funnel's report.
#[derive(ToSchema)]
pub struct FunnelReportStep {
    pub goal_id: String,
    pub label: String,
    pub visitors: i64,
    /// Percent of the visitors who entered the funnel (reached step 1).
    pub conversion_rate: f64,
    /// Percent of the visitors who reached the step before.
    pub conversion_rate_step: f64,
    /// Visitors of the step before who did not reach this one (0 for step 1).
    pub dropoff: i64,
    pub dropoff_percentage: f64,
}

/// `200` of `GET /v1/sites/{site_id}/funnels/{funnel_id}`.
#[derive(ToSchema)]
pub struct FunnelReport {
    pub funnel_id: String,
    pub name: String,
    /// The first and last local instants of the range.
    pub date_range: Vec<String>,
    /// Visitors with a visit started in the range.
    pub all_visitors: i64,
    pub entering_visitors: i64,
    pub entering_visitors_percentage: f64,
    pub never_entering_visitors: i64,
    pub never_entering_visitors_percentage: f64,
    /// Visitors who completed every step, percent of all visitors.
    pub conversion_rate: f64,
    pub steps: Vec<FunnelReportStep>,
}

/// `200` of `POST /v2/query`.
#[derive(ToSchema)]
pub struct QueryAnswer {
    pub results: Vec<QueryRow>,
    /// `total_rows` and `time_labels` when `include` asked for them.
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
    /// The query as understood: `date_range` resolved to the site's local start and end.
    #[schema(value_type = Object)]
    pub query: serde_json::Value,
}
