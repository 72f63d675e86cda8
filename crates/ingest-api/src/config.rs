//! ingest-api configuration (environment variables).

use domain::config::{ConfigError, HttpConfig, RedisConfig, Secret, ServiceConfig, Vars};
use serde::Deserialize;

/// Settings of the ingest endpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct IngestSettings {
    /// Queue length above which new events are refused with 503 (load shedding before
    /// Redis runs out of memory).
    pub event_queue_high_water: u64,
    /// Largest request body, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Largest vote body (`/v1/polls/{id}/votes`, `/api/vote`), in bytes: a vote is a few
    /// hundred bytes, so it need not be read up to `BODY_LIMIT_BYTES`.
    pub vote_body_limit_bytes: usize,
    /// Sustained requests per second allowed from one client address on write endpoints;
    /// 0 disables the limit.
    pub rate_limit_per_ip_per_s: u32,
    /// Requests one address may send in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// `Retry-After` seconds when shedding load.
    pub shed_retry_after_s: u64,
    /// Bearer token of poll administration (create, close). Unset: administration is refused.
    pub admin_token: Secret,
    /// Votes per second one client address may cast (0: unlimited), and its burst.
    pub vote_rate_limit_per_ip_per_s: u32,
    pub vote_rate_limit_per_ip_burst: u32,
    /// Votes per second one poll accepts (0: unlimited), and its burst.
    pub vote_rate_limit_per_poll_per_s: u32,
    pub vote_rate_limit_per_poll_burst: u32,
    /// Buckets each rate limiter keeps (client networks, polls) before new keys share one
    /// overflow bucket.
    pub limiter_max_keys: usize,
    /// `open`: events for any `site_id` are accepted; `registered`: only for sites of the
    /// registry (404 `unknown_site` otherwise).
    pub sites_mode: SitesMode,
    /// How often the in-memory copy of the site registry checks for changes.
    pub sites_refresh_ms: u64,
    /// How often the visitor-id salts are read again from Redis.
    pub salt_refresh_ms: u64,
    /// A MaxMind-format (`.mmdb`) country database; unset: no countries.
    pub geoip_db: Option<String>,
    /// A file of networks (one CIDR a line) whose traffic is data-center traffic, not
    /// counted; unset: none.
    pub datacenter_networks_file: Option<String>,
    /// The secret host applications sign voter tokens with (`voters: signed` polls);
    /// unset: such polls cannot be created.
    pub voter_token_secret: Secret,
    /// The secret of signed stream tokens (shared with sse-gateway): the answer to a vote
    /// on an `after_vote` poll carries a token that opens its results on streams, and a
    /// feed token (scope `feed:<user>`) lets a browser mark its user's feed read.
    pub stream_token_secret: Secret,
    /// Replicas that must hold queued events before a request is answered `202` (a `WAIT`
    /// per push); 0: answered once the master has them (a failover can lose the last
    /// second or so).
    pub redis_wait_replicas: u32,
    /// How long a push waits for those replicas before the request is answered `503`.
    pub redis_wait_timeout_ms: u64,
    /// Keys of applications that may send notifications (comma-separated), besides the
    /// admin token. They administer nothing.
    pub app_keys: Secret,
    /// Largest `POST /v1/notifications` body (10,000 recipients with addresses fit).
    pub notify_body_limit_bytes: usize,
    /// Webhook endpoints may be on loopback, private or link-local addresses (a
    /// development stack; never on a server facing the Internet).
    pub webhook_allow_internal: bool,
}

impl IngestSettings {
    /// Whether `authorization` carries the admin token or one of the app keys.
    pub fn may_send_notifications(&self, authorization: Option<&str>) -> bool {
        domain::auth::bearer_matches(authorization, &self.admin_token)
            || self
                .app_keys
                .expose()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .any(|k| domain::auth::bearer_matches(authorization, &Secret::new(k)))
    }
}

