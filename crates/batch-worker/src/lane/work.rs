//! What a lane drains: one kind of work ([`Work`]), how its writes fail ([`StoreError`]),
//! and the bisection that isolates the rows PostgreSQL refuses.

use futures_util::future::BoxFuture;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rows can never be stored as they are.
    #[error("PostgreSQL refused the data: {0}")]
    Data(#[source] domain::tokio_postgres::Error),
    /// Worth retrying: connection, timeout, server restarting, schema missing, ...
    #[error("PostgreSQL write failed: {0:#}")]
    Transient(#[source] anyhow::Error),
}

impl StoreError {
    /// Classifies a PostgreSQL error (see [`domain::postgres::classify`]).
    pub fn from_pg(e: domain::tokio_postgres::Error) -> Self {
        match domain::postgres::classify(&e) {
            domain::postgres::FailureKind::Data => Self::Data(e),
            domain::postgres::FailureKind::Transient => Self::Transient(anyhow::Error::new(e)),
        }
    }

    /// No connection could be had from the pool.
    pub fn no_connection(e: domain::deadpool_postgres::PoolError) -> Self {
        Self::Transient(anyhow::Error::new(e).context("no PostgreSQL connection"))
    }
}

/// What a stored batch changed, as far as the lane needs to know; each kind of work adds
/// what its own on-commit step needs.
pub trait Outcome: Default + Send + Sync {
    /// Items newly written (replays are not counted).
    fn inserted(&self) -> u64;
    /// Folds the outcome of another part of the same batch into this one (after the batch
    /// was split to isolate refused rows).
    fn merge(&mut self, other: Self);
}

/// One kind of work a lane drains: how its queue messages parse, how a batch of them is
/// written to PostgreSQL (idempotently, in one transaction), and which Redis side effects
/// go with the batch's acknowledgement.
pub trait Work: Send + Sync + 'static {
    /// A parsed queue item, possibly borrowing from the raw message.
    type Item<'a>: Send + Sync;
    /// What a write reports.
    type Outcome: Outcome;
    /// The queue family, for metrics and logs.
    const NAME: &'static str;

    /// Parses one queue message.
    ///
    /// # Errors
    /// Why the message can never be stored (it is dead-lettered).
    fn parse<'a>(&self, raw: &'a [u8]) -> Result<Self::Item<'a>, String>;

    /// The W3C trace context an item carries, if any (the request that queued it).
    fn traceparent<'a>(&self, _item: &'a Self::Item<'_>) -> Option<&'a str> {
        None
    }

    /// Writes items idempotently (a replay changes nothing), in one transaction.
    fn write<'s, 'i: 's>(
        &'s self,
        items: &'s [Self::Item<'i>],
    ) -> BoxFuture<'s, Result<Self::Outcome, StoreError>>;

    /// Adds to `pipe` the Redis side effects of a committed batch. `pipe` is the batch's
    /// acknowledgement: it runs before the processing lists are deleted, and again if the
    /// batch is replayed after a crash, so the effects must be idempotent or harmless to
    /// repeat.
    fn on_commit(&self, _pipe: &mut domain::redis_client::Pipeline, _outcome: &Self::Outcome) {}
}

/// Writes what can be written; when PostgreSQL refuses the data of a batch, splits it in
/// halves until the refused items are isolated. Returns the outcome and, for each refused
/// item, its index and the reason.
///
/// # Errors
/// [`StoreError::Transient`] as soon as any part fails for a reason other than its data
/// (the caller retries the whole batch; parts already written are replayed harmlessly).
pub async fn write_isolating_bad_rows<W: Work>(
    work: &W,
    items: &[W::Item<'_>],
) -> Result<(W::Outcome, Vec<(usize, String)>), StoreError> {
    let mut written = W::Outcome::default();
    let mut refused = Vec::new();
    let mut pending = vec![(0usize, items.len())];
    while let Some((start, end)) = pending.pop() {
        if start == end {
            continue;
        }
        match work.write(&items[start..end]).await {
            Ok(w) => written.merge(w),
            Err(StoreError::Data(e)) if end - start == 1 => {
                let reason = e
                    .as_db_error()
                    .map(|d| format!("{} ({})", d.message(), d.code().code()))
                    .unwrap_or_else(|| e.to_string());
                refused.push((start, format!("PostgreSQL refused the item: {reason}")));
            }
            Err(StoreError::Data(_)) => {
                let mid = start + (end - start) / 2;
                pending.push((mid, end));
                pending.push((start, mid));
            }
            Err(e @ StoreError::Transient(_)) => return Err(e),
        }
    }
    Ok((written, refused))
}
