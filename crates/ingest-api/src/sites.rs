//! ingest-api's copy of the site registry, so checking an event's site costs no Redis
//! round trip: the whole registry is held in memory and reloaded whenever its version
//! moves (checked every `SITES_REFRESH_MS`, and right after this process changed it).
//! Another ingest-api process sees a change within one refresh interval.

use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::redis_client::RedisResult;
use domain::site_registry::{self, Site};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What the registry says of a site id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteLookup {
    Known(Arc<Site>),
    Unknown,
    /// Redis lost the registry and a worker is putting it back: unknown means nothing yet.
    Restoring,
}

#[derive(Default)]
struct Snapshot {
    /// `None` until the first load.
    version: Option<i64>,
    restored: bool,
    sites: HashMap<String, Arc<Site>>,
}

/// The in-memory registry.
#[derive(Default)]
pub struct SiteDirectory {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl SiteDirectory {
    /// What the registry says of `site_id` right now.
    pub fn lookup(&self, site_id: &str) -> SiteLookup {
        let snapshot = self.current();
        match snapshot.sites.get(site_id) {
            Some(site) => SiteLookup::Known(site.clone()),
            None if snapshot.restored => SiteLookup::Unknown,
            None => SiteLookup::Restoring,
        }
    }

    /// Every site, ordered by id.
    pub fn all(&self) -> Vec<Arc<Site>> {
        let mut sites: Vec<Arc<Site>> = self.current().sites.values().cloned().collect();
        sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        sites
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the registry when its version moved (one round trip when it did not).
    ///
    /// # Errors
    /// When Redis is unreachable; the copy held so far stays in use.
    pub async fn refresh(&self, redis: &mut RedisConn, keys: &Keys) -> RedisResult<()> {
        let (version, restored) = site_registry::version(redis, keys).await?;
        let held = self.current();
        if held.version == Some(version) && held.restored == restored {
            return Ok(());
        }
        let (version, restored, sites) = site_registry::all(redis, keys).await?;
        let sites: HashMap<String, Arc<Site>> = sites
            .into_iter()
            .map(|s| (s.site_id.clone(), Arc::new(s)))
            .collect();
        metrics::gauge!("ingest_api_sites_known").set(sites.len() as f64);
        let fresh = Arc::new(Snapshot {
            version: Some(version),
            restored,
            sites,
        });
        let mut held = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two refreshes may race (the periodic one, one after a change): never step back.
        if held.version.is_none_or(|v| v <= version) {
            *held = fresh;
        }
        Ok(())
    }
}
