//! Monthly partitions of raw events (migration 6): each batch's months get their partition
//! before the batch is written, in a statement of its own (creating a partition locks the
//! parent table for a moment; inside the batch's transaction it would hold that lock for
//! the whole write).
//!
//! Only months within a horizon get a partition of their own: [`PAST_MONTHS`] back and
//! [`FUTURE_MONTHS`] ahead. An event dated outside it (a client's clock, or a client making
//! dates up) goes to `events_default`, so no client can make the worker create a table per
//! month of the calendar.

use crate::lane::StoreError;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use domain::deadpool_postgres::Pool;
use domain::event::QueuedEvent;
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

/// Months back from now that get a partition of their own.
pub const PAST_MONTHS: u32 = 120;
/// Months ahead of now that get a partition of their own.
pub const FUTURE_MONTHS: u32 = 1;

/// The months this worker knows to have their partition (so most batches cost nothing).
#[derive(Default)]
pub struct Partitions {
    known: Mutex<HashSet<NaiveDate>>,
}

/// The first day of the month of `ts` (UTC).
pub fn month_of(ts: DateTime<Utc>) -> NaiveDate {
    let d = ts.date_naive();
    d.with_day(1).unwrap_or(d)
}

/// Whether the month starting on `month` gets a partition of its own at `now`.
pub fn in_horizon(month: NaiveDate, now: DateTime<Utc>) -> bool {
    let this = month_of(now);
    let first = this
        .checked_sub_months(Months::new(PAST_MONTHS))
        .unwrap_or(this);
    let last = this
        .checked_add_months(Months::new(FUTURE_MONTHS))
        .unwrap_or(this);
    (first..=last).contains(&month)
}

impl Partitions {
    /// Makes sure every month of `events` within the horizon has its partition.
    ///
    /// # Errors
    /// When PostgreSQL fails (transient: the batch is retried).
    pub async fn ensure(&self, pg: &Pool, events: &[QueuedEvent<'_>]) -> Result<(), StoreError> {
        let now = Utc::now();
        // One pass: the months that need a partition, and how many events fall outside the
        // horizon (they go to events_default, kept and never dropped with a partition: an
        // operator watches the count for clients with wrong clocks; counted per write
        // attempt, so a retried batch counts again).
        let mut outside = 0u64;
        let missing: BTreeSet<NaiveDate> = {
            let known = self
                .known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut missing = BTreeSet::new();
            for e in events {
                let month = month_of(e.ts);
                if !in_horizon(month, now) {
                    outside += 1;
                } else if !known.contains(&month) {
                    missing.insert(month);
                }
            }
            missing
        };
        if outside > 0 {
            metrics::counter!("batch_worker_events_outside_partitions_total").increment(outside);
        }
        if missing.is_empty() {
            return Ok(());
        }
        let client = pg.get().await.map_err(StoreError::no_connection)?;
        for month in missing {
            client
                .execute("SELECT tally_event_partition($1)", &[&month])
                .await
                .map_err(|e| {
                    StoreError::Transient(
                        anyhow::Error::new(e)
                            .context(format!("creating the events partition of {month}")),
                    )
                })?;
            self.known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(month);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_a_decade_back_and_a_month_ahead() {
        let now: DateTime<Utc> = "2026-12-01T23:00:00Z".parse().expect("time");
        let month = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(month_of(now), month("2026-12-01"));
        assert!(in_horizon(month("2016-12-01"), now));
        assert!(!in_horizon(month("2016-11-01"), now));
        assert!(in_horizon(month("2027-01-01"), now));
        assert!(!in_horizon(month("2027-02-01"), now));
    }
}
