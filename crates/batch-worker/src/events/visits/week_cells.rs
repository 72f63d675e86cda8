//! Builds week cells (migration 0019), pair day cells (migration 0024) and pair hour cells
//! (migration 0025): every `VISIT_WEEK_BUILD_INTERVAL_MS`, each worker lists the sealed
//! weeks whose cells are missing or out of date, oldest first, and builds them one
//! transaction each (`tally_build_visit_week`); then the same for sealed days' pair cells
//! (`tally_build_visit_pair_day`) and for the sealed hours' of the last two days
//! (`tally_build_visit_pair_hour`), and drops the hours no reader uses any more. A week's
//! cells are the sums and sketch unions of its seven day cells, so readers that take a
//! range's whole weeks from them merge a seventh of the rows and get the same answer; a
//! day's (an hour's) pair cells let a filtered breakdown read no visits but those of the
//! last hours.
//!
//! A round stops at the first week (day, hour) it could not build (locked by another worker
//! or a late event's writer, or failed): they are built in ascending order, which is what
//! lets the listing look for new ones only after a site's latest built one.

use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::deadpool_postgres::Pool;
use domain::shutdown::{CancellationToken, every};
use std::time::Duration;

/// Weeks (days) listed per round (each is built in a transaction of its own).
const LIST: i32 = 200;

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Weeks built.
    pub weeks: u64,
    /// Days whose pair cells were built.
    pub days: u64,
    /// Hours whose pair cells were built.
    pub hours: u64,
    /// Week cells, page week rows and pair cells written.
    pub cells: u64,
    /// Whether the round stopped at a week, day or hour another transaction held.
    pub stopped_at_locked: bool,
}

/// One kind of cells built from sealed spans: how to list them and build one.
struct Spans {
    /// Lists `(site_id, span)` to build, oldest first, at most `$1`.
    list: &'static str,
    /// Builds site `$1`'s span `$2`: the cells written, or -1 when its row is held.
    build: &'static str,
    /// What a span is, for errors.
    what: &'static str,
}

const WEEKS: Spans = Spans {
    list: "SELECT site_id, week FROM tally_visit_weeks_to_build($1)",
    build: "SELECT tally_build_visit_week($1, $2)",
    what: "week",
};

const PAIR_DAYS: Spans = Spans {
    list: "SELECT site_id, day FROM tally_visit_days_to_build($1)",
    build: "SELECT tally_build_visit_pair_day($1, $2)",
    what: "day",
};

const PAIR_HOURS: Spans = Spans {
    list: "SELECT site_id, hour FROM tally_visit_hours_to_build($1)",
    build: "SELECT tally_build_visit_pair_hour($1, $2)",
    what: "hour",
};

/// Builds the weeks to build, in order, until one cannot be built, then the days' and the
/// hours' pair cells the same way, and drops the hours past reading; each build may take
/// up to `timeout` (pair cells aggregate every visit of their span: seconds per hundred
/// thousand visits, past the service's `statement_timeout` for a busy site).
///
/// # Errors
/// When PostgreSQL fails; spans built before stay built.
pub async fn build_once(pg: &Pool, timeout: Duration) -> anyhow::Result<Round> {
    let mut client = pg.get().await.context("no PostgreSQL connection")?;
    let mut round = Round::default();
    // Each kind is built even when another fails: none waits for the others.
    let weeks = build_spans(&mut client, &WEEKS, timeout, &mut round).await;
    let days = build_spans(&mut client, &PAIR_DAYS, timeout, &mut round).await;
    let hours = build_spans(&mut client, &PAIR_HOURS, timeout, &mut round).await;
    let pruned = client
        .execute("SELECT tally_prune_visit_pair_hours()", &[])
        .await
        .context("dropping the pair hour cells past reading");
    for (built, counter) in [
        (&weeks, "batch_worker_visit_weeks_built_total"),
        (&days, "batch_worker_visit_pair_days_built_total"),
        (&hours, "batch_worker_visit_pair_hours_built_total"),
    ] {
        if let Ok(n) = built {
            metrics::counter!(counter).increment(*n);
        }
    }
    round.weeks = weeks?;
    round.days = days?;
    round.hours = hours?;
    pruned?;
    Ok(round)
}

/// Builds the spans `spans` lists, in order, until one cannot be built; returns how many
/// were built, their cells added to `round`.
async fn build_spans(
    client: &mut domain::deadpool_postgres::Object,
    spans: &Spans,
    timeout: Duration,
    round: &mut Round,
) -> anyhow::Result<u64> {
    let listed = client
        .query(spans.list, &[&LIST])
        .await
        .with_context(|| format!("listing the {}s to build", spans.what))?;
    let mut built = 0;
    for row in &listed {
        let (site, span): (&str, DateTime<Utc>) = (row.get(0), row.get(1));
        let tx = client
            .transaction()
            .await
            .with_context(|| format!("starting a {}'s build", spans.what))?;
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis()
        ))
        .await
        .context("raising the build's statement_timeout")?;
        let cells: i64 = tx
            .query_one(spans.build, &[&site, &span])
            .await
            .with_context(|| format!("building {} {span} of site {site}", spans.what))?
            .get(0);
        tx.commit()
            .await
            .with_context(|| format!("committing {} {span} of site {site}", spans.what))?;
        let Ok(cells) = u64::try_from(cells) else {
            round.stopped_at_locked = true;
            break;
        };
        built += 1;
        round.cells += cells;
    }
    Ok(built)
}

/// Builds weeks, pair days and pair hours every `interval` until `stop`, each within
/// `timeout`.
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
            super::sketch_repair::record_backlog(
                &pg,
                "SELECT count(*) FROM visit_rollup_days \
                 WHERE generation <> built_generation AND tally_visit_day_sealed(day)",
                "batch_worker_visit_pair_days_out_of_date",
            )
            .await;
            super::sketch_repair::record_backlog(
                &pg,
                "SELECT count(*) FROM visit_rollup_hours \
                 WHERE generation <> built_generation AND tally_visit_hour_sealed(hour) \
                   AND tally_visit_hour_readable(hour)",
                "batch_worker_visit_pair_hours_out_of_date",
            )
            .await;
            loop {
                match build_once(&pg, timeout).await {
                    Ok(round) => {
                        if round.weeks + round.days + round.hours > 0 {
                            tracing::debug!(
                                weeks = round.weeks,
                                days = round.days,
                                hours = round.hours,
                                cells = round.cells,
                                "visit weeks, pair days and pair hours built"
                            );
                        }
                        // A full list built: more may be waiting.
                        let full = u64::from(LIST.unsigned_abs());
                        if round.weeks < full && round.days < full && round.hours < full {
                            break;
                        }
                    }
                    Err(e) => {
                        metrics::counter!("batch_worker_visit_week_build_failures_total")
                            .increment(1);
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "building visit week cells or pair day or hour cells failed"
                        );
                        break;
                    }
                }
            }
        }
    })
    .await;
}
