//! What each site's rollup cells are computed with (`visit_rollup_zones`, migrations 0012,
//! 0013 and 0015): the time zone its day cells are in, the goals its visits convert, and
//! its funnels.
//!
//! A writer inserts the row of a site seen for the first time before its transaction
//! ([`add_missing`]: the site's stored settings, else UTC and none), then takes its sites'
//! settings locks shared (`tally_lock_site_settings`, migration 0016: advisory locks held
//! to its commit) and reads their rows ([`lock_settings`]), before it reads or writes any
//! visit; a writer of events tries the locks first and sets aside the events of the sites
//! whose lock it cannot have at once (see [`crate::events::waiting`]), so it never waits
//! for a change. Storing a site whose zone, goals or funnels changed ([`resettle_sites`], in the
//! sites' transaction) takes the site's lock exclusive, which waits for the writers
//! holding it and, the lock manager's queue being fair, holds back the next ones; it then
//! updates the row and rebuilds from the stored visits and events what the change touches
//! (the site's day cells in the new zone; its visits' conversions and steps, goal and
//! funnel cells) before it commits: so every cell is always of its site's current
//! settings, whichever order a site's change and its events are stored in. Both sides
//! lock in one order, and a writer inserts no row inside its transaction (a new row held
//! there while it waits for a lock could close a cycle with a change holding the lock
//! and waiting for the new row).

use crate::lane::StoreError;
use chrono_tz::Tz;
use domain::deadpool_postgres::{Client, Transaction};
use domain::goals::Goal;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use std::str::FromStr;

/// A funnel as `tally_funnel_matchers` (migration 0015) keeps it: its goal ids in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunnelSteps {
    pub funnel_id: String,
    pub steps: Vec<String>,
}

/// One site's settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub zone: Option<Tz>,
    pub goals: Vec<Goal>,
    pub funnels: Vec<FunnelSteps>,
}

impl Settings {
    /// Whether goal `goal_id` is a step of one of the funnels.
    pub fn is_step(&self, goal_id: &str) -> bool {
        self.funnels
            .iter()
            .any(|f| f.steps.iter().any(|s| s == goal_id))
    }
}

static NO_SETTINGS: Settings = Settings {
    zone: None,
    goals: Vec::new(),
    funnels: Vec::new(),
};

/// Sites' settings; UTC, no goals and no funnels for a site not listed.
#[derive(Debug, Default)]
pub struct SiteSettings(FxHashMap<String, Settings>);

impl SiteSettings {
    /// The settings of `site`.
    pub fn of(&self, site: &str) -> &Settings {
        self.0.get(site).unwrap_or(&NO_SETTINGS)
    }

    /// The zone of `site`.
    pub fn zone(&self, site: &str) -> Tz {
        self.of(site).zone.unwrap_or(Tz::UTC)
    }

    /// The goals of `site`.
    pub fn goals(&self, site: &str) -> &[Goal] {
        &self.of(site).goals
    }

    /// The funnels of `site`.
    pub fn funnels(&self, site: &str) -> &[FunnelSteps] {
        &self.of(site).funnels
    }

    /// Zones by name (a name this build does not know counts as UTC).
    pub fn from_names<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            names
                .into_iter()
                .map(|(site, name)| {
                    let settings = Settings {
                        zone: Tz::from_str(name).ok(),
                        ..Settings::default()
                    };
                    (site.to_string(), settings)
                })
                .collect(),
        )
    }

    /// These settings with `goals` for `site`.
    #[must_use]
    pub fn with_goals(mut self, site: &str, goals: Vec<Goal>) -> Self {
        self.0.entry(site.to_string()).or_default().goals = goals;
        self
    }

    /// These settings with `funnels` for `site`.
    #[must_use]
    pub fn with_funnels(mut self, site: &str, funnels: Vec<FunnelSteps>) -> Self {
        self.0.entry(site.to_string()).or_default().funnels = funnels;
        self
    }
}

/// A goal as `tally_goal_matchers` (migration 0013) keeps it: what conversions depend on.
#[derive(Deserialize)]
struct Matcher {
    goal_id: String,
    event_name: Option<String>,
    page_path: Option<String>,
}

