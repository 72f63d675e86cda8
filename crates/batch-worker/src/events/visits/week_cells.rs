//! Builds week cells (migration 0019): every `VISIT_WEEK_BUILD_INTERVAL_MS`, each worker
//! lists the sealed weeks whose cells are missing or out of date, oldest first, and
//! builds them one transaction each (`tally_build_visit_week`). A week's cells are the
//! sums and sketch unions of its seven day cells, so readers that take a range's whole
//! weeks from them merge a seventh of the rows and get the same answer.
//!
//! A round stops at the first week it could not build (locked by another worker or a
//! late event's writer, or failed): weeks are built in ascending order, which is what lets
//! the listing look for new weeks only after a site's latest built one.

use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Weeks listed per round (each is built in a transaction of its own).
const LIST: i32 = 200;

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Weeks built.
    pub weeks: u64,
    /// Week cells and page week rows written.
    pub cells: u64,
    /// Whether the round stopped at a week another transaction held.
    pub stopped_at_locked: bool,
}

/// Builds the weeks to build, in order, until one cannot be built; each week's build may
/// take up to `timeout` (its pair cells aggregate every visit of the week: seconds per
/// hundred thousand visits, past the service's `statement_timeout` for a busy site).
///
/// # Errors
/// When PostgreSQL fails; weeks built before stay built.
pub async fn build_once(pg: &Pool, timeout: Duration) -> anyhow::Result<Round> {
    let mut client = pg.get().await.context("no PostgreSQL connection")?;
    let weeks = client
        .query(
            "SELECT site_id, week FROM tally_visit_weeks_to_build($1)",
            &[&LIST],
        )
        .await
        .context("listing the weeks to build")?;
    let mut round = Round::default();
    for row in &weeks {
        let (site, week): (&str, DateTime<Utc>) = (row.get(0), row.get(1));
        let tx = client
            .transaction()
            .await
            .context("starting a week's build")?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ))
        .await
        .context("raising the build's statement_timeout")?;
        let cells: i64 = tx
            .query_one("SELECT tally_build_visit_week($1, $2)", &[&site, &week])
            .await
            .with_context(|| format!("building week {week} of site {site}"))?
            .get(0);
        tx.commit()
            .await
            .with_context(|| format!("committing week {week} of site {site}"))?;
        let Ok(cells) = u64::try_from(cells) else {
            round.stopped_at_locked = true;
            break;
        };
        round.weeks += 1;
        round.cells += cells;
    }
    metrics::counter!("batch_worker_visit_weeks_built_total").increment(round.weeks);
    Ok(round)
}

/// Builds weeks every `interval` until `stop`, each within `timeout`.
pub async fn run(pg: Pool, interval: Duration, timeout: Duration, stop: CancellationToken) {
    every(interval, stop.clone(), || {
        let pg = pg.clone();
        async move {
            super::sketch_repair::record_backlog(
                &pg,
                "SELECT count(*) FROM visit_rollup_weeks \
                 WHERE generation <> built_generation AND tally_visit_week_sealed(week)",
                "batch_worker_visit_weeks_out_of_date",
            )
            .await;
            loop {
                match build_once(&pg, timeout).await {
                    Ok(round) => {
                        if round.weeks > 0 {
                            tracing::debug!(
                                weeks = round.weeks,
                                cells = round.cells,
                                "visit weeks built"
                            );
                        }
                        // A full list built: more may be waiting.
                        if round.weeks < LIST.unsigned_abs().into() {
                            break;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("batch_worker_visit_week_build_failures_total")
                            .increment(1);
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "building visit week cells failed"
                        );
                        break;
                    }
                }
            }
        }
    })
    .await;
}
