//! Builds the batch-worker from its configuration: the drain lanes, their background
//! duties, and the small HTTP server for health and metrics.

use crate::config::{Config, WorkerSettings};
use crate::delivery::email::EmailSender;
use crate::delivery::log::AttemptLogWork;
use crate::delivery::records::Records;
use crate::delivery::sms::SmsSender;
use crate::delivery::webhook::WebhookSender;
use crate::delivery::{DeliveryLane, LaneSettings};
use crate::events::EventWork;
use crate::lane::{Lane, liveness};
use crate::notify::NotifyWork;
use crate::notify::admin::AdminWork;
use crate::notify::directory::EndpointDirectory;
use crate::sites::SiteWork;
use crate::votes::VoteWork;
use actix_web::dev::Server;
use domain::deadpool_postgres::Pool;
use domain::http::Ops;
use domain::keys::{Keys, VOTE_SHARDS};
use domain::queue::WorkerQueue;
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A bound, not yet running, batch-worker.
pub struct Application {
    port: u16,
    server: Server,
    event_lanes: Vec<Lane<EventWork>>,
    vote_lanes: Vec<Lane<VoteWork>>,
    site_lane: Lane<SiteWork>,
    notify_lane: Lane<NotifyWork>,
    admin_lane: Lane<AdminWork>,
    log_lane: Lane<AttemptLogWork>,
    webhook_lane: DeliveryLane<WebhookSender>,
    email_lane: DeliveryLane<EmailSender>,
    sms_lane: DeliveryLane<SmsSender>,
    triggers: Arc<crate::triggers::Triggers>,
    /// The events lanes' work, which also stores the events that waited for their site.
    events: Arc<EventWork>,
    /// Set once the first check of what Redis lost has finished (readiness waits for it).
    restore_checked: Arc<AtomicBool>,
    keys: Keys,
    worker_id: String,
    redis: RedisConn,
    pg: Pool,
    config: Config,
    shutdown: CancellationToken,
}

impl Application {
    /// Prepares the lanes and binds the HTTP port.
    ///
    /// # Errors
    /// When a URL is unusable or the port cannot be bound.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let keys = domain::redis::keys(&config.redis);
        let redis = domain::redis::connection(&config.redis)?;
        // Each lane blocks (BLMOVE, up to about a second) on a connection of its own;
        // claims and acknowledgements share the multiplexed one.
        let blocking = domain::redis::blocking_pool(
            &config.redis,
            config.worker.worker_concurrency + config.worker.vote_worker_concurrency + 4,
            Duration::from_millis(1_000 + config.worker.batch_max_wait_ms),
        )?;
        let pg = domain::postgres::pool(&config.postgres)?;
        let worker_id = config.worker.resolve_worker_id();
        tracing::info!(
            worker_id,
            event_lanes = config.worker.worker_concurrency,
            vote_lanes = config.worker.vote_worker_concurrency,
            "worker identity"
        );
        let directory = Arc::new(EndpointDirectory::new(keys.clone()));
        let triggers = Arc::new(crate::triggers::Triggers {
            redis: redis.clone(),
            keys: keys.clone(),
            pg: pg.clone(),
            channels: config.notify.trigger_channels(),
            vote_thresholds: config.notify.vote_thresholds(),
            usual: Default::default(),
            goals: Default::default(),
            directory: directory.clone(),
        });
        let events = Arc::new(EventWork {
            pg: pg.clone(),
            keys: keys.clone(),
            partitions: Default::default(),
            triggers: Some(triggers.clone()),
            write_parts: crate::events::store::WriteParts::new(config.worker.event_write_parts),
        });
        let votes = Arc::new(VoteWork {
            pg: pg.clone(),
            triggers: Some(triggers.clone()),
        });
        let lane_sources = |id: String, queues: Vec<domain::keys::QueueKeys>| -> Vec<WorkerQueue> {
            queues
                .into_iter()
                .map(|q| WorkerQueue::new(q, id.clone()))
                .collect()
        };
        let mut event_lanes = Vec::new();
        for lane in 0..config.worker.worker_concurrency {
            let sources = lane_sources(
                format!("{worker_id}.e{lane}"),
                keys.events_queues(config.redis.event_queue_shards),
            );
            event_lanes.push(Lane::new(
                sources,
                events.clone(),
                redis.clone(),
                blocking.clone(),
                config.worker.clone(),
            ));
        }
        let mut vote_lanes = Vec::new();
        for lane in 0..config.worker.vote_worker_concurrency {
            let shards = (0..VOTE_SHARDS).map(|s| keys.vote_queue(s)).collect();
            let sources = lane_sources(format!("{worker_id}.v{lane}"), shards);
            vote_lanes.push(Lane::new(
                sources,
                votes.clone(),
                redis.clone(),
                blocking.clone(),
                config.worker.clone(),
            ));
        }
        // Registry changes are rare: one lane.
        let site_lane = Lane::new(
            lane_sources(format!("{worker_id}.s0"), vec![keys.sites_queue()]),
            Arc::new(SiteWork {
                pg: pg.clone(),
                keys: keys.clone(),
                rebuild_timeout: Duration::from_millis(config.worker.site_rebuild_timeout_ms),
            }),
            redis.clone(),
            blocking.clone(),
            WorkerSettings {
                // A batch holding a change of a large site's goals recounts for minutes.
                store_timeout_ms: config
                    .worker
                    .store_timeout_ms
                    .max(config.worker.site_rebuild_timeout_ms.saturating_add(60_000)),
                ..config.worker.clone()
            },
        );