impl From<Matcher> for Goal {
    fn from(m: Matcher) -> Self {
        Self {
            display_name: m.goal_id.clone(),
            goal_id: m.goal_id,
            event_name: m.event_name,
            page_path: m.page_path,
        }
    }
}

/// Only the sites without a row try to insert one: a conflicting insert waits for the
/// transaction changing the row it conflicts with, and a change of a site's settings
/// updates its row and holds it while it recounts (minutes for a large site), which would
/// hold every batch with one of its events, and the lanes behind them, that long.
const ADD_MISSING: &str = r"
INSERT INTO visit_rollup_zones (site_id, timezone, goals, funnels)
SELECT s, coalesce((SELECT timezone FROM sites WHERE site_id = s), 'UTC'),
       tally_goal_matchers((SELECT goals FROM sites WHERE site_id = s)),
       tally_funnel_matchers((SELECT funnels FROM sites WHERE site_id = s))
FROM unnest($1::text[]) AS t(s)
WHERE NOT EXISTS (SELECT 1 FROM visit_rollup_zones z WHERE z.site_id = s)
ORDER BY 1
ON CONFLICT (site_id) DO NOTHING
";

/// Takes the settings locks of `$1`, shared (`$2` false) or exclusive.
const LOCK: &str = "SELECT tally_lock_site_settings($1::text[], $2)";

const READ: &str = r"
SELECT site_id, timezone, goals, funnels FROM visit_rollup_zones WHERE site_id = ANY($1::text[])
";

/// Inserts the rows `sites` lack, on `client` outside any transaction.
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

/// The settings of `sites` (their rows added by [`add_missing`] before `tx` began), their
/// locks held shared until `tx` ends.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn lock_settings(
    tx: &Transaction<'_>,
    sites: &[&str],
) -> Result<SiteSettings, StoreError> {
    if sites.is_empty() {
        return Ok(SiteSettings::default());
    }
    let lock = tx.prepare_cached(LOCK).await.map_err(StoreError::from_pg)?;
    tx.execute(&lock, &[&sites, &false])
        .await
        .map_err(StoreError::from_pg)?;
    read_settings(tx, sites).await
}

