//! Configuration pieces shared by the services, read from environment variables with envy.
//!
//! Each service reads several small structs (its own settings plus the shared ones below)
//! in separate passes over the environment: envy cannot parse numbers inside
//! `#[serde(flatten)]`, and separate structs keep every piece testable on its own. Each
//! struct takes its defaults from one `Default` impl (`#[serde(default)]` on the struct).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// A configuration error that names the environment variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// Reads `T` from the process environment.
///
/// # Errors
/// When a required variable is missing or a value does not parse; the message names the
/// variable (`missing environment variable DATABASE_URL`).
pub fn from_env<T: DeserializeOwned>() -> Result<T, ConfigError> {
    from_iter(std::env::vars())
}

/// Reads `T` from the given `(NAME, value)` pairs, as [`from_env`] does from the environment.
///
/// # Errors
/// As [`from_env`].
pub fn from_iter<T, I>(vars: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    envy::from_iter(vars).map_err(|e| match e {
        envy::Error::MissingValue(field) => ConfigError(format!(
            "missing environment variable {}",
            field.to_ascii_uppercase()
        )),
        envy::Error::Custom(msg) => ConfigError(msg),
    })
}

/// The variables a configuration is read from: the process environment, or pairs a test
/// gives.
pub struct Vars(Vec<(String, String)>);

impl Vars {
    pub fn from_env() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(vars.into_iter().collect())
    }

    /// Reads one envy struct.
    ///
    /// # Errors
    /// As [`from_iter`].
    pub fn get<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        from_iter(self.0.clone())
    }

    /// Reads the Redis settings, refusing values no service can run with.
    ///
    /// # Errors
    /// As [`from_iter`], and naming `REDIS_TIMEOUT_MS` or `EVENT_QUEUE_SHARDS` when out of
    /// range.
    pub fn redis(&self) -> Result<RedisConfig, ConfigError> {
        let redis: RedisConfig = self.get()?;
        if redis.redis_timeout_ms == 0 {
            return Err(ConfigError(
                "REDIS_TIMEOUT_MS must be at least 1 (milliseconds)".into(),
            ));
        }
        if !(1..=MAX_EVENT_QUEUE_SHARDS).contains(&redis.event_queue_shards) {
            return Err(ConfigError(format!(
                "EVENT_QUEUE_SHARDS must be between 1 and {MAX_EVENT_QUEUE_SHARDS}"
            )));
        }
        Ok(redis)
    }

    /// Reads the HTTP settings, `BIND_ADDR` defaulting to `default_bind`.
    ///
    /// # Errors
    /// As [`from_iter`].
    pub fn http(&self, default_bind: &str) -> Result<HttpConfig, ConfigError> {
        HttpConfig::from_iter_with_default(self.0.clone(), default_bind)
    }
}

/// A service's configuration: several envy structs read from the same variables.
pub trait ServiceConfig: Sized {
    /// Builds the configuration (and checks what envy cannot).
    ///
    /// # Errors
    /// Naming the variable that is missing or invalid.
    fn read(vars: &Vars) -> Result<Self, ConfigError>;

    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// Naming the variable that is missing or invalid.
    fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Vars::from_env())
    }

    /// Reads the configuration from `(NAME, value)` pairs (tests).
    ///
    /// # Errors
    /// Naming the variable that is missing or invalid.
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::read(&Vars::new(vars))
    }
}

/// Where Redis is and how keys are named.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub redis_url: String,
    /// Prefix of every key (`tally` by default); tests give each run its own.
    pub redis_key_prefix: String,
    /// Upper bound on one Redis command, so a dead Redis turns into a quick 503.
    pub redis_timeout_ms: u64,
    /// Shards of the analytics events queue (`EVENT_QUEUE_SHARDS`), each on its own hash
    /// slot, so on a cluster ingest and drain spread over the masters. ingest-api pushes
    /// to every shard in turn; the batch-worker drains all of them. Every service must be
    /// given the same number (a worker that drains fewer strands what ingest pushed to the
    /// others).
    pub event_queue_shards: u16,
}

/// The most events queue shards (more than masters a cluster is likely to have, times a
/// few).
pub const MAX_EVENT_QUEUE_SHARDS: u16 = 64;

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_key_prefix: "tally".into(),
            redis_timeout_ms: 2_000,
            event_queue_shards: 1,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("event_queue_shards", &self.event_queue_shards)
            .finish()
    }
}

/// Where PostgreSQL is.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    pub database_url: String,
    pub database_pool_size: usize,
    pub database_connect_timeout_ms: u64,
    /// PostgreSQL's `statement_timeout` for every statement of the service (migrations
    /// excepted): a runaway query is cancelled rather than holding a connection forever.
    pub database_statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/tally".into(),
            database_pool_size: 8,
            database_connect_timeout_ms: 3_000,
            database_statement_timeout_ms: 30_000,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field(
                "database_connect_timeout_ms",
                &self.database_connect_timeout_ms,
            )
            .finish()
    }
}

