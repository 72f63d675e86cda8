//! What each site's rollup cells are computed with (`visit_rollup_zones`, migrations 0012
//! and 0013): the time zone its day cells are in, and the goals its visits convert.
//!
//! A writer inserts the row of a site seen for the first time before its transaction
//! ([`add_missing`]: the site's stored zone and goals, else UTC and none), then reads its
//! sites' rows under a share lock held to its commit ([`lock_settings`]), before it reads
//! or writes any visit. Storing a site whose zone or goals changed ([`resettle_sites`], in
//! the sites' transaction) updates the row, which waits for the writers holding it and
//! holds back the next ones, and then rebuilds from the stored visits and events what
//! the change touches (the site's day cells in the new zone; its visits' conversions and
//! goal cells) before it commits: so every cell is always of its site's current zone and
//! goals, whichever order a site's change and its events are stored in. Both sides lock
//! rows in site order, and a writer inserts none inside its transaction (a new row held
//! there while share-locking another could close a cycle with a change holding the other
//! and waiting for the new one).

use crate::lane::StoreError;
use chrono_tz::Tz;
use domain::deadpool_postgres::{Client, Transaction};
use domain::goals::Goal;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use std::str::FromStr;

/// One site's settings.
#[derive(Debug, Clone, Default)]
struct Settings {
    zone: Option<Tz>,
    goals: Vec<Goal>,
}

/// Sites' settings; UTC and no goals for a site not listed.
#[derive(Debug, Default)]
pub struct SiteSettings(FxHashMap<String, Settings>);

impl SiteSettings {
    /// The zone of `site`.
    pub fn zone(&self, site: &str) -> Tz {
        self.0.get(site).and_then(|s| s.zone).unwrap_or(Tz::UTC)
    }

    /// The goals of `site`.
    pub fn goals(&self, site: &str) -> &[Goal] {
        self.0.get(site).map_or(&[], |s| s.goals.as_slice())
    }

    /// Zones by name (a name this build does not know counts as UTC).
    pub fn from_names<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            names
                .into_iter()
                .map(|(site, name)| {
                    let settings = Settings {
                        zone: Tz::from_str(name).ok(),
                        goals: Vec::new(),
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

const ADD_MISSING: &str = r"
INSERT INTO visit_rollup_zones (site_id, timezone, goals)
SELECT s, coalesce((SELECT timezone FROM sites WHERE site_id = s), 'UTC'),
       tally_goal_matchers((SELECT goals FROM sites WHERE site_id = s))
FROM unnest($1::text[]) AS t(s) ORDER BY 1
ON CONFLICT (site_id) DO NOTHING
";

const READ_LOCKED: &str = r"
SELECT site_id, timezone, goals FROM visit_rollup_zones WHERE site_id = ANY($1::text[])
ORDER BY site_id FOR SHARE
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

/// The settings of `sites` (their rows added by [`add_missing`] before `tx` began),
/// share-locked until `tx` ends.
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
    let read = tx
        .prepare_cached(READ_LOCKED)
        .await
        .map_err(StoreError::from_pg)?;
    let rows = tx
        .query(&read, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let mut settings = SiteSettings::default();
    for r in &rows {
        let site: &str = r.get(0);
        let goals: serde_json::Value = r.get(2);
        let goals: Vec<Matcher> = serde_json::from_value(goals).map_err(|e| {
            StoreError::Transient(anyhow::anyhow!(
                "visit_rollup_zones.goals of site {site} is not a list of goals: {e}"
            ))
        })?;
        settings.0.insert(
            site.to_string(),
            Settings {
                zone: Tz::from_str(r.get(1)).ok(),
                goals: goals.into_iter().map(Goal::from).collect(),
            },
        );
    }
    Ok(settings)
}

const ADD_STORED: &str = r"
INSERT INTO visit_rollup_zones (site_id, timezone, goals)
SELECT site_id, timezone, tally_goal_matchers(goals) FROM sites
WHERE site_id = ANY($1::text[]) ORDER BY site_id
ON CONFLICT (site_id) DO NOTHING
";

/// Locks the rows of the sites stored by `tx` (of those among `$1`) whose zone or goals
/// differ from their `sites` row, and says which differ.
const CHANGED: &str = r"
SELECT z.site_id, z.timezone IS DISTINCT FROM s.timezone,
       z.goals IS DISTINCT FROM tally_goal_matchers(s.goals)
FROM visit_rollup_zones z JOIN sites s USING (site_id)
WHERE z.site_id = ANY($1::text[])
  AND (z.timezone IS DISTINCT FROM s.timezone OR z.goals IS DISTINCT FROM tally_goal_matchers(s.goals))
ORDER BY z.site_id FOR UPDATE OF z
";

const SETTLE: &str = r"
UPDATE visit_rollup_zones z SET timezone = s.timezone, goals = tally_goal_matchers(s.goals)
FROM sites s WHERE s.site_id = z.site_id AND z.site_id = $1
";

/// Brings the settings of `sites` (just stored in `tx`) up to date: rebuilds the day
/// cells of those whose zone changed, and recounts the conversions and goal cells of
/// those whose goals changed. Returns the sites whose zone changed.
///
/// # Errors
/// [`StoreError`] when PostgreSQL fails.
pub async fn resettle_sites(
    tx: &Transaction<'_>,
    sites: &[String],
) -> Result<Vec<String>, StoreError> {
    // Rows of sites no writer has seen yet, as a writer would add them: a writer adding
    // one meanwhile (from the site as it was) conflicts on the key, so one of the two
    // waits for the other, and the comparison below sees the row.
    tx.execute(ADD_STORED, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let rows = tx
        .query(CHANGED, &[&sites])
        .await
        .map_err(StoreError::from_pg)?;
    let mut rezoned = Vec::new();
    for r in &rows {
        let (site, zone_changed, goals_changed): (String, bool, bool) =
            (r.get(0), r.get(1), r.get(2));
        tx.execute(SETTLE, &[&site])
            .await
            .map_err(StoreError::from_pg)?;
        // Statements after the row's lock: they read every visit and event committed
        // until then.
        if goals_changed {
            tx.execute("SELECT tally_rebuild_visit_goals($1)", &[&site])
                .await
                .map_err(StoreError::from_pg)?;
            tracing::info!(site_id = %site, "recounted the site's conversions of its changed goals");
        }
        if zone_changed {
            tx.execute("SELECT tally_rebuild_visit_day_rollups($1)", &[&site])
                .await
                .map_err(StoreError::from_pg)?;
            tracing::info!(site_id = %site, "rebuilt the site's visit rollups in its new time zone");
            rezoned.push(site);
        }
    }
    Ok(rezoned)
}
