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
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(Self {
            http: vars.http("0.0.0.0:8080")?,
            redis: vars.get()?,
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
    fn a_zero_body_limit_is_refused_by_name() {
        let err = Config::from_vars(vec![("VOTE_BODY_LIMIT_BYTES".into(), "0".into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("VOTE_BODY_LIMIT_BYTES"), "{err}");
    }
}
