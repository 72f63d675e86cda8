//! sse-gateway configuration (environment variables).

use domain::config::{ConfigError, HttpConfig, RedisConfig, Secret, ServiceConfig, Vars};
use serde::Deserialize;

/// Settings of the live streams.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct GatewaySettings {
    /// A poll emits at most one event per this interval (the latest state).
    pub poll_coalesce_ms: u64,
    /// A site emits its live activity at most once per this interval.
    pub site_coalesce_ms: u64,
    /// A comment line at least this often keeps proxies from closing idle streams.
    pub heartbeat_s: u64,
    /// Emitted updates kept per poll so reconnecting browsers get what they missed.
    pub replay_history: usize,
    /// Updates a browser may fall behind before it is sent a fresh snapshot instead.
    pub max_client_lag: usize,
    /// Open streams (and long polls) allowed in total; past it, 503.
    pub max_connections: usize,
    /// Open streams (and long polls) allowed per client address; past it, 429.
    pub max_connections_per_ip: usize,
    /// Longest `wait` of the long-polling fallback, in seconds.
    pub long_poll_max_wait_s: u64,
    /// Reconnect delay browsers are told (`retry:`), in milliseconds.
    pub client_retry_ms: u64,
    /// Where the demo page sends writes and reads; empty means the page's own origin
    /// (behind the nginx edge). `make up` without nginx sets these.
    pub public_ingest_url: String,
    pub public_stats_url: String,
    /// The demo page's notification bell shows this user's feed, with a feed token the
    /// page is handed (a development stack's demo only: anyone who loads the page reads
    /// that user's feed). Unset: no bell.
    pub demo_feed_user: String,
    /// Set when stats reads are private (the same `STATS_TOKEN` as stats-api's): a site's
    /// live stream is then open only for public sites or with a signed `?token=`. Unset:
    /// every site stream is open, as the stats are.
    pub stats_token: Secret,
    /// The secret stream tokens are signed with (see `domain::stream_token`).
    pub stream_token_secret: Secret,
    /// Most topics one multiplexed stream (`/v1/stream`) may carry.
    pub max_topics_per_stream: usize,
    /// How often this gateway reports its watchers and announces changed totals.
    pub presence_interval_ms: u64,
    /// This gateway's name in presence reports; default: host name and a random suffix.
    pub gateway_id: Option<String>,
    /// Notice a browser hanging up at once (costs one more file descriptor per
    /// connection); off, a closed stream is noticed at its next heartbeat.
    pub hangup_watch: bool,
    /// Milliseconds between PINGs of the Redis subscription (a quiet socket may be dead).
    pub subscription_ping_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            poll_coalesce_ms: 100,
            site_coalesce_ms: 1_000,
            heartbeat_s: 15,
            replay_history: 256,
            max_client_lag: 64,
            max_connections: 20_000,
            max_connections_per_ip: 500,
            long_poll_max_wait_s: 30,
            client_retry_ms: 2_000,
            public_ingest_url: Default::default(),
            public_stats_url: Default::default(),
            demo_feed_user: Default::default(),
            stats_token: Default::default(),
            stream_token_secret: Default::default(),
            max_topics_per_stream: 20,
            presence_interval_ms: 2_000,
            gateway_id: None,
            hangup_watch: true,
            subscription_ping_ms: 5_000,
        }
    }
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
        let gateway: GatewaySettings = vars.get()?;
        // Zero would panic (a zero heartbeat interval) or refuse every stream.
        for (name, value) in [
            ("HEARTBEAT_S", gateway.heartbeat_s),
            ("MAX_CONNECTIONS", gateway.max_connections as u64),
            (
                "MAX_CONNECTIONS_PER_IP",
                gateway.max_connections_per_ip as u64,
            ),
            ("MAX_CLIENT_LAG", gateway.max_client_lag as u64),
            (
                "MAX_TOPICS_PER_STREAM",
                gateway.max_topics_per_stream as u64,
            ),
            ("PRESENCE_INTERVAL_MS", gateway.presence_interval_ms),
            ("SUBSCRIPTION_PING_MS", gateway.subscription_ping_ms),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(Self {
            http: vars.http("0.0.0.0:8081")?,
            redis: vars.redis()?,
            gateway,
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

    #[test]
    fn values_that_would_panic_are_refused_by_name() {
        for name in [
            "HEARTBEAT_S",
            "MAX_CONNECTIONS",
            "MAX_CONNECTIONS_PER_IP",
            "MAX_CLIENT_LAG",
            "MAX_TOPICS_PER_STREAM",
            "PRESENCE_INTERVAL_MS",
            "SUBSCRIPTION_PING_MS",
        ] {
            let err = Config::from_vars(vec![(name.to_string(), "0".to_string())])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
