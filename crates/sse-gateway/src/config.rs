//! sse-gateway configuration (environment variables).

use domain::config::{ConfigError, HttpConfig, RedisConfig, ServiceConfig, Vars};
use serde::Deserialize;

fn default_poll_interval() -> u64 {
    100
}
fn default_site_interval() -> u64 {
    1_000
}
fn default_heartbeat() -> u64 {
    15
}
fn default_history() -> usize {
    256
}
fn default_lag() -> usize {
    64
}
fn default_max_total() -> usize {
    20_000
}
fn default_max_per_ip() -> usize {
    500
}
fn default_long_poll() -> u64 {
    30
}
fn default_retry_ms() -> u64 {
    2_000
}

/// Settings of the live streams.
#[derive(Clone, Debug, Deserialize)]
pub struct GatewaySettings {
    /// A poll emits at most one event per this interval (the latest state).
    #[serde(default = "default_poll_interval")]
    pub poll_coalesce_ms: u64,
    /// A site emits its live activity at most once per this interval.
    #[serde(default = "default_site_interval")]
    pub site_coalesce_ms: u64,
    /// A comment line at least this often keeps proxies from closing idle streams.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_s: u64,
    /// Emitted updates kept per poll so reconnecting browsers get what they missed.
    #[serde(default = "default_history")]
    pub replay_history: usize,
    /// Updates a browser may fall behind before it is sent a fresh snapshot instead.
    #[serde(default = "default_lag")]
    pub max_client_lag: usize,
    /// Open streams (and long polls) allowed in total; past it, 503.
    #[serde(default = "default_max_total")]
    pub max_connections: usize,
    /// Open streams (and long polls) allowed per client address; past it, 429.
    #[serde(default = "default_max_per_ip")]
    pub max_connections_per_ip: usize,
    /// Longest `wait` of the long-polling fallback, in seconds.
    #[serde(default = "default_long_poll")]
    pub long_poll_max_wait_s: u64,
    /// Reconnect delay browsers are told (`retry:`), in milliseconds.
    #[serde(default = "default_retry_ms")]
    pub client_retry_ms: u64,
    /// Where the demo page sends writes and reads; empty means the page's own origin
    /// (behind the nginx edge). `make up` without nginx sets these.
    #[serde(default)]
    pub public_ingest_url: String,
    #[serde(default)]
    pub public_stats_url: String,
}

/// Everything sse-gateway reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub gateway: GatewaySettings,
}

impl ServiceConfig for Config {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            http: vars.http("0.0.0.0:8081")?,
            redis: vars.get()?,
            gateway: vars.get()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let cfg = Config::from_vars(vec![]).expect("defaults");
        assert_eq!(cfg.http.bind_addr, "0.0.0.0:8081");
        assert_eq!(cfg.gateway.poll_coalesce_ms, 100);
        assert!(cfg.gateway.heartbeat_s <= 15);
    }
}
