//! The time zone each site's day cells are in (`visit_rollup_zones`, migration 0012).
//!
//! A writer inserts the row of a site seen for the first time before its transaction
//! ([`add_missing`]: the site's zone if it is stored, else UTC), then reads its sites'
//! zones under a share lock held to its commit ([`lock_zones`]). Storing a site whose
//! zone changed ([`rezone_sites`], in the sites' transaction) updates the row, which waits
//! for the writers holding it and holds back the next ones, and rebuilds the site's day
//! cells from `visits` in the new zone before it commits: so every day cell is always in
//! its site's current zone, whichever order a site's change and its events are stored in.
//! Both sides lock rows in site order, and a writer inserts none inside its transaction
//! (a new row held there while share-locking another could close a cycle with a change
//! holding the other and waiting for the new one).

use crate::lane::StoreError;
use chrono_tz::Tz;
use domain::deadpool_postgres::{Client, Transaction};
use rustc_hash::FxHashMap;
use std::str::FromStr;

/// Sites' zones; UTC for a site not listed.
#[derive(Debug, Default)]
pub struct SiteZones(FxHashMap<String, Tz>);

impl SiteZones {
    /// The zone of `site`.
    pub fn of(&self, site: &str) -> Tz {
        self.0.get(site).copied().unwrap_or(Tz::UTC)
    }

    /// Zones by name (a name this build does not know counts as UTC).
    pub fn from_names<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            names
                .into_iter()
                .map(|(site, name)| (site.to_string(), Tz::from_str(name).unwrap_or(Tz::UTC)))
                .collect(),
        )
    }
}

const ADD_MISSING: &str = r"
INSERT INTO visit_rollup_zones (site_id, timezone)
SELECT s, coalesce((SELECT timezone FROM sites WHERE site_id = s), 'UTC')
FROM unnest($1::text[]) AS t(s) ORDER BY 1
ON CONFLICT (site_id) DO NOTHING
";

const READ_LOCKED: &str = r"
SELECT site_id, timezone FROM visit_rollup_zones WHERE site_id = ANY($1::text[])
ORDER BY site_id FOR SHARE
";

/// Inserts the zone rows `sites` lack, on `client` outside any transaction.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn add_missing(client: &Client, sites: &[&str]) -> Result<(), StoreError> {
    let add = client
        .prepare_cached(ADD_MISSING)
        .await
        .map_err(StoreError::from_pg)?;
    client
        .execute(&add, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    Ok(())
}

/// The zones of `sites` (their rows added by [`add_missing`] before `tx` began),
/// share-locked until `tx` ends.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn lock_zones(tx: &Transaction<'_>, sites: &[&str]) -> Result<SiteZones, StoreError> {
    let read = tx
        .prepare_cached(READ_LOCKED)
        .await
        .map_err(StoreError::from_pg)?;
    let rows = tx
        .query(&read, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    Ok(SiteZones::from_names(
        rows.iter()
            .map(|r| (r.get::<_, &str>(0), r.get::<_, &str>(1))),
    ))
}

/// Sets the zone of the sites stored by `tx` to their stored `sites.timezone` (of those
/// among `sites`), rebuilding the day cells of each one whose zone changed.
const REZONE: &str = r"
WITH changed AS (
    INSERT INTO visit_rollup_zones AS z (site_id, timezone)
    SELECT site_id, timezone FROM sites WHERE site_id = ANY($1::text[]) ORDER BY site_id
    ON CONFLICT (site_id) DO UPDATE SET timezone = EXCLUDED.timezone
    WHERE z.timezone <> EXCLUDED.timezone
    RETURNING site_id
)
SELECT site_id FROM changed ORDER BY site_id
";

/// Brings the zones of `sites` (just stored in `tx`) up to date, and rebuilds the day
/// cells of those whose zone changed. Returns those sites.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn rezone_sites(
    tx: &Transaction<'_>,
    sites: &[String],
) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .query(REZONE, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let changed: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for site in &changed {
        // A statement after the zone's lock: it reads every visit committed until then.
        tx.execute("SELECT tally_rebuild_visit_day_rollups($1)", &[site])
            .await
            .map_err(StoreError::from_pg)?;
        tracing::info!(site_id = %site, "rebuilt the site's visit rollups in its new time zone");
    }
    Ok(changed)
}
