//! ingest-api configuration (environment variables).

use domain::config::{ConfigError, HttpConfig, RedisConfig, Secret, ServiceConfig, Vars};
use serde::Deserialize;

fn default_high_water() -> u64 {
    2_000_000
}
fn default_body_limit() -> usize {
    2 * 1024 * 1024
}
fn default_rate() -> u32 {
    2_000
}
fn default_burst() -> u32 {
    10_000
}
fn default_retry_after() -> u64 {
    2
}

/// Settings of the ingest endpoints.
#[derive(Clone, Debug, Deserialize)]
pub struct IngestSettings {
    /// Queue length above which new events are refused with 503 (load shedding before
    /// Redis runs out of memory).
    #[serde(default = "default_high_water")]
    pub event_queue_high_water: u64,
    /// Largest request body, in bytes; larger ones get 413.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Sustained requests per second allowed from one client address on write endpoints;
    /// 0 disables the limit.
    #[serde(default = "default_rate")]
    pub rate_limit_per_ip_per_s: u32,
    /// Requests one address may send in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
    /// `Retry-After` seconds when shedding load.
    #[serde(default = "default_retry_after")]
    pub shed_retry_after_s: u64,
    /// Bearer token of poll administration (create, close). Unset: administration is refused.
    #[serde(default)]
    pub admin_token: Secret,
    /// Votes per second one client address may cast (0: unlimited), and its burst.
    #[serde(default = "default_vote_ip_rate")]
    pub vote_rate_limit_per_ip_per_s: u32,
    #[serde(default = "default_vote_ip_burst")]
    pub vote_rate_limit_per_ip_burst: u32,
    /// Votes per second one poll accepts (0: unlimited), and its burst.
    #[serde(default = "default_vote_poll_rate")]
    pub vote_rate_limit_per_poll_per_s: u32,
    #[serde(default = "default_vote_poll_burst")]
    pub vote_rate_limit_per_poll_burst: u32,
}

fn default_vote_ip_rate() -> u32 {
    500
}
fn default_vote_ip_burst() -> u32 {
    5_000
}
fn default_vote_poll_rate() -> u32 {
    20_000
}
fn default_vote_poll_burst() -> u32 {
    50_000
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
        Ok(Self {
            http: vars.http("0.0.0.0:8080")?,
            redis: vars.get()?,
            ingest: vars.get()?,
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
}
