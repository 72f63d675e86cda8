//! The drain loop: claim a batch, store it, acknowledge it. Generic over what is stored
//! ([`Store`]: events, polls and votes) and over how many shard queues feed it.
//!
//! A batch lives in this lane's processing lists in Redis from the moment it is claimed
//! until it is stored and acknowledged, so a `kill -9` at any instant loses nothing (another
//! worker reaps the lists once this lane's heartbeat expires). The in-memory batch is
//! checked against the processing lists before it is stored, so an item moved by a `BLMOVE`
//! whose reply was lost (timeout) is not deleted unstored by the acknowledgement.

use crate::config::WorkerSettings;
use domain::keys::Keys;
use domain::queue::{DeadLetter, WorkerQueue};
use domain::redis_client::aio::ConnectionManager;
use domain::shutdown::CancellationToken;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

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
    /// Classifies a PostgreSQL error (see [`domain::db::classify`]).
    pub fn from_pg(e: domain::tokio_postgres::Error) -> Self {
        match domain::db::classify(&e) {
            domain::db::FailureKind::Data => Self::Data(e),
            domain::db::FailureKind::Transient => Self::Transient(anyhow::Error::new(e)),
        }
    }
}

/// What a stored batch changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Items newly written (replays are not counted).
    pub inserted: u64,
    /// Sites whose stats changed: their cache generation is bumped, their visitors counted
    /// and their activity published with the acknowledgement.
    pub sites: HashMap<String, SiteBatch>,
    /// Visitors of the batch per site, event type and day, replays included: they go into
    /// the day sketches (`domain::site::day_sketch`).
    pub visitor_days: Vec<VisitorDay>,
}

/// The visitors one batch had on one site, event type and UTC day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VisitorDay {
    pub site_id: String,
    pub event_type: String,
    pub day: chrono::NaiveDate,
    pub users: Vec<String>,
}

/// One site's share of a stored batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SiteBatch {
    pub events: u64,
    pub page_views: u64,
    /// Most viewed paths, most first (at most 10).
    pub paths: Vec<(String, u64)>,
}

impl Written {
    fn merge(&mut self, other: Written) {
        self.inserted += other.inserted;
        self.visitor_days.extend(other.visitor_days);
        for (site, batch) in other.sites {
            let into = self.sites.entry(site).or_default();
            into.events += batch.events;
            into.page_views += batch.page_views;
            for (path, n) in batch.paths {
                match into.paths.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, m)) => *m += n,
                    None => into.paths.push((path, n)),
                }
            }
        }
    }
}

/// Adds the batch's visitors to their day sketches; a sketch created here expires unless
/// stats-api adopts it (see `domain::site::day_sketch`).
fn add_day_visitors(pipe: &mut domain::redis_client::Pipeline, keys: &Keys, written: &Written) {
    for v in &written.visitor_days {
        let key = keys.site_day_visitors(&v.site_id, &v.event_type, &v.day.to_string());
        pipe.cmd("PFADD").arg(&key).arg(&v.users).ignore();
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(domain::site::day_sketch::TTL_SECONDS)
            .arg("NX")
            .ignore();
    }
}

/// Adds to `pipe` what live activity needs for the committed batch: its visitors into
/// their site's HyperLogLog of this minute (from the same per-day groups as the day
/// sketches), and one summary message per site.
fn publish_site_activity(
    pipe: &mut domain::redis_client::Pipeline,
    keys: &Keys,
    written: &Written,
    now_ms: i64,
) {
    use domain::site::{SiteBatchSummary, VISITOR_SKETCH_TTL_SECONDS, visitor_sketch_key};
    for v in &written.visitor_days {
        let sketch = visitor_sketch_key(keys, &v.site_id, now_ms);
        pipe.cmd("PFADD").arg(&sketch).arg(&v.users).ignore();
        pipe.cmd("EXPIRE")
            .arg(&sketch)
            .arg(VISITOR_SKETCH_TTL_SECONDS)
            .ignore();
    }
    for (site, batch) in &written.sites {
        let summary = SiteBatchSummary {
            site_id: site.clone(),
            at_ms: now_ms,
            events: batch.events,
            page_views: batch.page_views,
            paths: batch.paths.clone(),
        };
        if let Ok(text) = serde_json::to_string(&summary) {
            pipe.cmd("PUBLISH")
                .arg(keys.site_channel(site))
                .arg(text)
                .ignore();
        }
    }
}

