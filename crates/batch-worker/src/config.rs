//! batch-worker configuration (environment variables).

use domain::config::{
    ConfigError, HttpConfig, PostgresConfig, RedisConfig, Secret, ServiceConfig, Vars,
};
use serde::Deserialize;

/// Longest retention accepted (a century), so the cutoff is always a valid instant.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// How the worker batches, heartbeats and retries.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct WorkerSettings {
    /// Most items written in one batch.
    pub batch_max_items: usize,
    /// Longest a batch waits to fill up after its first item arrived.
    pub batch_max_wait_ms: u64,
    /// A worker whose heartbeat is older than this is dead and its batch is requeued.
    /// The heartbeat is refreshed every third of it.
    pub heartbeat_ttl_ms: u64,
    /// How often to look for dead workers (and refresh queue metrics).
    pub reap_interval_ms: u64,
    /// First and largest pause between retries of a failed write.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Upper bound on one batch write; past it the write is retried (idempotently).
    pub store_timeout_ms: u64,
    /// Stable identity (a StatefulSet pod name); default: host name plus a random suffix.
    pub worker_id: Option<String>,
    /// Batches in flight at once in this process ("lanes"). Each lane is a full reliable
    /// consumer (its own processing list and heartbeat), so PostgreSQL can work on one batch
    /// per core.
    pub worker_concurrency: usize,
    /// Lanes draining the vote shard queues (polls, closes, votes).
    pub vote_worker_concurrency: usize,
    /// Transactions each batch of events is written in, every visitor in one; with two or
    /// more, each part's transactions one at a time in this process (see
    /// [`crate::events::store::WriteParts`]; batches under 1,000 events per part are
    /// written whole).
    pub event_write_parts: usize,
    /// How often to check that Redis still has every vote shard's polls (and restore them
    /// from PostgreSQL when it lost them).
    pub restore_check_interval_ms: u64,
    /// Raw events received more than this many days ago are deleted (the rollups keep
    /// every count); 0 keeps raw events forever.
    pub events_retention_days: u32,
    /// How often expired raw events are looked for.
    pub events_retention_interval_ms: u64,
    /// How often the visitor sketches of visit rollup cells a late event moved a visit out
    /// of are recomputed (they count the moved visitor twice until then).
    pub visit_sketch_repair_interval_ms: u64,
    /// How often the visitors queued for large visit rollup sketches are merged into them
    /// (readers count the queue meanwhile; a longer interval writes each busy sketch less
    /// often).
    pub visit_sketch_fold_interval_ms: u64,
    /// How often sealed weeks of visit rollup cells are looked for and built (answers over
    /// weeks not yet built read their days: the interval changes no answer, only how soon
    /// a long range reads fewer rows).
    pub visit_week_build_interval_ms: u64,
    /// How often the events set aside while their site's settings changed are stored,
    /// once no change holds the site any more.
    pub events_waiting_interval_ms: u64,
    /// The longest a change of a site's zone, goals or funnels may take to recount the
    /// site's stored visits and events (its statements' `statement_timeout`, and the
    /// sites lane's store timeout): minutes for a site of ten million events, far above
    /// `DATABASE_STATEMENT_TIMEOUT_MS`. Also the limit of one sealed week's build, whose
    /// pair cells aggregate the week's visits.
    pub site_rebuild_timeout_ms: u64,
    /// Apply pending migrations at start.
    pub run_migrations: bool,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            batch_max_items: 20_000,
            batch_max_wait_ms: 200,
            heartbeat_ttl_ms: 15_000,
            reap_interval_ms: 5_000,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            store_timeout_ms: 60_000,
            worker_id: None,
            worker_concurrency: 2,
            vote_worker_concurrency: 1,
            event_write_parts: 2,
            restore_check_interval_ms: 1_000,
            events_retention_days: 0,
            events_retention_interval_ms: 3_600_000,
            visit_sketch_repair_interval_ms: 1_000,
            visit_sketch_fold_interval_ms: 5_000,
            visit_week_build_interval_ms: 10_000,
            events_waiting_interval_ms: 1_000,
            site_rebuild_timeout_ms: 3_600_000,
            run_migrations: true,
        }
    }
}