        let notify_settings = crate::config::WorkerSettings {
            batch_max_items: config.notify.notify_batch_max_items,
            batch_max_wait_ms: config.notify.notify_batch_max_wait_ms,
            ..config.worker.clone()
        };
        let notify_lane = Lane::new(
            lane_sources(format!("{worker_id}.n0"), keys.notify_queues()),
            Arc::new(NotifyWork {
                pg: pg.clone(),
                redis: redis.clone(),
                keys: keys.clone(),
                directory: directory.clone(),
            }),
            redis.clone(),
            blocking.clone(),
            notify_settings,
        );
        let mut admin_queues = vec![keys.webhooks_queue(), keys.topics_queue()];
        admin_queues.extend(keys.feed_queues());
        let admin_lane = Lane::new(
            lane_sources(format!("{worker_id}.a0"), admin_queues),
            Arc::new(AdminWork { pg: pg.clone() }),
            redis.clone(),
            blocking.clone(),
            config.worker.clone(),
        );
        let log_queues = domain::notify::ChannelKind::DELIVERED
            .iter()
            .map(|c| keys.delivery(c.as_str()).log)
            .collect();
        let log_lane = Lane::new(
            lane_sources(format!("{worker_id}.l0"), log_queues),
            Arc::new(AttemptLogWork { pg: pg.clone() }),
            redis.clone(),
            blocking.clone(),
            config.worker.clone(),
        );
        let n = &config.notify;
        let records = Arc::new(Records::new(keys.clone(), redis.clone(), pg.clone()));
        let lane_settings = |concurrency: usize, timeout_ms: u64| LaneSettings {
            concurrency,
            max_in_flight_per_key: n.webhook_max_in_flight_per_endpoint,
            park: Duration::from_millis(n.delivery_park_ms),
            schedule: n.retry_schedule(),
            heartbeat_ttl: Duration::from_millis(config.worker.heartbeat_ttl_ms),
            reap_interval: Duration::from_millis(config.worker.reap_interval_ms),
            drain_timeout: Duration::from_millis(timeout_ms + 1_000),
        };
        let webhook_lane = DeliveryLane::new(
            &keys,
            &worker_id,
            Arc::new(WebhookSender::new(
                directory.clone(),
                redis.clone(),
                keys.clone(),
                Duration::from_millis(n.webhook_timeout_ms),
                n.webhook_allow_internal,
            )?),
            records.clone(),
            redis.clone(),
            lane_settings(n.webhook_concurrency, n.webhook_timeout_ms),
        );
        let email_lane = DeliveryLane::new(
            &keys,
            &worker_id,
            Arc::new(EmailSender::new(
                n.smtp_url.expose(),
                &n.email_from,
                Duration::from_millis(n.smtp_timeout_ms),
            )?),
            records.clone(),
            redis.clone(),
            lane_settings(n.email_concurrency, n.smtp_timeout_ms),
        );
        let sms_lane = DeliveryLane::new(
            &keys,
            &worker_id,
            Arc::new(SmsSender::new(
                &n.sms_api_url,
                &n.sms_account_sid,
                n.sms_auth_token.expose(),
                &n.sms_from,
                Duration::from_millis(n.sms_timeout_ms),
            )?),
            records,
            redis.clone(),
            lane_settings(n.sms_concurrency, n.sms_timeout_ms),
        );

