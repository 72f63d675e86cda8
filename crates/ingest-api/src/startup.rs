//! Builds the ingest-api application from its configuration; tests use it too.

use crate::client::{Countries, DataCenters};
use crate::config::{Config, IngestSettings};
use crate::limits::{KeyedLimiter, QueueDepth};
use crate::routes::{events, exports, feed, goals, notifications, polls, sites, topics, webhooks};
use crate::sites::SiteDirectory;
use crate::visitor::Salts;
use actix_web::dev::Server;
use actix_web::web;
use domain::http::Ops;
use domain::keys::{Keys, QueueKeys};
use domain::net::TrustedProxies;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::net::IpAddr;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The Redis connection of the HTTP worker thread serving a request. Each worker thread
/// has its own multiplexed connection, created lazily on that thread so its I/O driver runs
/// beside the handlers: one shared connection made every request wake another thread
/// twice, which cost more CPU than the request itself (measured with perf).
pub struct WorkerRedis(pub RedisConn);

/// Shared by every request.
pub struct AppState {
    pub keys: Keys,
    /// The shards of the events queue (each worker's pusher takes them in turn).
    pub events_queues: Vec<QueueKeys>,
    pub redis: RedisConn,
    pub settings: IngestSettings,
    pub ip_limiter: KeyedLimiter<IpAddr>,
    pub vote_ip_limiter: KeyedLimiter<IpAddr>,
    pub vote_poll_limiter: KeyedLimiter<String>,
    pub trusted_proxies: TrustedProxies,
    pub queue_depth: QueueDepth,
    pub sites: SiteDirectory,
    pub salts: Salts,
    pub countries: Countries,
    pub datacenters: DataCenters,
}

/// A bound, not yet running, ingest-api.
pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Binds the listener and prepares everything; nothing is served until
    /// [`Application::run_until_stopped`].
    ///
    /// # Errors
    /// When the address cannot be bound or a URL or setting is unusable.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let keys = domain::redis::keys(&config.redis);
        let redis = domain::redis::connection(&config.redis)?;
        let trusted_proxies =
            TrustedProxies::parse(&config.http.trusted_proxies).map_err(anyhow::Error::msg)?;
        let countries = match &config.ingest.geoip_db {
            Some(path) => Countries::open(std::path::Path::new(path))?,
            None => Countries::default(),
        };
        let datacenters = match &config.ingest.datacenter_networks_file {
            Some(path) => DataCenters::load(std::path::Path::new(path))?,
            None => DataCenters::default(),
        };
        tracing::info!(
            sites_mode = ?config.ingest.sites_mode,
            countries = countries.enabled(),
            datacenter_networks = datacenters.len(),
            "visitor enrichment"
        );
        let state = web::Data::new(AppState {
            events_queues: keys.events_queues(config.redis.event_queue_shards),
            keys,
            redis: redis.clone(),
            ip_limiter: KeyedLimiter::new(
                "client",
                config.ingest.rate_limit_per_ip_per_s,
                config.ingest.rate_limit_burst,
                config.ingest.limiter_max_keys,
            ),
            vote_ip_limiter: KeyedLimiter::new(
                "vote_client",
                config.ingest.vote_rate_limit_per_ip_per_s,
                config.ingest.vote_rate_limit_per_ip_burst,
                config.ingest.limiter_max_keys,
            ),
            vote_poll_limiter: KeyedLimiter::new(
                "vote_poll",
                config.ingest.vote_rate_limit_per_poll_per_s,
                config.ingest.vote_rate_limit_per_poll_burst,
                config.ingest.limiter_max_keys,
            ),
            settings: config.ingest.clone(),
            trusted_proxies,
            queue_depth: QueueDepth::default(),
            sites: SiteDirectory::default(),
            salts: Salts::default(),
            countries,
            datacenters,
        });
        // The first registry and salts before serving, when Redis answers (otherwise the
        // background refresh keeps trying, and events needing them get 503).
        let mut conn = redis.clone();
        let first = tokio::time::timeout(
            Duration::from_millis(config.redis.redis_timeout_ms),
            async {
                let sites = state.sites.refresh(&mut conn, &state.keys).await;
                let salts = state
                    .salts
                    .refresh(&mut conn, &state.keys, chrono::Utc::now())
                    .await;
                sites.and(salts)
            },
        )
        .await;
        if !matches!(first, Ok(Ok(()))) {
            tracing::warn!(
                "site registry or visitor salts not loaded yet; retrying in the background"
            );
        }

        let background = vec![
            tokio::spawn(poll_queue_depth(state.clone(), shutdown.clone())),
            tokio::spawn(forget_idle_clients(state.clone(), shutdown.clone())),
            tokio::spawn(refresh_sites(state.clone(), shutdown.clone())),
            tokio::spawn(refresh_salts(state.clone(), shutdown.clone())),
        ];

        let timeout = Duration::from_millis(config.redis.redis_timeout_ms);
        let ops = Ops::new(domain::metrics::install(), shutdown.clone(), move || {
            let mut redis = redis.clone();
            Box::pin(async move {
                domain::redis::ping(&mut redis, timeout)
                    .await
                    .map_err(|e| format!("redis: {e:#}"))
            })
        });

        let (listener, port) = domain::http::bind(&config.http)?;
        let cors_origins = config.http.cors_origins.clone();
        let body_read_timeout = config.http.body_read_timeout();
        let redis_config = config.redis.clone();
        let server = domain::http::serve(
            move || {
                let worker_redis = domain::redis::connection(&redis_config)
                    .expect("REDIS_URL was validated when the application was built");
                // The probes and /metrics first: actix tries routes in order, and a route with a
                // path parameter is matched by a regex (25 of them made /healthz cost 15% more).
                let app = domain::http::with_ops(
                    domain::http::app("ingest_api", Some(&cors_origins), body_read_timeout),
                    ops.clone(),
                )
                .app_data(web::Data::new(crate::pusher::EventPusher::start(
                    worker_redis.clone(),
                    state.events_queues.clone(),
                    crate::pusher::Replication {
                        replicas: state.settings.redis_wait_replicas,
                        timeout: std::time::Duration::from_millis(
                            state.settings.redis_wait_timeout_ms,
                        ),
                    },
                )))
                .app_data(web::Data::new(crate::ballot_box::BallotBox::start(
                    worker_redis.clone(),
                    state.keys.clone(),
                )))
                .app_data(web::Data::new(WorkerRedis(worker_redis)))
                .app_data(state.clone())
                .service(events::post_events)
                .service(events::post_event_compat)
                .service(polls::post_poll)
                // Votes before the other routes with a path parameter: a path
                // parameter is matched by a regex, and votes are the busiest of them.
                .service(polls::post_vote)
                .service(polls::close_poll)
                .service(polls::post_vote_compat)
                .service(sites::post_site)
                .service(sites::list_sites)
                .service(sites::get_site)
                .service(sites::patch_site)
                .service(sites::delete_site)
                .service(goals::post_goal)
                .service(goals::list_goals)
                .service(goals::delete_goal)
                .service(goals::post_funnel)
                .service(goals::delete_funnel)
                .service(exports::post_export)
                .service(notifications::post_notification)
                .service(webhooks::post_endpoint)
                .service(webhooks::list_endpoints)
                .service(webhooks::get_endpoint)
                .service(webhooks::patch_endpoint)
                .service(webhooks::delete_endpoint)
                .service(webhooks::rotate_secret)
                .service(topics::post_subscribers)
                .service(topics::delete_subscriber)
                .service(topics::get_topic)
                .service(feed::post_feed_read);
                domain::http::with_openapi(
                    app,
                    "ingest-api",
                    "Tally's write side: analytics events, polls and votes, the site registry, notifications, webhook endpoints, topic subscriptions and feed read marks.",
                    &["admin_token"],
                )
            },
            listener,
            &config.http,
            shutdown.clone(),
        )?;
        Ok(Self {
            port,
            server,
            shutdown,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is cancelled, then drains in-flight requests.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.shutdown.cancel();
        for task in self.background {
            let _ = task.await;
        }
        Ok(result?)
    }
}