/// What a lane stores, and how.
pub trait Store: Send + Sync + 'static {
    /// A parsed queue item, borrowing from the raw message.
    type Item<'a>: Send + Sync;
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
    ) -> BoxFuture<'s, Result<Written, StoreError>>;
}

/// Writes what can be written; when PostgreSQL refuses the data of a batch, splits it in
/// halves until the refused items are isolated. Returns the summary and, for each refused
/// item, its index and the reason.
///
/// # Errors
/// [`StoreError::Transient`] as soon as any part fails for a reason other than its data
/// (the caller retries the whole batch; parts already written are replayed harmlessly).
pub async fn write_isolating_bad_rows<S: Store>(
    store: &S,
    items: &[S::Item<'_>],
) -> Result<(Written, Vec<(usize, String)>), StoreError> {
    let mut written = Written::default();
    let mut refused = Vec::new();
    let mut pending = vec![(0usize, items.len())];
    while let Some((start, end)) = pending.pop() {
        if start == end {
            continue;
        }
        match store.write(&items[start..end]).await {
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

/// Links traced through queue messages this many traces per batch at most.
const MAX_LINKED_TRACES: usize = 32;

/// The span of storing one batch. When spans are exported it continues the trace of the
/// batch's first traced item (so one request shows ingest → queue → worker → PostgreSQL
/// as one trace) and links the traces of up to [`MAX_LINKED_TRACES`] others.
fn batch_span<S: Store>(store: &S, items: &[S::Item<'_>]) -> tracing::Span {
    let span = tracing::info_span!("store_batch", queue = S::NAME, items = items.len());
    if domain::telemetry::exporting() {
        let mut seen: Vec<&str> = Vec::new();
        for tp in items.iter().filter_map(|i| store.traceparent(i)) {
            if seen.contains(&tp) {
                continue;
            }
            if seen.is_empty() {
                domain::telemetry::parent_from_traceparent(&span, tp);
            } else {
                domain::telemetry::link_traceparent(&span, tp);
            }
            seen.push(tp);
            if seen.len() > MAX_LINKED_TRACES {
                break;
            }
        }
    }
    span
}

/// What one call of [`Lane::run_one_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Items taken from the queues (or recovered from this lane's processing lists).
    pub claimed: usize,
    /// Items newly written to PostgreSQL.
    pub stored: u64,
    /// Items that were already stored (replays).
    pub duplicates: u64,
    /// Items sent to the dead-letter lists.
    pub dead_lettered: usize,
    /// Shutdown interrupted the batch; it was handed back to the queues.
    pub interrupted: bool,
}

/// Longest single wait on one queue while idle, so shutdown is noticed promptly (and, with
/// several shards, every shard is looked at often).
const IDLE_WAIT_ONE_QUEUE: Duration = Duration::from_secs(1);
const IDLE_WAIT_PER_SHARD: Duration = Duration::from_millis(100);

/// One reliable consumer of one or more shard queues.
pub struct Lane<S: Store> {
    sources: Vec<WorkerQueue>,
    next_source: usize,
    store: Arc<S>,
    keys: Keys,
    redis: ConnectionManager,
    /// A separate connection for `BLMOVE`, which blocks whatever shares its socket.
    blocking: ConnectionManager,
    settings: WorkerSettings,
    /// Whether the processing lists may hold items not in memory (start-up, Redis errors).
    must_reload: bool,
}

/// A claimed item and the index of the shard queue it came from.
type Claimed = (usize, Vec<u8>);

impl<S: Store> Lane<S> {
    /// `sources` are this lane's handles on the shard queues it drains (one per shard,
    /// all with the same worker id).
    pub fn new(
        sources: Vec<WorkerQueue>,
        store: Arc<S>,
        keys: Keys,
        redis: ConnectionManager,
        blocking: ConnectionManager,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            sources,
            next_source: 0,
            store,
            keys,
            redis,
            blocking,
            settings,
            must_reload: true,
        }
    }

    pub fn sources(&self) -> &[WorkerQueue] {
        &self.sources
    }

    /// Claims, stores and acknowledges one batch. Waits for items while the queues are
    /// empty (up to about a second), returning an empty outcome if none came.
    ///
    /// # Errors
    /// When Redis fails while claiming (nothing is lost: claimed items stay in the
    /// processing lists and are reloaded by the next call).
    #[tracing::instrument(name = "batch", skip_all, fields(queue = S::NAME, items = tracing::field::Empty))]
    pub async fn run_one_batch(
        &mut self,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<BatchOutcome> {
        let items = match self.collect(shutdown).await {
            Ok(items) => items,
            Err(e) => {
                self.must_reload = true;
                return Err(e);
            }
        };
        if items.is_empty() {
            return Ok(BatchOutcome::default());
        }
        tracing::Span::current().record("items", items.len());
        if shutdown.is_cancelled() {
            // Mid-collection: hand everything back rather than store a partial picture.
            self.release().await;
            return Ok(BatchOutcome {
                claimed: items.len(),
                interrupted: true,
                ..Default::default()
            });
        }
        Ok(self.process(items, shutdown).await)
    }

    async fn process(&mut self, items: Vec<Claimed>, shutdown: &CancellationToken) -> BatchOutcome {
        let started = Instant::now();
        let mut outcome = BatchOutcome {
            claimed: items.len(),
            ..Default::default()
        };
        let store = Arc::clone(&self.store);
        let mut parsed: Vec<S::Item<'_>> = Vec::with_capacity(items.len());
        let mut parsed_index: Vec<usize> = Vec::with_capacity(items.len());
        let mut dead: Vec<(usize, String)> = Vec::new();
        for (i, (_, raw)) in items.iter().enumerate() {
            match store.parse(raw) {
                Ok(item) => {
                    parsed.push(item);
                    parsed_index.push(i);
                }
                Err(why) => dead.push((i, format!("unparseable queue message: {why}"))),
            }
        }
        let span = batch_span::<S>(&store, &parsed);
        let stored = self
            .write_with_retry(&store, &parsed, shutdown)
            .instrument(span.clone())
            .await;
        let Some((written, refused)) = stored else {
            self.release().await;
            outcome.interrupted = true;
            return outcome;
        };
        outcome.stored = written.inserted;
        outcome.duplicates =
            ((parsed.len() - refused.len()) as u64).saturating_sub(written.inserted);
        dead.extend(refused.into_iter().map(|(i, why)| (parsed_index[i], why)));
        outcome.dead_lettered = dead.len();
        drop(parsed);
        self.acknowledge(&items, &dead, &written, shutdown)
            .instrument(span)
            .await;

        let queue = S::NAME;
        metrics::histogram!("batch_worker_batch_size", "queue" => queue).record(items.len() as f64);
        metrics::histogram!("batch_worker_flush_duration_seconds", "queue" => queue)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("batch_worker_items_stored_total", "queue" => queue)
            .increment(outcome.stored);
        metrics::counter!("batch_worker_items_duplicate_total", "queue" => queue)
            .increment(outcome.duplicates);
        tracing::debug!(
            claimed = outcome.claimed,
            stored = outcome.stored,
            dead = outcome.dead_lettered,
            "batch stored"
        );
        outcome
    }

    /// Collects up to `BATCH_MAX_ITEMS`, waiting at most `BATCH_MAX_WAIT_MS` after the
    /// first item. Returns what this lane's processing lists hold.
    async fn collect(&mut self, shutdown: &CancellationToken) -> anyhow::Result<Vec<Claimed>> {
        if self.must_reload {
            let leftover = self.reload().await?;
            self.must_reload = false;
            if !leftover.is_empty() {
                tracing::info!(
                    items = leftover.len(),
                    queue = S::NAME,
                    "resuming an unacknowledged batch"
                );
                return Ok(leftover);
            }
        }
        let max = self.settings.batch_max_items;
        let max_wait = Duration::from_millis(self.settings.batch_max_wait_ms);
        let idle_wait = if self.sources.len() == 1 {
            IDLE_WAIT_ONE_QUEUE
        } else {
            IDLE_WAIT_PER_SHARD
        };
        let mut batch: Vec<Claimed> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            for (i, source) in self.sources.iter().enumerate() {
                if batch.len() >= max {
                    break;
                }
                let claimed = source.claim(&mut self.redis, max - batch.len()).await?;
                batch.extend(claimed.into_iter().map(|item| (i, item)));
            }
            if batch.len() >= max || shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let wait = if batch.is_empty() {
                idle_wait
            } else {
                let deadline = *deadline.get_or_insert(now + max_wait);
                if now >= deadline {
                    break;
                }
                (deadline - now).min(idle_wait)
            };
            let source = self.next_source % self.sources.len();
            self.next_source = self.next_source.wrapping_add(1);
            let blocking = self.sources[source].claim_one_blocking(&mut self.blocking, wait);
            tokio::select! {
                () = shutdown.cancelled() => {
                    // The BLMOVE may still complete in Redis; release() requeues the lists.
                    self.must_reload = true;
                    break;
                }
                item = blocking => match item {
                    Ok(Some(item)) => batch.push((source, item)),
                    Ok(None) if batch.is_empty() => return Ok(batch),
                    Ok(None) => {}
                    Err(e) => {
                        self.must_reload = true;
                        return Err(anyhow::Error::new(e).context("BLMOVE"));
                    }
                }
            }
        }
        // Cheap guard against a BLMOVE that moved an item but whose reply we lost.
        let mut pipe = domain::redis_client::pipe();
        for source in &self.sources {
            pipe.cmd("LLEN")
                .arg(source.keys().processing(source.worker_id()));
        }
        let lens: Vec<usize> = pipe.query_async(&mut self.redis).await?;
        if lens.iter().sum::<usize>() != batch.len() {
            tracing::warn!(
                in_memory = batch.len(),
                in_redis = lens.iter().sum::<usize>(),
                "batch differs from the processing lists; reloading them"
            );
            batch = self.reload().await?;
        }
        Ok(batch)
    }

    async fn reload(&mut self) -> anyhow::Result<Vec<Claimed>> {
        let mut items = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let leftover = source.unacknowledged(&mut self.redis).await?;
            items.extend(leftover.into_iter().map(|item| (i, item)));
        }
        Ok(items)
    }

    /// Writes the items, retrying transient failures with exponential backoff. `None` when
    /// shutdown came first.
    async fn write_with_retry(
        &self,
        store: &S,
        items: &[S::Item<'_>],
        shutdown: &CancellationToken,
    ) -> Option<(Written, Vec<(usize, String)>)> {
        let timeout = Duration::from_millis(self.settings.store_timeout_ms);
        let mut backoff = Backoff::new(&self.settings);
        loop {
            let attempt =
                tokio::time::timeout(timeout, write_isolating_bad_rows(store, items)).await;
            let error = match attempt {
                Ok(Ok(done)) => return Some(done),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the write took longer than {timeout:?}"),
            };
            let pause = backoff.next_pause();
            metrics::counter!("batch_worker_store_retries_total", "queue" => S::NAME).increment(1);
            tracing::warn!(
                error,
                retry_in_ms = pause.as_millis() as u64,
                items = items.len(),
                queue = S::NAME,
                "storing the batch failed; will retry"
            );
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Dead-letters refused items, deletes the processing lists, and bumps the stats cache
    /// generation of every site the batch touched: one pipeline. Retried until Redis takes
    /// it (or shutdown; the batch is then replayed harmlessly by whoever reaps it).
    async fn acknowledge(
        &mut self,
        items: &[Claimed],
        dead: &[(usize, String)],
        written: &Written,
        shutdown: &CancellationToken,
    ) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let texts: Vec<(usize, String, &str)> = dead
            .iter()
            .map(|(i, why)| {
                (
                    items[*i].0,
                    String::from_utf8_lossy(&items[*i].1).into_owned(),
                    why.as_str(),
                )
            })
            .collect();
        let mut backoff = Backoff::new(&self.settings);
        loop {
            let mut pipe = domain::redis_client::pipe();
            for (source, item, reason) in &texts {
                let letter = DeadLetter {
                    reason,
                    item,
                    at_ms: now_ms,
                    worker_id: self.sources[*source].worker_id(),
                };
                pipe.cmd("LPUSH")
                    .arg(&self.sources[*source].keys().dead)
                    .arg(serde_json::to_string(&letter).unwrap_or_default())
                    .ignore();
            }
            // Before the batch leaves its processing list: once it has, a crash can no
            // longer replay it, and its visitors must already be in their sketches.
            add_day_visitors(&mut pipe, &self.keys, written);
            for source in &self.sources {
                pipe.cmd("DEL")
                    .arg(source.keys().processing(source.worker_id()))
                    .ignore();
            }
            domain::cache::bump_sites(
                &mut pipe,
                &self.keys,
                written.sites.keys().map(String::as_str),
            );
            publish_site_activity(&mut pipe, &self.keys, written, now_ms);
            match pipe.query_async::<()>(&mut self.redis).await {
                Ok(()) => break,
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "acknowledging the batch failed; will retry");
                    tokio::select! {
                        () = shutdown.cancelled() => { self.must_reload = true; return; }
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        for (_, _, reason) in &texts {
            tracing::error!(reason = %reason, queue = S::NAME, "item dead-lettered");
        }
        if !texts.is_empty() {
            metrics::counter!("batch_worker_dead_lettered_total", "queue" => S::NAME)
                .increment(texts.len() as u64);
        }
    }

    /// Hands this lane's processing lists back to their queues and unregisters it.
    pub async fn release(&mut self) {
        for source in &self.sources {
            match source.release(&mut self.redis).await {
                Ok(n) if n > 0 => tracing::info!(
                    items = n,
                    queue = S::NAME,
                    "handed the unfinished batch back to the queue"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand the batch back; it will be reaped after the heartbeat expires")
                }
            }
        }
        self.must_reload = true;
    }

    /// Runs batches until shutdown, then hands back anything unfinished.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(&self.settings);
        while !shutdown.is_cancelled() {
            match self.run_one_batch(&shutdown).await {
                Ok(outcome) => {
                    backoff.reset();
                    if outcome.interrupted {
                        break;
                    }
                }
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = pause.as_millis() as u64,
                        queue = S::NAME,
                        "claiming a batch failed"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        self.release().await;
    }
}

/// Exponential backoff with jitter between the configured bounds.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(s: &WorkerSettings) -> Self {
        let initial = Duration::from_millis(s.retry_initial_ms.max(1));
        Self {
            initial,
            max: Duration::from_millis(s.retry_max_ms.max(s.retry_initial_ms.max(1))),
            current: initial,
        }
    }

    pub fn next_pause(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // Up to +25% jitter so many workers do not retry in lockstep.
        let jitter = base.mul_f64(f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 1020.0);
        (base + jitter).min(self.max)
    }

    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}