/// How notifications are fanned out and delivered.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct NotifySettings {
    /// Notifications fanned out in one batch (each may reach 100,000 users).
    pub notify_batch_max_items: usize,
    /// Longest a fan-out batch waits to fill after its first notification (short: a
    /// notification is latency, not bulk).
    pub notify_batch_max_wait_ms: u64,
    /// Deliveries attempted at once per channel in this process.
    pub webhook_concurrency: usize,
    pub email_concurrency: usize,
    pub sms_concurrency: usize,
    /// Deliveries in flight at once to one webhook endpoint from this process; the rest
    /// wait their turn in the scheduled set, so a slow endpoint never takes every slot.
    pub webhook_max_in_flight_per_endpoint: usize,
    /// A webhook attempt succeeds on a 2xx within this long.
    pub webhook_timeout_ms: u64,
    /// Webhooks may go to loopback, private or link-local addresses (development only).
    pub webhook_allow_internal: bool,
    /// Pauses between attempts (`5s,5m,30m,2h,5h,10h,10h`); after the last, dead-lettered.
    pub delivery_retry_schedule: String,
    /// How long a delivery waits when its endpoint is busy or over its rate.
    pub delivery_park_ms: u64,
    /// `smtp://host:port` (STARTTLS when offered), `smtps://` (TLS),
    /// `smtp://user:pass@host:port`; unset: email deliveries fail with "no SMTP server".
    pub smtp_url: Secret,
    /// The sender of notification emails.
    pub email_from: String,
    pub smtp_timeout_ms: u64,
    /// The SMS provider's API base URL (Twilio's shape: `POST
    /// {base}/2010-04-01/Accounts/{sid}/Messages.json`); unset: SMS deliveries fail.
    pub sms_api_url: String,
    pub sms_account_sid: String,
    pub sms_auth_token: Secret,
    /// The sender number of SMS.
    pub sms_from: String,
    pub sms_timeout_ms: u64,
    /// Vote counts at which a poll emits `poll.votes_reached`.
    pub poll_vote_thresholds: String,
    /// A site's visitors in the current hour over this multiple of its usual level for
    /// that hour emit `site.traffic_spike`...
    pub traffic_spike_multiple: f64,
    /// ...when at least this many visitors came (small sites' noise is no spike).
    pub traffic_spike_min_visitors: i64,
    /// How often sites are checked for a traffic spike; 0 turns the check off.
    pub traffic_spike_interval_ms: u64,
    /// Channels trigger notifications are sent on (endpoints and topic subscribers of the
    /// event type).
    pub trigger_channels: String,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            notify_batch_max_items: 100,
            notify_batch_max_wait_ms: 10,
            webhook_concurrency: 512,
            email_concurrency: 16,
            sms_concurrency: 32,
            webhook_max_in_flight_per_endpoint: 32,
            webhook_timeout_ms: 10_000,
            webhook_allow_internal: false,
            delivery_retry_schedule: "5s,5m,30m,2h,5h,10h,10h".into(),
            delivery_park_ms: 250,
            smtp_url: Secret::default(),
            email_from: "Tally <notifications@localhost>".into(),
            smtp_timeout_ms: 10_000,
            sms_api_url: String::new(),
            sms_account_sid: String::new(),
            sms_auth_token: Secret::default(),
            sms_from: String::new(),
            sms_timeout_ms: 10_000,
            poll_vote_thresholds: "100,1000,10000,100000".into(),
            traffic_spike_multiple: 3.0,
            traffic_spike_min_visitors: 20,
            traffic_spike_interval_ms: 60_000,
            trigger_channels: "in_app,webhook".into(),
        }
    }
}

impl NotifySettings {
    /// The retry schedule (checked at start).
    pub fn retry_schedule(&self) -> domain::notify::delivery::RetrySchedule {
        domain::notify::delivery::RetrySchedule::parse(&self.delivery_retry_schedule)
            .unwrap_or_default()
    }