/// Settings every HTTP listener shares. `BIND_ADDR`'s default is the service's own port
/// (see [`Vars::http`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// `host:port`; port 0 picks a free port (tests).
    pub bind_addr: String,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout_s: u64,
    /// Worker threads of the HTTP server; 0 means one per core.
    pub http_workers: usize,
    /// Comma-separated addresses or CIDR ranges whose `X-Forwarded-For` is believed.
    pub trusted_proxies: String,
    /// Comma-separated origins allowed by CORS; `*` allows any.
    pub cors_origins: String,
    /// Milliseconds a request's body may take to arrive after its head (then 408).
    pub body_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind_addr: "0.0.0.0:8080".into(),
            shutdown_timeout_s: 20,
            http_workers: 0,
            trusted_proxies: String::new(),
            cors_origins: "*".into(),
            body_read_timeout_ms: 10_000,
        }
    }
}

impl HttpConfig {
    /// An `HttpConfig` bound to `addr` with defaults elsewhere (tests).
    pub fn bound_to(addr: &str) -> Self {
        Self {
            bind_addr: addr.into(),
            ..Self::default()
        }
    }

    /// Reads the HTTP settings, with `BIND_ADDR` defaulting to `default_bind`.
    ///
    /// # Errors
    /// As [`from_iter`].
    pub fn from_iter_with_default<I>(vars: I, default_bind: &str) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut vars: Vec<(String, String)> = vars.into_iter().collect();
        if !vars.iter().any(|(k, _)| k == "BIND_ADDR") {
            vars.push(("BIND_ADDR".into(), default_bind.into()));
        }
        let http: Self = from_iter(vars)?;
        if http.body_read_timeout_ms == 0 {
            return Err(ConfigError(
                "BODY_READ_TIMEOUT_MS must be at least 1 (milliseconds)".into(),
            ));
        }
        Ok(http)
    }

    /// How long a request body may take to arrive.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// Splits a comma-separated list, trimming blanks.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Hides the password of a connection URL so configs can be logged.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        if userinfo.contains(':') {
            return format!("{scheme}://{user}:***@{host}");
        }
    }
    url.to_string()
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn event_queue_shards_out_of_range_are_refused_naming_the_variable() {
        for bad in ["0", "65"] {
            let e = Vars::new(vars(&[("EVENT_QUEUE_SHARDS", bad)]))
                .redis()
                .expect_err("refused");
            assert!(e.0.contains("EVENT_QUEUE_SHARDS"), "{e}");
        }
        let ok = Vars::new(vars(&[("EVENT_QUEUE_SHARDS", "12")]))
            .redis()
            .expect("accepted");
        assert_eq!(ok.event_queue_shards, 12);
        let e = Vars::new(vars(&[("REDIS_TIMEOUT_MS", "0")]))
            .redis()
            .expect_err("refused");
        assert!(e.0.contains("REDIS_TIMEOUT_MS"), "{e}");
    }

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_required_variable_is_named_in_upper_case() {
        #[derive(Debug, Deserialize)]
        struct NeedsBindAddr {
            #[allow(dead_code)]
            bind_addr: String,
        }
        let err = from_iter::<NeedsBindAddr, _>(vars(&[]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("configuration error: missing environment variable BIND_ADDR")
        );
    }

    #[test]
    fn unparsable_value_names_the_variable() {
        let err = from_iter::<RedisConfig, _>(vars(&[("REDIS_TIMEOUT_MS", "many")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("REDIS_TIMEOUT_MS"), "{err}");
    }

    #[test]
    fn defaults_apply_when_unset() {
        let cfg: RedisConfig = from_iter(vars(&[])).expect("defaults");
        assert_eq!(cfg.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(cfg.redis_key_prefix, "tally");
    }

    #[test]
    fn passwords_are_redacted_in_debug_output() {
        let cfg: PostgresConfig =
            from_iter(vars(&[("DATABASE_URL", "postgres://u:hunter2@db:5432/x")])).expect("cfg");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://u:***@db:5432/x"), "{shown}");
        assert_eq!(format!("{:?}", Secret::new("abc")), "\"***\"");
    }

    #[test]
    fn bind_addr_default_is_used_only_when_unset() {
        let cfg = HttpConfig::from_iter_with_default(vars(&[]), "0.0.0.0:8080").expect("cfg");
        assert_eq!(cfg.bind_addr, "0.0.0.0:8080");
        let cfg = HttpConfig::from_iter_with_default(vars(&[("BIND_ADDR", "127.0.0.1:1")]), "x:1")
            .expect("cfg");
        assert_eq!(cfg.bind_addr, "127.0.0.1:1");
    }

    #[test]
    fn a_zero_body_read_timeout_is_refused_naming_the_variable() {
        let err = HttpConfig::from_iter_with_default(vars(&[("BODY_READ_TIMEOUT_MS", "0")]), "x:1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BODY_READ_TIMEOUT_MS"), "{err}");
    }
}
