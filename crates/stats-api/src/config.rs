//! stats-api configuration (environment variables).

use domain::config::{
    ConfigError, HttpConfig, PostgresConfig, RedisConfig, Secret, ServiceConfig, Vars,
};
use serde::Deserialize;

/// Settings of the read endpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct StatsSettings {
    /// When set, every stats and Grafana endpoint needs `Authorization: Bearer <token>`.
    pub stats_token: Secret,
    /// Distinct visitors over a range of several days are counted exactly while at most
    /// this many visitor-day rows are involved, and estimated (HyperLogLog, about 1%
    /// error, flagged in the answer) above; 0 always counts exactly.
    pub exact_distinct_max_rows: i64,
    /// Filtered stats and series count raw events; a range holding more than this many is
    /// refused (400) rather than scanned.
    pub filter_max_events: i64,
    /// Retrying and purging dead letters (and reading them) need
    /// `Authorization: Bearer <ADMIN_TOKEN>`; unset: refused.
    pub admin_token: Secret,
    /// The secret of feed tokens (shared with sse-gateway and ingest-api): a browser reads
    /// its user's feed with one instead of the stats token.
    pub stream_token_secret: Secret,
    /// `POST /v2/query` answers the visit queries it can from `visit_rollups` (day and
    /// hour rows, visitor sketches); false reads `visits` for every one (exact visitors,
    /// slower on long ranges: for comparison).
    pub visit_rollups: bool,
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            stats_token: Default::default(),
            exact_distinct_max_rows: 20_000,
            filter_max_events: 200_000,
            admin_token: Default::default(),
            stream_token_secret: Default::default(),
            visit_rollups: true,
        }
    }
}

/// Everything stats-api reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    pub stats: StatsSettings,
}

impl ServiceConfig for Config {
    fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let stats: StatsSettings = vars.get()?;
        if stats.filter_max_events < 0 {
            return Err(ConfigError("FILTER_MAX_EVENTS must not be negative".into()));
        }
        if stats.exact_distinct_max_rows < 0 {
            return Err(ConfigError(
                "EXACT_DISTINCT_MAX_ROWS must not be negative (0 always counts exactly)".into(),
            ));
        }
        Ok(Self {
            http: vars.http("0.0.0.0:8082")?,
            redis: vars.redis()?,
            postgres: vars.get()?,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_optional_and_never_printed() {
        let cfg = Config::from_vars(vec![("STATS_TOKEN".into(), "tok-123".into())]).expect("cfg");
        assert_eq!(cfg.stats.stats_token.expose(), "tok-123");
        assert!(!format!("{cfg:?}").contains("tok-123"));
        assert_eq!(
            Config::from_vars(vec![]).expect("cfg").http.bind_addr,
            "0.0.0.0:8082"
        );
    }
}