    /// The vote thresholds, ascending (checked at start).
    pub fn vote_thresholds(&self) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .poll_vote_thresholds
            .split(',')
            .filter_map(|t| t.trim().parse().ok())
            .filter(|t| *t > 0)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The channels of trigger notifications (checked at start).
    pub fn trigger_channels(&self) -> Vec<domain::notify::ChannelKind> {
        let mut out: Vec<_> = self
            .trigger_channels
            .split(',')
            .filter_map(|c| domain::notify::ChannelKind::parse(c.trim()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("NOTIFY_BATCH_MAX_ITEMS", self.notify_batch_max_items),
            ("WEBHOOK_CONCURRENCY", self.webhook_concurrency),
            ("EMAIL_CONCURRENCY", self.email_concurrency),
            ("SMS_CONCURRENCY", self.sms_concurrency),
            (
                "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
                self.webhook_max_in_flight_per_endpoint,
            ),
            ("WEBHOOK_TIMEOUT_MS", self.webhook_timeout_ms as usize),
            ("DELIVERY_PARK_MS", self.delivery_park_ms as usize),
            ("SMTP_TIMEOUT_MS", self.smtp_timeout_ms as usize),
            ("SMS_TIMEOUT_MS", self.sms_timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        // A replayed batch must find each of its items still in a feed: a batch of more
        // notifications to one user than a feed keeps would have trimmed its first ones,
        // and their replay would add them again.
        if self.notify_batch_max_items > domain::notify::feed::FEED_KEEP {
            return Err(ConfigError(format!(
                "NOTIFY_BATCH_MAX_ITEMS must be at most {} (the items a feed keeps)",
                domain::notify::feed::FEED_KEEP
            )));
        }
        domain::notify::delivery::RetrySchedule::parse(&self.delivery_retry_schedule)
            .map_err(|e| ConfigError(format!("DELIVERY_RETRY_SCHEDULE: {e}")))?;
        for t in self
            .poll_vote_thresholds
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if t.parse::<i64>().map_or(true, |n| n <= 0) {
                return Err(ConfigError(format!(
                    "POLL_VOTE_THRESHOLDS: {t:?} is not a positive whole number"
                )));
            }
        }
        for c in self
            .trigger_channels
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if domain::notify::ChannelKind::parse(c).is_none() {
                return Err(ConfigError(format!(
                    "TRIGGER_CHANNELS: {c:?} is not a channel (in_app, webhook, email, sms)"
                )));
            }
        }
        if self.traffic_spike_multiple.is_nan() || self.traffic_spike_multiple <= 1.0 {
            return Err(ConfigError(
                "TRAFFIC_SPIKE_MULTIPLE must be more than 1".into(),
            ));
        }
        if !self.smtp_url.is_empty() {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(self.smtp_url.expose())
                .map_err(|e| ConfigError(format!("SMTP_URL is not a usable SMTP URL: {e}")))?;
        }
        if !self.email_from.is_empty()
            && self.email_from.parse::<lettre::message::Mailbox>().is_err()
        {
            return Err(ConfigError(format!(
                "EMAIL_FROM: {:?} is not a mailbox (such as Tally <notify@example.com>)",
                self.email_from
            )));
        }
        if !self.sms_api_url.is_empty() && url::Url::parse(&self.sms_api_url).is_err() {
            return Err(ConfigError("SMS_API_URL is not a URL".into()));
        }
        Ok(())
    }
}

/// How export jobs run.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    /// Export jobs this process runs at once; 0: this process runs none.
    pub export_concurrency: usize,
    /// A running job's lease: its worker renews it every third of this; a job whose lease
    /// ran out (its worker died) is taken over by another worker.
    pub export_lease_ms: u64,
    /// How often an idle worker looks for a queued job, and for jobs to take over.
    pub export_poll_interval_ms: u64,
    /// Rows a page of an export holds about (pages are whole UTC hours, committed one by one:
    /// a takeover resumes at the first page not committed).
    pub export_page_rows: u64,
    /// Largest part of a page's CSV stored in one row (what a worker holds in memory).
    pub export_part_bytes: usize,
    /// How often expired exports (kept 24 h) are deleted.
    pub export_cleanup_interval_ms: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            export_concurrency: 1,
            export_lease_ms: 15_000,
            export_poll_interval_ms: 500,
            export_page_rows: 100_000,
            export_part_bytes: 4 << 20,
            export_cleanup_interval_ms: 600_000,
        }
    }
}

impl ExportSettings {
    fn check(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("EXPORT_POLL_INTERVAL_MS", self.export_poll_interval_ms),
            ("EXPORT_PAGE_ROWS", self.export_page_rows),
            ("EXPORT_PART_BYTES", self.export_part_bytes as u64),
            (
                "EXPORT_CLEANUP_INTERVAL_MS",
                self.export_cleanup_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if self.export_lease_ms < 300 {
            return Err(ConfigError("EXPORT_LEASE_MS must be at least 300".into()));
        }
        if self.export_part_bytes < 64 * 1024 {
            return Err(ConfigError(
                "EXPORT_PART_BYTES must be at least 65536".into(),
            ));
        }
        Ok(())
    }
}

/// Everything batch-worker reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    pub worker: WorkerSettings,
    pub notify: NotifySettings,
    pub export: ExportSettings,
}

