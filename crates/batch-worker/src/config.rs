//! batch-worker configuration (environment variables).

use domain::config::{ConfigError, HttpConfig, PostgresConfig, RedisConfig, ServiceConfig, Vars};
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
    /// How often to check that Redis still has every vote shard's polls (and restore them
    /// from PostgreSQL when it lost them).
    pub restore_check_interval_ms: u64,
    /// Raw events received more than this many days ago are deleted (the rollups keep
    /// every count); 0 keeps raw events forever.
    pub events_retention_days: u32,
    /// How often expired raw events are looked for.
    pub events_retention_interval_ms: u64,
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
            restore_check_interval_ms: 1_000,
            events_retention_days: 0,
            events_retention_interval_ms: 3_600_000,
            run_migrations: true,
        }
    }
}

/// Everything batch-worker reads at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    pub worker: WorkerSettings,
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
        for (name, value) in [
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
        Ok(Self {
            http: vars.http("0.0.0.0:9091")?,
            redis: vars.redis()?,
            postgres: vars.get()?,
            worker,
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
    fn generated_worker_ids_are_unique() {
        let s = Config::from_vars(vars(&[])).expect("defaults").worker;
        assert_ne!(s.resolve_worker_id(), s.resolve_worker_id());
        let s = Config::from_vars(vars(&[("WORKER_ID", "pod-0")]))
            .expect("cfg")
            .worker;
        assert_eq!(s.resolve_worker_id(), "pod-0");
    }
}
