//! Export jobs: claimed from the job queue (see `domain::jobs`), run page by page into
//! PostgreSQL ([`store`]), with a heartbeat renewing the job's lease and reporting its
//! progress. Any worker's loop also takes back the jobs whose lease ran out (their worker
//! died), and deletes exports whose results expired.
//!
//! A job survives its worker: every page is committed with the job's progress, so the
//! worker that takes over resumes at the first page not committed, and the `attempt`
//! fence keeps a worker that stalled past its lease from writing anything more.

pub mod parts;
pub mod plan;
pub mod store;

use crate::config::ExportSettings;
use domain::deadpool_postgres::Pool;
use domain::jobs::{self, Claimed, Ended, JobState};
use domain::keys::JobKeys;
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use store::PageOutcome;
use tokio::sync::Semaphore;

/// Attempts at writing one page before the job fails.
const PAGE_ATTEMPTS: u32 = 5;

/// Runs export jobs for this process.
pub struct Exporter {
    pub pg: Pool,
    pub redis: RedisConn,
    pub keys: JobKeys,
    pub worker_id: String,
    pub settings: ExportSettings,
    pub backoff: domain::backoff::Backoff,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Exporter {
    fn lease(&self) -> Duration {
        Duration::from_millis(self.settings.export_lease_ms)
    }

    /// Claims and runs jobs until shutdown; jobs still running then are handed back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.export_concurrency));
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.settings.export_poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cleanup_every = Duration::from_millis(self.settings.export_cleanup_interval_ms);
        let mut last_cleanup: Option<Instant> = None;
        let stop_jobs = CancellationToken::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            while running.try_join_next().is_some() {}
            self.reap().await;
            if last_cleanup.is_none_or(|t| t.elapsed() >= cleanup_every) {
                last_cleanup = Some(Instant::now());
                match store::delete_expired(&self.pg).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(exports = n, "expired exports deleted"),
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "deleting expired exports failed")
                    }
                }
            }
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                let claimed = jobs::claim(
                    &mut self.redis.clone(),
                    &self.keys,
                    &self.worker_id,
                    self.lease(),
                    now_ms(),
                )
                .await;
                match claimed {
                    Ok(Some(job)) => {
                        let this = self.clone();
                        let stop = stop_jobs.clone();
                        running.spawn(async move {
                            this.run_job(job, stop).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming an export job failed");
                        break;
                    }
                }
            }
            metrics::gauge!("batch_worker_export_jobs_running")
                .set((self.settings.export_concurrency - slots.available_permits()) as f64);
        }
        stop_jobs.cancel();
        while running.join_next().await.is_some() {}
    }

    /// Takes back jobs whose lease ran out, and measures the queue.
    async fn reap(&self) {
        let mut redis = self.redis.clone();
        match jobs::reap(&mut redis, &self.keys, now_ms()).await {
            Ok(r) => {
                if r.requeued + r.failed > 0 {
                    tracing::warn!(
                        requeued = r.requeued,
                        failed = r.failed,
                        "export jobs of stopped workers taken back"
                    );
                }
                metrics::counter!("batch_worker_export_jobs_reaped_total", "outcome" => "requeued")
                    .increment(r.requeued as u64);
                metrics::counter!("batch_worker_export_jobs_reaped_total", "outcome" => "failed")
                    .increment(r.failed as u64);
            }
            Err(e) => tracing::warn!(error = %e, "reaping export jobs failed"),
        }
        if let Ok(depth) =
            domain::redis_client::AsyncCommands::llen::<_, u64>(&mut redis, &self.keys.queue).await
        {
            metrics::gauge!("batch_worker_export_queue_depth").set(depth as f64);
        }
    }

    #[tracing::instrument(name = "export", skip_all, fields(job_id = %job.job_id, site_id = %job.spec.site_id, attempt = job.attempt))]
    async fn run_job(self: Arc<Self>, job: Claimed, stop: CancellationToken) {
        let progress = Arc::new(Counters::default());
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat(
            job.clone(),
            progress.clone(),
            lost.clone(),
        ));
        let outcome = self.export(&job, &progress, &lost, &stop).await;
        heartbeat.abort();
        let label = match &outcome {
            Ok(Finish::Done) => "done",
            Ok(Finish::Lost) => "lost",
            Ok(Finish::Stopped) => "handed_back",
            Err(_) => "failed",
        };
        metrics::counter!("batch_worker_export_jobs_total", "outcome" => label).increment(1);
        let mut redis = self.redis.clone();
        let (completed, total) = progress.get();
        let result = match outcome {
            Ok(Finish::Done) => {
                tracing::info!(rows = completed, "export done");
                let ended = Ended {
                    state: JobState::Done,
                    completed: Some(completed),
                    total: Some(completed),
                    error: None,
                };
                jobs::end(
                    &mut redis,
                    &self.keys,
                    &job.job_id,
                    job.attempt,
                    &ended,
                    now_ms(),
                )
                .await
            }
            Ok(Finish::Lost) => {
                tracing::warn!("export job taken over by another worker; stopped");
                Ok(false)
            }
            Ok(Finish::Stopped) => {
                // Shutting down: let another worker resume it now rather than after the lease.
                let one_ms = Duration::from_millis(1);
                match jobs::renew(
                    &mut redis,
                    &self.keys,
                    &job,
                    one_ms,
                    completed,
                    total,
                    now_ms() - 1,
                )
                .await
                {
                    Ok(_) => jobs::reap(&mut redis, &self.keys, now_ms())
                        .await
                        .map(|_| true),
                    Err(e) => Err(e),
                }
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(error, "export failed");
                if let Err(e) = store::finish(&self.pg, &job, Some(&error)).await {
                    tracing::warn!(error = format!("{e:#}"), "recording the failure failed");
                }
                let ended = Ended {
                    state: JobState::Failed,
                    completed: Some(completed),
                    total: Some(total),
                    error: Some(&error),
                };
                jobs::end(
                    &mut redis,
                    &self.keys,
                    &job.job_id,
                    job.attempt,
                    &ended,
                    now_ms(),
                )
                .await
            }
        };
        if let Err(e) = result {
            // Its lease runs out; the next worker finds what PostgreSQL recorded.
            tracing::warn!(error = %e, "recording the end of the job in Redis failed");
        }
    }

    async fn heartbeat(
        self: Arc<Self>,
        job: Claimed,
        progress: Arc<Counters>,
        lost: CancellationToken,
    ) {
        let every = self.lease() / 3;
        loop {
            tokio::time::sleep(every).await;
            let (completed, total) = progress.get();
            match jobs::renew(
                &mut self.redis.clone(),
                &self.keys,
                &job,
                self.lease(),
                completed,
                total,
                now_ms(),
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => {
                    lost.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the export's lease failed"),
            }
        }
    }

    /// Reports progress now (a page was committed), besides the heartbeat.
    async fn report(&self, job: &Claimed, progress: &Counters, lost: &CancellationToken) {
        let (completed, total) = progress.get();
        let renewed = jobs::renew(
            &mut self.redis.clone(),
            &self.keys,
            job,
            self.lease(),
            completed,
            total,
            now_ms(),
        )
        .await;
        if matches!(renewed, Ok(false)) {
            lost.cancel();
        }
    }

    async fn export(
        &self,
        job: &Claimed,
        progress: &Counters,
        lost: &CancellationToken,
        stop: &CancellationToken,
    ) -> anyhow::Result<Finish> {
        let (mut backoff, mut tries) = (self.backoff.clone(), 1);
        let begun = loop {
            match store::begin(&self.pg, job, self.settings.export_page_rows).await {
                Ok(b) => break b,
                Err(e) if tries < PAGE_ATTEMPTS => {
                    tries += 1;
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "planning the export failed; retrying"
                    );
                    tokio::time::sleep(backoff.next_pause()).await;
                }
                Err(e) => return Err(e),
            }
        };
        let Some(begun) = begun else {
            return Ok(Finish::Lost);
        };
        progress.set(begun.completed, begun.total.max(begun.completed));
        match begun.state.as_str() {
            "done" => return Ok(Finish::Done),
            "failed" => {
                anyhow::bail!(begun.error.unwrap_or_else(|| "failed".into()))
            }
            _ => {}
        }
        self.report(job, progress, lost).await;
        for (index, page) in begun.plan.iter().enumerate().skip(begun.pages_done) {
            if lost.is_cancelled() {
                return Ok(Finish::Lost);
            }
            if stop.is_cancelled() {
                return Ok(Finish::Stopped);
            }
            let (mut backoff, mut tries) = (self.backoff.clone(), 1);
            let written = loop {
                let part_bytes = self.settings.export_part_bytes;
                match store::write_page(&self.pg, job, index, *page, part_bytes).await {
                    Ok(w) => break w,
                    Err(e) if tries < PAGE_ATTEMPTS && !stop.is_cancelled() => {
                        tries += 1;
                        tracing::warn!(
                            error = format!("{e:#}"),
                            page = index,
                            "writing a page failed; retrying"
                        );
                        tokio::time::sleep(backoff.next_pause()).await;
                    }
                    Err(e) => return Err(e.context(format!("page {index} of the export"))),
                }
            };
            match written {
                PageOutcome::Written { rows, bytes } => {
                    metrics::counter!("batch_worker_export_rows_total").increment(rows);
                    metrics::counter!("batch_worker_export_bytes_total").increment(bytes);
                    progress.add(rows, page.rows);
                    self.report(job, progress, lost).await;
                }
                PageOutcome::Lost => return Ok(Finish::Lost),
            }
        }
        if store::finish(&self.pg, job, None).await? {
            Ok(Finish::Done)
        } else {
            Ok(Finish::Lost)
        }
    }
}

/// How a job's run ended, short of an error.
enum Finish {
    Done,
    /// Another attempt holds the job now.
    Lost,
    /// Shutdown: handed back at a page boundary.
    Stopped,
}

/// A running job's rows completed and expected.
#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    total: AtomicU64,
}

impl Counters {
    fn set(&self, completed: u64, total: u64) {
        self.completed.store(completed, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    /// A page committed `rows` rows where its plan counted `planned`: the total follows
    /// what was really written (rows may have arrived since the plan).
    fn add(&self, rows: u64, planned: i64) {
        let completed = self.completed.fetch_add(rows, Ordering::Relaxed) + rows;
        let planned = u64::try_from(planned).unwrap_or(0);
        let total = self.total.load(Ordering::Relaxed);
        let total = (total + rows).saturating_sub(planned).max(completed);
        self.total.store(total, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.completed.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
