//! Builds the stats-api application from its configuration; tests use it too.

use crate::config::{Config, StatsSettings};
use crate::routes::{
    self, dead_letters, feed, funnels, grafana, jobs, notifications, polls, query, stats,
    timeseries,
};
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web;
use domain::deadpool_postgres::Pool;
use domain::http::Ops;
use domain::keys::Keys;
use domain::redis::RedisConn;
use domain::shutdown::CancellationToken;
use std::time::Duration;
use utoipa_actix_web::scope;

/// The largest Grafana request body read (a query of many targets is a few kilobytes).
const JSON_BODY_LIMIT: usize = 256 * 1024;

/// Shared by every request.
pub struct AppState {
    pub keys: Keys,
    pub redis: RedisConn,
    pub pg: Pool,
    pub settings: StatsSettings,
    /// The events queue's shards (whose dead letters the dead-letter API reads).
    pub event_queue_shards: u16,
}

/// A bound, not yet running, stats-api.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Binds the listener and prepares the pools.
    ///
    /// # Errors
    /// When the address cannot be bound or a URL is unusable.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let redis = domain::redis::connection(&config.redis)?;
        let pg = domain::postgres::query_pool(&config.postgres)?;
        let state = web::Data::new(AppState {
            keys: domain::redis::keys(&config.redis),
            redis: redis.clone(),
            pg: pg.clone(),
            settings: config.stats.clone(),
            event_queue_shards: config.redis.event_queue_shards,
        });
        let timeout = Duration::from_millis(config.redis.redis_timeout_ms);
        let pool_for_metrics = pg.clone();
        let ops = Ops::new(domain::metrics::install(), shutdown.clone(), move || {
            let (mut redis, pg) = (redis.clone(), pg.clone());
            Box::pin(async move {
                domain::postgres::ping(&pg, timeout)
                    .await
                    .map_err(|e| format!("postgres: {e:#}"))?;
                domain::redis::ping(&mut redis, timeout)
                    .await
                    .map_err(|e| format!("redis: {e:#}"))
            })
        })
        .refreshing(move || domain::postgres::record_pool_metrics(&pool_for_metrics, "stats_api"));
        let (listener, port) = domain::http::bind(&config.http)?;
        let cors_origins = config.http.cors_origins.clone();
        let body_read_timeout = config.http.body_read_timeout();
        let server = domain::http::serve(
            move || {
                // The probes and /metrics first: actix tries routes in order, and a route with a
                // path parameter is matched by a regex (25 of them made /healthz cost 15% more).
                let app = domain::http::with_ops(
                    domain::http::app("stats_api", Some(&cors_origins), body_read_timeout),
                    ops.clone(),
                )
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    crate::error::ApiError::BadRequest(format!("invalid query: {err}")).into()
                }))
                .app_data(
                    web::JsonConfig::default()
                        .limit(JSON_BODY_LIMIT)
                        .error_handler(|err, _| {
                            crate::error::ApiError::from_json_body(&err, JSON_BODY_LIMIT).into()
                        }),
                )
                .service(
                    scope("/v1")
                        .wrap(from_fn(routes::require_stats_token))
                        .service(stats::get_stats)
                        .service(polls::get_poll)
                        .service(timeseries::get_timeseries)
                        .service(notifications::get_notification)
                        .service(notifications::get_deliveries)
                        .service(feed::get_feed)
                        .service(funnels::list_funnels)
                        .service(funnels::get_funnel)
                        .service(jobs::get_job)
                        .service(jobs::stream_job)
                        .service(jobs::download_job)
                        .service(dead_letters::list_dead_letters)
                        .service(dead_letters::retry_dead_letters)
                        .service(dead_letters::purge_dead_letters),
                )
                .service(
                    scope("/grafana")
                        .wrap(from_fn(routes::require_stats_token))
                        .service(grafana::health)
                        .service(grafana::metrics)
                        .service(grafana::metric_payload_options)
                        .service(grafana::query)
                        .service(grafana::variable)
                        .service(grafana::tag_keys)
                        .service(grafana::tag_values),
                )
                .service(
                    scope("/v2")
                        .wrap(from_fn(routes::require_stats_token))
                        .service(query::post_query),
                )
                .service(
                    scope("/api")
                        .wrap(from_fn(routes::require_stats_token))
                        .service(stats::get_stats_compat),
                );
                domain::http::with_openapi(
                    app,
                    "stats-api",
                    "Tally's read side: site stats and time series from rollups, the query API (Plausible Stats API v2 shapes) over visits and rollups, poll results, notification status, users' feeds, dead letters of every queue, and the Grafana JSON data source.",
                    &["stats_token", "admin_token"],
                )
            },
            listener,
            &config.http,
            shutdown,
        )?;
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the shutdown token is cancelled, then drains in-flight requests.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        Ok(self.server.await?)
    }
}
