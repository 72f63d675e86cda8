//! This process's copy of the webhook endpoints registry, reloaded when the registry's
//! version moves (checked at most every [`CHECK_EVERY`]), so a fan-out or a delivery reads
//! endpoints without a Redis round trip per item.

use domain::keys::Keys;
use domain::notify::endpoints::{self, Endpoint};
use domain::redis::RedisConn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How stale the copy may be: a disabled or changed endpoint is seen within this long.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

struct Copy {
    version: i64,
    checked: Option<Instant>,
    endpoints: Arc<HashMap<String, Endpoint>>,
}

/// The endpoints, by id.
pub struct EndpointDirectory {
    keys: Keys,
    copy: Mutex<Copy>,
    /// Held by the one caller refreshing the copy: the others keep reading the copy they
    /// have (hundreds of deliveries finding it stale at once must not each reload it).
    refreshing: tokio::sync::Mutex<()>,
}

impl EndpointDirectory {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            copy: Mutex::new(Copy {
                version: -1,
                checked: None,
                endpoints: Arc::default(),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copy> {
        self.copy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The endpoints as of at most [`CHECK_EVERY`] ago.
    ///
    /// # Errors
    /// When Redis is unreachable and no copy was ever loaded.
    pub async fn current(
        &self,
        redis: &mut RedisConn,
    ) -> anyhow::Result<Arc<HashMap<String, Endpoint>>> {
        {
            let copy = self.lock();
            if copy.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
                return Ok(copy.endpoints.clone());
            }
        }
        let loaded_before = self.lock().version >= 0;
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            // Someone else is refreshing: their copy is as good as ours will be.
            Err(_) if loaded_before => return Ok(self.lock().endpoints.clone()),
            Err(_) => self.refreshing.lock().await,
        };
        if self
            .lock()
            .checked
            .is_some_and(|t| t.elapsed() < CHECK_EVERY)
        {
            return Ok(self.lock().endpoints.clone());
        }
        match self.refresh(redis).await {
            Ok(()) => {}
            Err(e) if loaded_before => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not refresh the webhook endpoints; using the last copy"
                );
            }
            Err(e) => return Err(e),
        }
        Ok(self.lock().endpoints.clone())
    }

    /// The endpoints as of registry version `version` (just read), loaded now if the copy
    /// is of another version.
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn as_of(
        &self,
        redis: &mut RedisConn,
        version: i64,
    ) -> anyhow::Result<Arc<HashMap<String, Endpoint>>> {
        {
            let copy = self.lock();
            if copy.version == version {
                return Ok(copy.endpoints.clone());
            }
        }
        let _refreshing = self.refreshing.lock().await;
        if self.lock().version != version {
            self.refresh(redis).await?;
        }
        Ok(self.lock().endpoints.clone())
    }

    /// Forces the next read to check the registry (after this process changed it).
    pub fn invalidate(&self) {
        self.lock().checked = None;
    }

    async fn refresh(&self, redis: &mut RedisConn) -> anyhow::Result<()> {
        let (version, _) = endpoints::version(redis, &self.keys).await?;
        if version == self.lock().version {
            self.lock().checked = Some(Instant::now());
            return Ok(());
        }
        let (version, all) = endpoints::all(redis, &self.keys).await?;
        let map: HashMap<String, Endpoint> = all
            .into_iter()
            .map(|e| (e.endpoint_id.clone(), e))
            .collect();
        metrics::gauge!("batch_worker_webhook_endpoints").set(map.len() as f64);
        let mut copy = self.lock();
        copy.version = version;
        copy.endpoints = Arc::new(map);
        copy.checked = Some(Instant::now());
        Ok(())
    }
}
