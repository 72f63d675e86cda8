//! The reliable drain of one kind of work, knowing nothing of what it stores: claim items
//! into this lane's processing lists, collect a batch by size or time, write it with retry
//! and bad-row isolation ([`work`]), acknowledge it together with the work's Redis side
//! effects, hand it back on shutdown. [`liveness`] keeps the lane's heartbeat and reaps the
//! lanes of dead workers.
//!
//! A batch lives in this lane's processing lists in Redis from the moment it is claimed
//! until it is stored and acknowledged, so a `kill -9` at any instant loses nothing (another
//! worker reaps the lists once this lane's heartbeat expires). The in-memory batch is
//! checked against the processing lists before it is stored, so an item moved by a `BLMOVE`
//! whose reply was lost (timeout) is not deleted unstored by the acknowledgement.

pub mod liveness;
pub mod work;

use crate::config::WorkerSettings;
use domain::queue::{DeadLetter, WorkerQueue};
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
pub use work::{Outcome, StoreError, Work, write_isolating_bad_rows};

/// Links traced through queue messages this many traces per batch at most.
const MAX_LINKED_TRACES: usize = 32;

/// The span of storing one batch. When spans are exported it continues the trace of the
/// batch's first traced item (so one request shows ingest → queue → worker → PostgreSQL
/// as one trace) and links the traces of up to [`MAX_LINKED_TRACES`] others.
fn batch_span<W: Work>(work: &W, items: &[W::Item<'_>]) -> tracing::Span {
    let span = tracing::info_span!("store_batch", queue = W::NAME, items = items.len());
    if domain::telemetry::exporting() {
        let mut seen: Vec<&str> = Vec::new();
        for tp in items.iter().filter_map(|i| work.traceparent(i)) {
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
pub struct Lane<W: Work> {
    sources: Vec<WorkerQueue>,
    next_source: usize,
    work: Arc<W>,
    redis: RedisConn,
    /// Dedicated connections for `BLMOVE`, which blocks whatever shares its socket.
    blocking: domain::redis::BlockingPool,
    settings: WorkerSettings,
    /// Whether the processing lists may hold items not in memory (start-up, Redis errors).
    must_reload: bool,
}

/// A claimed item and the index of the shard queue it came from.
type Claimed = (usize, Vec<u8>);

impl<W: Work> Lane<W> {
    /// `sources` are this lane's handles on the shard queues it drains (one per shard,
    /// all with the same worker id).
    pub fn new(
        sources: Vec<WorkerQueue>,
        work: Arc<W>,
        redis: RedisConn,
        blocking: domain::redis::BlockingPool,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            sources,
            next_source: 0,
            work,
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
    #[tracing::instrument(name = "batch", skip_all, fields(queue = W::NAME, items = tracing::field::Empty))]
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
        let work = Arc::clone(&self.work);
        let mut parsed: Vec<W::Item<'_>> = Vec::with_capacity(items.len());
        let mut parsed_index: Vec<usize> = Vec::with_capacity(items.len());
        let mut dead: Vec<(usize, String)> = Vec::new();
        for (i, (_, raw)) in items.iter().enumerate() {
            match work.parse(raw) {
                Ok(item) => {
                    parsed.push(item);
                    parsed_index.push(i);
                }
                Err(why) => dead.push((i, format!("unparseable queue message: {why}"))),
            }
        }
        let span = batch_span::<W>(&work, &parsed);
        let stored = self
            .write_with_retry(&work, &parsed, shutdown)
            .instrument(span.clone())
            .await;
        let Some((written, refused)) = stored else {
            self.release().await;
            outcome.interrupted = true;
            return outcome;
        };
        outcome.stored = written.inserted();
        outcome.duplicates =
            ((parsed.len() - refused.len()) as u64).saturating_sub(written.inserted());
        dead.extend(refused.into_iter().map(|(i, why)| (parsed_index[i], why)));
        outcome.dead_lettered = dead.len();
        drop(parsed);
        self.acknowledge(&items, &dead, &written, shutdown)
            .instrument(span)
            .await;

        let queue = W::NAME;
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
                    queue = W::NAME,
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
        let shards = self.sources.len();
        loop {
            // Each pass starts at another shard, so a full batch does not always come from
            // the first ones.
            let first = self.next_source;
            for i in (0..shards).map(|k| (first + k) % shards) {
                if batch.len() >= max {
                    break;
                }
                let source = &self.sources[i];
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
            let blocking = async {
                let mut conn = self.blocking.get().await?;
                self.sources[source]
                    .claim_one_blocking(&mut conn, wait)
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("BLMOVE"))
            };
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
                        return Err(e);
                    }
                }
            }
        }
        // Cheap guard against a BLMOVE that moved an item but whose reply we lost.
        let mut pipe = domain::redis_client::pipe();
        for source in &self.sources {
            source.claimed_len_in(&mut pipe);
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
        work: &W,
        items: &[W::Item<'_>],
        shutdown: &CancellationToken,
    ) -> Option<(W::Outcome, Vec<(usize, String)>)> {
        let timeout = Duration::from_millis(self.settings.store_timeout_ms);
        let mut backoff = self.settings.backoff();
        loop {
            let attempt =
                tokio::time::timeout(timeout, write_isolating_bad_rows(work, items)).await;
            let error = match attempt {
                Ok(Ok(done)) => return Some(done),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("the write took longer than {timeout:?}"),
            };
            let pause = backoff.next_pause();
            metrics::counter!("batch_worker_store_retries_total", "queue" => W::NAME).increment(1);
            tracing::warn!(
                error,
                retry_in_ms = pause.as_millis() as u64,
                items = items.len(),
                queue = W::NAME,
                "storing the batch failed; will retry"
            );
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Applies the work's on-commit side effects, then dead-letters refused items and
    /// deletes the processing lists, in that order (once the lists are gone a crash can no
    /// longer replay the batch, so its side effects must already be in). Retried until
    /// Redis takes it (or shutdown; the batch is then replayed harmlessly by whoever reaps
    /// it).
    async fn acknowledge(
        &mut self,
        items: &[Claimed],
        dead: &[(usize, String)],
        written: &W::Outcome,
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
        let mut backoff = self.settings.backoff();
        let mut effects = domain::redis_client::pipe();
        self.work.on_commit(&mut effects, written);
        let mut effects_done = effects.is_empty();
        loop {
            // The side effects first, on their own: on a cluster they are on other slots
            // than the processing lists, and a pipeline has no order between slots.
            if !effects_done {
                match effects.query_async::<()>(&mut self.redis).await {
                    Ok(()) => effects_done = true,
                    Err(e) => {
                        let pause = backoff.next_pause();
                        tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "applying the batch's side effects failed; will retry");
                        tokio::select! {
                            () = shutdown.cancelled() => { self.must_reload = true; return; }
                            () = tokio::time::sleep(pause) => {}
                        }
                        continue;
                    }
                }
            }
            let mut pipe = domain::redis_client::pipe();
            for (source, item, reason) in &texts {
                let source = &self.sources[*source];
                source.dead_letter_in(
                    &mut pipe,
                    &DeadLetter {
                        reason,
                        item,
                        at_ms: now_ms,
                        worker_id: source.worker_id(),
                    },
                );
            }
            for source in &self.sources {
                source.ack_in(&mut pipe);
            }
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
            tracing::error!(reason = %reason, queue = W::NAME, "item dead-lettered");
        }
        if !texts.is_empty() {
            metrics::counter!("batch_worker_dead_lettered_total", "queue" => W::NAME)
                .increment(texts.len() as u64);
        }
    }

    /// Hands this lane's processing lists back to their queues and unregisters it.
    pub async fn release(&mut self) {
        for source in &self.sources {
            match source.release(&mut self.redis).await {
                Ok(n) if n > 0 => tracing::info!(
                    items = n,
                    queue = W::NAME,
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
        let mut backoff = self.settings.backoff();
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
                        queue = W::NAME,
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
