//! Monthly partitions of raw events (migration 6): each batch's months get their partition
//! before the batch is written, in a statement of its own (creating a partition locks the
//! parent table for a moment; inside the batch's transaction it would hold that lock for
//! the whole write).
//!
//! That moment is an exclusive lock on `events`, which waits for every transaction reading
//! it (a goal recount of a large site, an export, a long stats query) while every insert and
//! read of events queues behind it: the whole drain stopped for the length of a site's goal
//! recount when its batch held an event of a month without a partition. So a partition is
//! made with a short `lock_timeout` ([`LOCK_WAIT`]): when it cannot have the lock by then,
//! the month's events go to `events_default` (where they stay, and retention deletes them
//! by rows: a partition cannot be made for a month the default partition holds), and
//! nobody waits. Next month's partition is made ahead, when the lock is free, so the month's
//! first events need no lock at all.
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
use std::time::{Duration, Instant};

/// Longest wait for the lock that making a partition takes on `events`.
const LOCK_WAIT: &str = "200ms";
/// How often making next month's partition ahead is tried while the lock is busy.
const AHEAD_RETRY: Duration = Duration::from_secs(60);

/// Months back from now that get a partition of their own.
pub const PAST_MONTHS: u32 = 120;
/// Months ahead of now that get a partition of their own.
pub const FUTURE_MONTHS: u32 = 1;

/// The months this worker knows to have their partition (so most batches cost nothing).
#[derive(Default)]
pub struct Partitions {
    known: Mutex<HashSet<NaiveDate>>,
    /// When making next month's partition ahead was last tried.
    ahead_tried: Mutex<Option<Instant>>,
}

/// What making a month's partition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// The partition exists (or the month stays in `events_default`, which holds some of it).
    Done,
    /// The lock on `events` was not free within [`LOCK_WAIT`].
    Busy,
}

/// Makes the partition of `month` unless the lock on `events` is busy past [`LOCK_WAIT`].
///
/// # Errors
/// When PostgreSQL fails otherwise.
pub async fn make(pg: &Pool, month: NaiveDate) -> Result<Made, StoreError> {
    let mut client = pg.get().await.map_err(StoreError::no_connection)?;
    let failed = |e: domain::tokio_postgres::Error| {
        StoreError::Transient(
            anyhow::Error::new(e).context(format!("creating the events partition of {month}")),
        )
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await
        .map_err(failed)?;
    match tx
        .execute("SELECT tally_event_partition($1)", &[&month])
        .await
    {
        Ok(_) => {
            tx.commit().await.map_err(failed)?;
            Ok(Made::Done)
        }
        Err(e)
            if e.code() == Some(&domain::tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
        {
            Ok(Made::Busy)
        }
        Err(e) => Err(failed(e)),
    }
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
        for month in missing {
            if make(pg, month).await? == Made::Busy {
                // Its events go to events_default from now on (see the module's comment).
                metrics::counter!("batch_worker_events_partition_busy_total").increment(1);
                tracing::warn!(
                    month = %month,
                    "the events table was busy past {LOCK_WAIT} (a long query reads it): events of this month go to events_default"
                );
            }
            self.known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(month);
        }
        self.make_next_month_ahead(pg, now).await;
        Ok(())
    }

    /// Makes next month's partition before its first event needs it, unless the lock is
    /// busy (then tried again after [`AHEAD_RETRY`]).
    async fn make_next_month_ahead(&self, pg: &Pool, now: DateTime<Utc>) {
        let Some(next) = month_of(now).checked_add_months(Months::new(1)) else {
            return;
        };
        if self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&next)
        {
            return;
        }
        {
            let mut tried = self
                .ahead_tried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if tried.is_some_and(|t| t.elapsed() < AHEAD_RETRY) {
                return;
            }
            *tried = Some(Instant::now());
        }
        match make(pg, next).await {
            Ok(Made::Done) => {
                self.known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(next);
            }
            Ok(Made::Busy) => {}
            Err(e) => {
                tracing::warn!(error = %e, "making next month's events partition ahead failed; will retry")
            }
        }
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