/// Which `site_id`s events may carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SitesMode {
    #[default]
    Open,
    Registered,
}

impl<'de> Deserialize<'de> for SitesMode {
    // By hand: envy's message for an unknown variant does not name the variable.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "open" => Ok(Self::Open),
            "registered" => Ok(Self::Registered),
            other => Err(serde::de::Error::custom(format!(
                "SITES_MODE must be open or registered, not {other:?}"
            ))),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            event_queue_high_water: 2_000_000,
            body_limit_bytes: 2 * 1024 * 1024,
            vote_body_limit_bytes: 16 * 1024,
            rate_limit_per_ip_per_s: 2_000,
            rate_limit_burst: 10_000,
            shed_retry_after_s: 2,
            admin_token: Default::default(),
            vote_rate_limit_per_ip_per_s: 500,
            vote_rate_limit_per_ip_burst: 5_000,
            vote_rate_limit_per_poll_per_s: 20_000,
            vote_rate_limit_per_poll_burst: 50_000,
            limiter_max_keys: 100_000,
            sites_mode: SitesMode::Open,
            sites_refresh_ms: 1_000,
            salt_refresh_ms: 10_000,
            geoip_db: None,
            datacenter_networks_file: None,
            voter_token_secret: Default::default(),
            stream_token_secret: Default::default(),
            app_keys: Default::default(),
            notify_body_limit_bytes: 2 * 1024 * 1024,
            webhook_allow_internal: false,
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 500,
        }
    }
}

/// Everything ingest-api reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub ingest: IngestSettings,
}

impl ServiceConfig for Config {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let ingest: IngestSettings = vars.get()?;
        for (name, value) in [
            ("BODY_LIMIT_BYTES", ingest.body_limit_bytes),
            ("VOTE_BODY_LIMIT_BYTES", ingest.vote_body_limit_bytes),
            ("NOTIFY_BODY_LIMIT_BYTES", ingest.notify_body_limit_bytes),
            ("SITES_REFRESH_MS", ingest.sites_refresh_ms as usize),
            ("SALT_REFRESH_MS", ingest.salt_refresh_ms as usize),
            ("LIMITER_MAX_KEYS", ingest.limiter_max_keys),
            // WAIT with a timeout of 0 would block for ever.
            (
                "REDIS_WAIT_TIMEOUT_MS",
                ingest.redis_wait_timeout_ms as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(Self {
            http: vars.http("0.0.0.0:8080")?,
            redis: vars.redis()?,
            ingest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_port_8080_and_allow_bursts_of_thousands() {
        let cfg = Config::from_vars(Vec::new()).expect("defaults");
        assert_eq!(cfg.http.bind_addr, "0.0.0.0:8080");
        assert!(cfg.ingest.rate_limit_burst >= 5_000);
    }

    #[test]
    fn invalid_numbers_name_the_variable() {
        let err = Config::from_vars(vec![("EVENT_QUEUE_HIGH_WATER".into(), "lots".into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("EVENT_QUEUE_HIGH_WATER"), "{err}");
    }

    #[test]
    fn sites_mode_is_open_unless_told_and_names_the_variable_when_wrong() {
        let cfg = Config::from_vars(Vec::new()).expect("defaults");
        assert_eq!(cfg.ingest.sites_mode, SitesMode::Open);
        let cfg = Config::from_vars(vec![("SITES_MODE".into(), "registered".into())])
            .expect("registered");
        assert_eq!(cfg.ingest.sites_mode, SitesMode::Registered);
        let err = Config::from_vars(vec![("SITES_MODE".into(), "closed".into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("SITES_MODE"), "{err}");
    }

    #[test]
    fn a_zero_body_limit_is_refused_by_name() {
        let err = Config::from_vars(vec![("VOTE_BODY_LIMIT_BYTES".into(), "0".into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("VOTE_BODY_LIMIT_BYTES"), "{err}");
    }
}