impl ServiceConfig for Config {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let worker: WorkerSettings = vars.get()?;
        if worker.batch_max_items == 0 {
            return Err(ConfigError("BATCH_MAX_ITEMS must be at least 1".into()));
        }
        if worker.worker_concurrency == 0 {
            return Err(ConfigError("WORKER_CONCURRENCY must be at least 1".into()));
        }
        if worker.event_write_parts == 0 {
            return Err(ConfigError("EVENT_WRITE_PARTS must be at least 1".into()));
        }
        if worker.vote_worker_concurrency == 0 {
            return Err(ConfigError(
                "VOTE_WORKER_CONCURRENCY must be at least 1".into(),
            ));
        }
        if worker.events_retention_days > MAX_RETENTION_DAYS {
            return Err(ConfigError(format!(
                "EVENTS_RETENTION_DAYS must be at most {MAX_RETENTION_DAYS} (0 keeps events forever)"
            )));
        }
        if worker.events_retention_interval_ms == 0 {
            return Err(ConfigError(
                "EVENTS_RETENTION_INTERVAL_MS must be at least 1".into(),
            ));
        }
        if worker.visit_sketch_repair_interval_ms == 0 {
            return Err(ConfigError(
                "VISIT_SKETCH_REPAIR_INTERVAL_MS must be at least 1".into(),
            ));
        }
        if worker.visit_sketch_fold_interval_ms == 0 {
            return Err(ConfigError(
                "VISIT_SKETCH_FOLD_INTERVAL_MS must be at least 1".into(),
            ));
        }
        if worker.visit_week_build_interval_ms == 0 {
            return Err(ConfigError(
                "VISIT_WEEK_BUILD_INTERVAL_MS must be at least 1".into(),
            ));
        }
        for (name, value) in [
            (
                "EVENTS_WAITING_INTERVAL_MS",
                worker.events_waiting_interval_ms,
            ),
            ("REAP_INTERVAL_MS", worker.reap_interval_ms),
            ("STORE_TIMEOUT_MS", worker.store_timeout_ms),
            (
                "RESTORE_CHECK_INTERVAL_MS",
                worker.restore_check_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if worker.heartbeat_ttl_ms < 300 {
            return Err(ConfigError("HEARTBEAT_TTL_MS must be at least 300".into()));
        }
        let notify: NotifySettings = vars.get()?;
        notify.check()?;
        let export: ExportSettings = vars.get()?;
        export.check()?;
        Ok(Self {
            http: vars.http("0.0.0.0:9091")?,
            redis: vars.redis()?,
            postgres: vars.get()?,
            worker,
            notify,
            export,
        })
    }
}

impl WorkerSettings {
    /// The retry schedule of writes, acknowledgements and claims.
    pub fn backoff(&self) -> domain::backoff::Backoff {
        domain::backoff::Backoff::new(
            std::time::Duration::from_millis(self.retry_initial_ms),
            std::time::Duration::from_millis(self.retry_max_ms),
        )
    }

    /// How long raw events are kept, when they are not kept forever.
    pub fn events_retention(&self) -> Option<chrono::TimeDelta> {
        (self.events_retention_days > 0)
            .then(|| chrono::TimeDelta::days(i64::from(self.events_retention_days)))
    }

    /// The configured id, or `<host>-<random>` so restarted workers never collide.
    pub fn resolve_worker_id(&self) -> String {
        if let Some(id) = self.worker_id.as_deref().filter(|s| !s.is_empty()) {
            return id.to_string();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_sane() {
        let cfg = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(cfg.http.bind_addr, "0.0.0.0:9091");
        assert_eq!(cfg.worker.batch_max_items, 20_000);
        assert_eq!(cfg.worker.worker_concurrency, 2);
        assert!(cfg.worker.run_migrations);
    }

    #[test]
    fn nonsense_values_are_refused_by_name() {
        let e = Config::from_vars(vars(&[("BATCH_MAX_ITEMS", "0")]))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("BATCH_MAX_ITEMS"));
        let e = Config::from_vars(vars(&[("BATCH_MAX_WAIT_MS", "soon")]))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("BATCH_MAX_WAIT_MS"));
        let e = Config::from_vars(vars(&[("EVENTS_RETENTION_DAYS", "99999")]))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("EVENTS_RETENTION_DAYS"));
    }

    #[test]
    fn notification_settings_are_checked_by_name() {
        for (var, value) in [
            ("DELIVERY_RETRY_SCHEDULE", "5 minutes"),
            ("WEBHOOK_CONCURRENCY", "0"),
            ("NOTIFY_BATCH_MAX_ITEMS", "1001"),
            ("POLL_VOTE_THRESHOLDS", "10,-1"),
            ("TRIGGER_CHANNELS", "in_app,pigeon"),
            ("SMTP_URL", "smtp://"),
            ("EMAIL_FROM", "not a mailbox <"),
            ("TRAFFIC_SPIKE_MULTIPLE", "1"),
            ("EXPORT_LEASE_MS", "0"),
            ("EXPORT_PAGE_ROWS", "0"),
            ("EXPORT_PART_BYTES", "100"),
        ] {
            let e = Config::from_vars(vars(&[(var, value)]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
        let ok = Config::from_vars(vars(&[("POLL_VOTE_THRESHOLDS", "1000, 10,10")])).expect("ok");
        assert_eq!(ok.notify.vote_thresholds(), vec![10, 1000]);
    }

    #[test]
    fn generated_worker_ids_are_unique() {
        let s = Config::from_vars(vars(&[])).expect("defaults").worker;
        assert_ne!(s.resolve_worker_id(), s.resolve_worker_id());
        let s = Config::from_vars(vars(&[("WORKER_ID", "pod-0")]))
            .expect("cfg")
            .worker;
        assert_eq!(s.resolve_worker_id(), "pod-0");
    }
}
