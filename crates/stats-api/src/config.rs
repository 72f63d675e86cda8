//! stats-api configuration (environment variables).

use domain::config::{
    ConfigError, HttpConfig, PostgresConfig, RedisConfig, Secret, ServiceConfig, Vars,
};
use serde::Deserialize;

/// Settings of the read endpoints.
#[derive(Clone, Debug, Deserialize)]
pub struct StatsSettings {
    /// When set, every stats and Grafana endpoint needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub stats_token: Secret,
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
        Ok(Self {
            http: vars.http("0.0.0.0:8082")?,
            redis: vars.get()?,
            postgres: vars.get()?,
            stats: vars.get()?,
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