        let timeout = Duration::from_millis(config.redis.redis_timeout_ms);
        let (check_redis, check_pg) = (redis.clone(), pg.clone());
        // Set by the restore task once it has checked (after the migrations).
        let restore_checked = Arc::new(AtomicBool::new(false));
        let checked = restore_checked.clone();
        let ops = Ops::new(domain::metrics::install(), shutdown.clone(), move || {
            let (mut redis, pg, checked) = (check_redis.clone(), check_pg.clone(), checked.clone());
            Box::pin(async move {
                domain::redis::ping(&mut redis, timeout)
                    .await
                    .map_err(|e| format!("redis: {e:#}"))?;
                domain::postgres::ping(&pg, timeout)
                    .await
                    .map_err(|e| format!("postgres: {e:#}"))?;
                if checked.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err(
                        "starting: the migrations, or putting back into Redis the site \
                         registry, webhook endpoints or polls it lacks, have not finished"
                            .into(),
                    )
                }
            })
        })
        .refreshing({
            let pg = pg.clone();
            move || domain::postgres::record_pool_metrics(&pg, "batch_worker")
        });
        let (listener, port) = domain::http::bind(&config.http)?;
        let body_read_timeout = config.http.body_read_timeout();
        let server = domain::http::serve(
            move || {
                let app = domain::http::app("batch_worker", None, body_read_timeout);
                let app = domain::http::with_ops(app, ops.clone());
                domain::http::with_openapi(
                    app,
                    "batch-worker",
                    "Health and metrics of the worker that drains Tally's queues into PostgreSQL.",
                    &[],
                )
            },
            listener,
            &config.http,
            shutdown.clone(),
        )?;
        Ok(Self {
            port,
            server,
            event_lanes,
            vote_lanes,
            site_lane,
            notify_lane,
            admin_lane,
            log_lane,
            webhook_lane,
            email_lane,
            sms_lane,
            triggers,
            events,
            restore_checked,
            keys,
            worker_id,
            redis,
            pg,
            config,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The worker ids of this process's lanes.
    pub fn worker_ids(&self) -> Vec<String> {
        let events = self
            .event_lanes
            .iter()
            .map(|l| l.sources()[0].worker_id().to_string());
        let votes = self
            .vote_lanes
            .iter()
            .map(|l| l.sources()[0].worker_id().to_string());
        let others = [
            &self.site_lane.sources()[0],
            &self.notify_lane.sources()[0],
            &self.admin_lane.sources()[0],
            &self.log_lane.sources()[0],
        ]
        .map(|q| q.worker_id().to_string());
        let deliveries = [
            self.webhook_lane.worker_id(),
            self.email_lane.worker_id(),
            self.sms_lane.worker_id(),
        ]
        .map(str::to_string);
        events
            .chain(votes)
            .chain(others)
            .chain(deliveries)
            .collect()
    }

    /// Drains the queue until shutdown; the batches in progress are stored (or handed
    /// back) before this returns.
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            event_lanes,
            vote_lanes,
            site_lane,
            notify_lane,
            admin_lane,
            log_lane,
            webhook_lane,
            email_lane,
            sms_lane,
            triggers,
            events,
            restore_checked,
            keys,
            worker_id,
            redis,
            pg,
            config,
            shutdown,
            ..
        } = self;
        let lane_queues = event_lanes
            .iter()
            .flat_map(|l| l.sources().to_vec())
            .chain(vote_lanes.iter().flat_map(|l| l.sources().to_vec()))
            .chain(site_lane.sources().to_vec())
            .chain(notify_lane.sources().to_vec())
            .chain(admin_lane.sources().to_vec())
            .chain(log_lane.sources().to_vec());
        let queues: Vec<WorkerQueue> = lane_queues.collect();
        // One handle per queue for the reaper (every queue has a lane of this process).
        let mut per_queue: Vec<WorkerQueue> = Vec::new();
        for q in &queues {
            if !per_queue.iter().any(|p| p.keys().name == q.keys().name) {
                per_queue.push(q.clone());
            }
        }
        // The heartbeat outlives the shutdown signal until the last batch is finished, so
        // no other worker reaps a batch this one is still storing.
        let heartbeat_stop = CancellationToken::new();
        let ttl = Duration::from_millis(config.worker.heartbeat_ttl_ms);
        for queue in &queues {
            if let Err(e) = queue.heartbeat(&mut redis.clone(), ttl).await {
                tracing::warn!(error = %e, "first heartbeat failed; retrying in the background");
                break;
            }
        }
        let heartbeat = tokio::spawn(liveness::heartbeat(
            queues.clone(),
            redis.clone(),
            ttl,
            heartbeat_stop.clone(),
        ));
        let reaper = tokio::spawn(liveness::reap_and_measure(
            per_queue,
            redis.clone(),
            Duration::from_millis(config.worker.reap_interval_ms),
            shutdown.clone(),
        ));
        let drain = tokio::spawn({
            let shutdown = shutdown.clone();
            let (pg, redis) = (pg.clone(), redis.clone());
            let run_migrations = config.worker.run_migrations;
            let backoff = config.worker.backoff();
            let restore_every = Duration::from_millis(config.worker.restore_check_interval_ms);
            let spike_every = Duration::from_millis(config.notify.traffic_spike_interval_ms);
            let repair_every = Duration::from_millis(config.worker.visit_sketch_repair_interval_ms);
            let fold_every = Duration::from_millis(config.worker.visit_sketch_fold_interval_ms);
            let weeks_every = Duration::from_millis(config.worker.visit_week_build_interval_ms);
            let week_build_timeout = Duration::from_millis(config.worker.site_rebuild_timeout_ms);
            let waiting_every = Duration::from_millis(config.worker.events_waiting_interval_ms);
            let waiting_work = events.clone();
            let waiting_dead =
                WorkerQueue::new(keys.events_queue(), format!("{worker_id}.waiting"));
            let (spike_multiple, spike_min) = (
                config.notify.traffic_spike_multiple,
                config.notify.traffic_spike_min_visitors,
            );
            let exporter = Arc::new(crate::exports::Exporter {
                pg: pg.clone(),
                redis: redis.clone(),
                keys: keys.jobs(),
                worker_id: worker_id.clone(),
                settings: config.export.clone(),
                backoff: config.worker.backoff(),
            });
            let retention = config.worker.events_retention().map(|keep| {
                let every = Duration::from_millis(config.worker.events_retention_interval_ms);
                (keep, every)
            });
            async move {
                if run_migrations && !migrate_with_retry(&pg, backoff, &shutdown).await {
                    return;
                }
                let mut runs: Vec<_> = event_lanes
                    .into_iter()
                    .map(|lane| tokio::spawn(lane.run(shutdown.clone())))
                    .collect();
                runs.extend(
                    vote_lanes
                        .into_iter()
                        .map(|lane| tokio::spawn(lane.run(shutdown.clone()))),
                );
                runs.push(tokio::spawn(site_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(notify_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(admin_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(log_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(webhook_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(email_lane.run(shutdown.clone())));
                runs.push(tokio::spawn(sms_lane.run(shutdown.clone())));
                if spike_every > Duration::ZERO {
                    runs.push(tokio::spawn(crate::triggers::watch_traffic(
                        triggers,
                        worker_id.clone(),
                        spike_multiple,
                        spike_min,
                        spike_every,
                        shutdown.clone(),
                    )));
                }
                if let Some((keep, every)) = retention {
                    runs.push(tokio::spawn(crate::events::retention::run(
                        pg.clone(),
                        keep,
                        every,
                        shutdown.clone(),
                    )));
                }
                runs.push(tokio::spawn(exporter.run(shutdown.clone())));
                runs.push(tokio::spawn(crate::events::visits::sketch_fold::run(
                    pg.clone(),
                    fold_every,
                    shutdown.clone(),
                )));
                runs.push(tokio::spawn(crate::events::visits::week_cells::run(
                    pg.clone(),
                    weeks_every,
                    week_build_timeout,
                    shutdown.clone(),
                )));
                runs.push(tokio::spawn(crate::events::waiting::run(
                    waiting_work,
                    redis.clone(),
                    waiting_dead,
                    waiting_every,
                    shutdown.clone(),
                )));
                runs.push(tokio::spawn(crate::events::visits::sketch_repair::run(
                    pg.clone(),
                    redis.clone(),
                    keys.clone(),
                    repair_every,
                    shutdown.clone(),
                )));
                runs.push(tokio::spawn(crate::restore::run(
                    redis,
                    pg,
                    keys,
                    worker_id,
                    restore_every,
                    restore_checked,
                    shutdown.clone(),
                )));
                for run in runs {
                    let _ = run.await;
                }
            }
        });
        let served = server.await;
        shutdown.cancel();
        let _ = drain.await;
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        let _ = reaper.await;
        // A heartbeat may have landed after a lane unregistered; undo it.
        for queue in &queues {
            if let Err(e) = queue.release(&mut redis.clone()).await {
                tracing::warn!(error = %e, "could not unregister the worker");
            }
        }
        Ok(served?)
    }
}

async fn migrate_with_retry(
    pg: &Pool,
    mut backoff: domain::backoff::Backoff,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        match domain::postgres::migrate(pg).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied");
                }
                return true;
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "migrations failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff.next_pause()) => {}
                }
            }
        }
    }
}
