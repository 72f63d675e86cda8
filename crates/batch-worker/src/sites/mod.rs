//! The site registry: changes queued by ingest-api stored in PostgreSQL ([`store`]), and
//! the Redis mirror put back from PostgreSQL after Redis lost it ([`restore`]).

pub mod restore;
pub mod store;

use crate::lane::{Outcome, StoreError, Work};
use domain::deadpool_postgres::Pool;
use domain::keys::Keys;
use domain::site_registry::SiteChange;
use futures_util::future::BoxFuture;
use tracing::Instrument;

/// The sites queue's work.
pub struct SiteWork {
    pub pg: Pool,
    pub keys: Keys,
    /// `statement_timeout` of a change's recount (`SITE_REBUILD_TIMEOUT_MS`).
    pub rebuild_timeout: std::time::Duration,
}

/// What a stored batch of registry changes changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SitesWritten {
    /// Changes newer than what PostgreSQL had.
    pub inserted: u64,
    /// Sites whose settings changed: their cached stats are stale (a new time zone moves
    /// every day).
    pub sites: Vec<String>,
}

impl Outcome for SitesWritten {
    fn inserted(&self) -> u64 {
        self.inserted
    }

    fn merge(&mut self, other: Self) {
        self.inserted += other.inserted;
        self.sites.extend(other.sites);
    }
}

impl Work for SiteWork {
    type Item<'a> = SiteChange;
    type Outcome = SitesWritten;
    const NAME: &'static str = "sites";

    fn parse(&self, raw: &[u8]) -> Result<SiteChange, String> {
        domain::site_registry::parse_change(raw)
    }

    fn write<'s, 'i: 's>(
        &'s self,
        changes: &'s [SiteChange],
    ) -> BoxFuture<'s, Result<SitesWritten, StoreError>> {
        let span = tracing::info_span!("postgres.write", tables = "sites", rows = changes.len());
        Box::pin(
            store::store_site_changes(&self.pg, changes, self.rebuild_timeout).instrument(span),
        )
    }

    fn on_commit(&self, pipe: &mut domain::redis_client::Pipeline, written: &SitesWritten) {
        domain::cache::bump_sites(pipe, &self.keys, written.sites.iter().map(String::as_str));
    }
}
