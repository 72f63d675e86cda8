//! Writing registry changes to PostgreSQL in one statement: each change replaces the row
//! only when its version is newer, so changes stored out of order (or replayed) end on the
//! newest. A delete keeps the row with `deleted_at`, so an older change arriving after it
//! cannot bring the site back. A site whose time zone or goals changed has what they
//! touch in its visit rollups rebuilt in the same transaction ([`resettle_sites`]).

use super::SitesWritten;
use crate::events::visits::settings::resettle_sites;
use crate::lane::StoreError;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::site_registry::SiteChange;
use std::collections::HashMap;

const UPSERT_SITES: &str = r"
INSERT INTO sites AS s (site_id, domains, timezone, public, version, created_at, updated_at,
                        deleted_at, goals, funnels)
SELECT site_id, ARRAY(SELECT jsonb_array_elements_text(domains::jsonb)), timezone, public,
       version, created_at, updated_at, CASE WHEN deleted THEN updated_at END,
       goals::jsonb, funnels::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[], $6::timestamptz[],
            $7::timestamptz[], $8::bool[], $9::text[], $10::text[])
    AS t(site_id, domains, timezone, public, version, created_at, updated_at, deleted, goals,
         funnels)
ON CONFLICT (site_id) DO UPDATE SET
    domains = EXCLUDED.domains, timezone = EXCLUDED.timezone, public = EXCLUDED.public,
    goals = EXCLUDED.goals, funnels = EXCLUDED.funnels,
    version = EXCLUDED.version, created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at
WHERE s.version < EXCLUDED.version
RETURNING site_id
";

/// Stores `changes`; a batch holding several changes of one site keeps its newest.
///
/// # Errors
/// [`StoreError::Data`] when a value is refused; [`StoreError::Transient`] otherwise.
pub async fn store_site_changes(
    pg: &Pool,
    changes: &[SiteChange],
    rebuild_timeout: std::time::Duration,
) -> Result<SitesWritten, StoreError> {
    // One row per site (ON CONFLICT cannot touch a row twice in one statement).
    let mut newest: HashMap<&str, &SiteChange> = HashMap::new();
    for c in changes {
        let entry = newest.entry(&c.site.site_id).or_insert(c);
        if c.site.version > entry.site.version {
            *entry = c;
        }
    }
    let mut rows: Vec<&SiteChange> = newest.into_values().collect();
    rows.sort_by(|a, b| a.site.site_id.cmp(&b.site.site_id));
    let ids: Vec<&str> = rows.iter().map(|c| c.site.site_id.as_str()).collect();
    let domains: Vec<String> = rows
        .iter()
        .map(|c| serde_json::to_string(&c.site.domains).unwrap_or_else(|_| "[]".into()))
        .collect();
    let zones: Vec<&str> = rows.iter().map(|c| c.site.timezone.as_str()).collect();
    let public: Vec<bool> = rows.iter().map(|c| c.site.public).collect();
    let versions: Vec<i64> = rows.iter().map(|c| c.site.version).collect();
    let created: Vec<DateTime<Utc>> = rows.iter().map(|c| c.site.created_at).collect();
    let updated: Vec<DateTime<Utc>> = rows.iter().map(|c| c.site.updated_at).collect();
    let deleted: Vec<bool> = rows.iter().map(|c| c.deleted).collect();
    let json = |v: Result<String, serde_json::Error>| v.unwrap_or_else(|_| "[]".into());
    let goals: Vec<String> = rows
        .iter()
        .map(|c| json(serde_json::to_string(&c.site.goals)))
        .collect();
    let funnels: Vec<String> = rows
        .iter()
        .map(|c| json(serde_json::to_string(&c.site.funnels)))
        .collect();
    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let stmt = client
        .prepare_cached(UPSERT_SITES)
        .await
        .map_err(StoreError::from_pg)?;
    let tx = client.transaction().await.map_err(StoreError::from_pg)?;
    let stored = tx
        .query(
            &stmt,
            &[
                &ids, &domains, &zones, &public, &versions, &created, &updated, &deleted, &goals,
                &funnels,
            ],
        )
        .await
        .map_err(StoreError::from_pg)?;
    let sites: Vec<String> = stored.iter().map(|r| r.get(0)).collect();
    resettle_sites(&tx, &sites, rebuild_timeout).await?;
    tx.commit().await.map_err(StoreError::from_pg)?;
    Ok(SitesWritten {
        inserted: sites.len() as u64,
        sites,
    })
}