/// Keeps the queue depth fresh when no pushes are happening (for example while the worker
/// drains a full queue and clients are being refused).
async fn poll_queue_depth(state: web::Data<AppState>, shutdown: CancellationToken) {
    every(Duration::from_millis(250), shutdown, || {
        let state = state.clone();
        async move {
            let mut conn = state.redis.clone();
            let ticket = state.queue_depth.poll_ticket();
            match domain::queue::total_len(&mut conn, &state.events_queues).await {
                Ok(len) => {
                    state.queue_depth.poll_result(ticket, len);
                }
                Err(e) => tracing::debug!(error = %e, "could not read the queue length"),
            }
        }
    })
    .await;
}

async fn refresh_sites(state: web::Data<AppState>, shutdown: CancellationToken) {
    let period = Duration::from_millis(state.settings.sites_refresh_ms);
    every(period, shutdown, || {
        let state = state.clone();
        async move {
            let mut conn = state.redis.clone();
            if let Err(e) = state.sites.refresh(&mut conn, &state.keys).await {
                tracing::debug!(error = %e, "could not refresh the site registry");
            }
        }
    })
    .await;
}

async fn refresh_salts(state: web::Data<AppState>, shutdown: CancellationToken) {
    let period = Duration::from_millis(state.settings.salt_refresh_ms);
    every(period, shutdown, || {
        let state = state.clone();
        async move {
            let mut conn = state.redis.clone();
            if let Err(e) = state
                .salts
                .refresh(&mut conn, &state.keys, chrono::Utc::now())
                .await
            {
                tracing::warn!(error = %e, "could not refresh the visitor salts");
            }
        }
    })
    .await;
}

async fn forget_idle_clients(state: web::Data<AppState>, shutdown: CancellationToken) {
    every(Duration::from_secs(60), shutdown, || {
        state.ip_limiter.forget_idle();
        state.vote_ip_limiter.forget_idle();
        state.vote_poll_limiter.forget_idle();
        std::future::ready(())
    })
    .await;
}