/// The settings of `sites`, whose locks `tx` holds (taken in an earlier statement: this
/// one's snapshot is taken after they were granted).
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn read_settings(
    tx: &Transaction<'_>,
    sites: &[&str],
) -> Result<SiteSettings, StoreError> {
    if sites.is_empty() {
        return Ok(SiteSettings::default());
    }
    let read = tx.prepare_cached(READ).await.map_err(StoreError::from_pg)?;
    let rows = tx
        .query(&read, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let mut settings = SiteSettings::default();
    for r in &rows {
        let site: &str = r.get(0);
        let goals: Vec<Matcher> = serde_json::from_value(r.get(2)).map_err(|e| {
            StoreError::Transient(anyhow::anyhow!(
                "visit_rollup_zones.goals of site {site} is not a list of goals: {e}"
            ))
        })?;
        let funnels: Vec<FunnelSteps> = serde_json::from_value(r.get(3)).map_err(|e| {
            StoreError::Transient(anyhow::anyhow!(
                "visit_rollup_zones.funnels of site {site} is not a list of funnels: {e}"
            ))
        })?;
        settings.0.insert(
            site.to_string(),
            Settings {
                zone: Tz::from_str(r.get(1)).ok(),
                goals: goals.into_iter().map(Goal::from).collect(),
                funnels,
            },
        );
    }
    Ok(settings)
}

const ADD_STORED: &str = r"
INSERT INTO visit_rollup_zones (site_id, timezone, goals, funnels)
SELECT site_id, timezone, tally_goal_matchers(goals), tally_funnel_matchers(funnels) FROM sites
WHERE site_id = ANY($1::text[]) ORDER BY site_id
ON CONFLICT (site_id) DO NOTHING
";

/// The sites among `$1` whose zone, goals or funnels differ from their `sites` row (as
/// `tx` stored it), and which differ (the zone; the goals or funnels).
const CHANGED: &str = r"
SELECT z.site_id, z.timezone IS DISTINCT FROM s.timezone,
       z.goals IS DISTINCT FROM tally_goal_matchers(s.goals)
           OR z.funnels IS DISTINCT FROM tally_funnel_matchers(s.funnels)
FROM visit_rollup_zones z JOIN sites s USING (site_id)
WHERE z.site_id = ANY($1::text[])
  AND (z.timezone IS DISTINCT FROM s.timezone OR z.goals IS DISTINCT FROM tally_goal_matchers(s.goals)
       OR z.funnels IS DISTINCT FROM tally_funnel_matchers(s.funnels))
ORDER BY z.site_id
";

const SETTLE: &str = r"
UPDATE visit_rollup_zones z
SET timezone = s.timezone, goals = tally_goal_matchers(s.goals),
    funnels = tally_funnel_matchers(s.funnels)
FROM sites s WHERE s.site_id = z.site_id AND z.site_id = $1
";

/// Brings the settings of `sites` (just stored in `tx`) up to date: rebuilds the day
/// cells of those whose zone changed, and recounts the conversions, steps, goal and
/// funnel cells of those whose goals or funnels changed. Returns the sites whose zone
/// changed.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn resettle_sites(
    tx: &Transaction<'_>,
    sites: &[String],
    rebuild_timeout: std::time::Duration,
) -> Result<Vec<String>, StoreError> {
    // Rows of sites no writer has seen yet, as a writer would add them: a writer adding
    // one meanwhile (from the site as it was) conflicts on the key, so one of the two
    // waits for the other, and the comparison below sees the row.
    tx.execute(ADD_STORED, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let candidates: Vec<String> = tx
        .query(CHANGED, &[&sites])
        .await
        .map_err(StoreError::from_pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // The lock's wait and the recounts take longer than the service's statement_timeout
    // for a large site: under it, the change would be cancelled and retried forever.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        rebuild_timeout.as_millis()
    ))
    .await
    .map_err(StoreError::from_pg)?;
    // Waits for the writers of these sites and holds back the next ones; then the rows
    // read again are the ones no change in between could have settled already.
    let waited = std::time::Instant::now();
    tx.execute(LOCK, &[&candidates, &true])
        .await
        .map_err(StoreError::from_pg)?;
    metrics::histogram!("batch_worker_site_settings_lock_wait_seconds")
        .record(waited.elapsed().as_secs_f64());
    let rows = tx
        .query(CHANGED, &[&candidates])
        .await
        .map_err(StoreError::from_pg)?;
    let mut rezoned = Vec::new();
    for r in &rows {
        let (site, zone_changed, goals_changed): (String, bool, bool) =
            (r.get(0), r.get(1), r.get(2));
        tx.execute(SETTLE, &[&site])
            .await
            .map_err(StoreError::from_pg)?;
        // Statements after the lock: they read every visit and event committed until then.
        if goals_changed {
            let took = rebuild(tx, "SELECT tally_rebuild_visit_goals($1)", &site, "goals").await?;
            tracing::info!(site_id = %site, seconds = took, "recounted the site's conversions of its changed goals or funnels");
        }
        if zone_changed {
            let took = rebuild(
                tx,
                "SELECT tally_rebuild_visit_day_rollups($1)",
                &site,
                "zone",
            )
            .await?;
            tracing::info!(site_id = %site, seconds = took, "rebuilt the site's visit rollups in its new time zone");
            rezoned.push(site);
        }
    }
    Ok(rezoned)
}

/// Runs one rebuild of `site` (the site's writers wait meanwhile), timed in
/// `batch_worker_site_settings_rebuild_seconds{change}`; returns its seconds.
async fn rebuild(
    tx: &Transaction<'_>,
    sql: &str,
    site: &str,
    change: &'static str,
) -> Result<f64, StoreError> {
    let started = std::time::Instant::now();
    tx.execute(sql, &[&site])
        .await
        .map_err(StoreError::from_pg)?;
    let took = started.elapsed().as_secs_f64();
    metrics::histogram!("batch_worker_site_settings_rebuild_seconds", "change" => change)
        .record(took);
    Ok(took)
}
