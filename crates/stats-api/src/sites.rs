//! What stats need of the site registry: the site's time zone (every answer is in its
//! local days), whether it is public (readable without `STATS_TOKEN`), its goals and
//! funnels. Read from PostgreSQL, the registry's durable record, which the worker updates
//! within a batch window of a change; a site that is not registered is on UTC and private.

use crate::local_time::SiteClock;
use domain::deadpool_postgres::Pool;
use domain::goals::{Funnel, Goal};
use std::str::FromStr;

/// A site's settings as stats see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteSettings {
    pub clock: SiteClock,
    pub public: bool,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            clock: SiteClock::utc(),
            public: false,
        }
    }
}

/// The settings of `site_id`.
///
/// # Errors
/// When PostgreSQL is unreachable.
pub async fn settings(pool: &Pool, site_id: &str) -> anyhow::Result<SiteSettings> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT timezone, public FROM sites WHERE site_id = $1 AND deleted_at IS NULL",
        )
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&site_id]).await? else {
        return Ok(SiteSettings::default());
    };
    let zone: String = row.get(0);
    Ok(SiteSettings {
        clock: SiteClock {
            tz: chrono_tz::Tz::from_str(&zone).unwrap_or(chrono_tz::UTC),
        },
        public: row.get(1),
    })
}

/// The goals and funnels of `site_id` (none for a site that is not registered).
///
/// # Errors
/// When PostgreSQL is unreachable, or holds lists this build cannot read.
pub async fn goals(pool: &Pool, site_id: &str) -> anyhow::Result<(Vec<Goal>, Vec<Funnel>)> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT goals::text, funnels::text FROM sites WHERE site_id = $1 AND deleted_at IS NULL",
        )
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&site_id]).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    Ok((
        serde_json::from_str(row.get(0))?,
        serde_json::from_str(row.get(1))?,
    ))
}
