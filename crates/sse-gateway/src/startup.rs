//! Builds the sse-gateway application from its configuration; tests use it too.

use crate::config::{Config, GatewaySettings};
use crate::hub::{Hub, HubSettings};
use crate::limits::ConnectionLimits;
use crate::routes::{dashboard, demo, feed, polls, sites, stream, tracker};
use actix_web::dev::Server;
use actix_web::web;
use domain::http::Ops;
use domain::keys::Keys;
use domain::net::TrustedProxies;
use domain::redis::RedisConn;
use domain::shutdown::{CancellationToken, every};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Shared by every request.
pub struct AppState {
    pub keys: Keys,
    pub redis: RedisConn,
    pub hub: Arc<Hub>,
    /// What a reader waits on before reading the state it follows.
    pub listener: crate::subscriber::Listener,
    /// How long a reader waits for its channel's subscription.
    pub redis_timeout_ms: u64,
    /// What users' feed topics read Redis with.
    pub feed_reads: Arc<crate::feeds::feed::FeedReads>,
    pub limits: ConnectionLimits,
    pub trusted_proxies: TrustedProxies,
    pub settings: GatewaySettings,
    /// Ends every stream when cancelled.
    pub shutdown: CancellationToken,
}

/// A bound, not yet running, sse-gateway.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Binds the listener and starts the Redis subscription.
    ///
    /// # Errors
    /// When the address cannot be bound or a setting is unusable.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let keys = domain::redis::keys(&config.redis);
        let redis = domain::redis::connection(&config.redis)?;
        let g = &config.gateway;
        crate::peer::set_watching(g.hangup_watch);
        if !g.stats_token.is_empty() && g.stream_token_secret.is_empty() {
            tracing::warn!(
                "STATS_TOKEN is set but STREAM_TOKEN_SECRET is not: only public sites' streams can be opened"
            );
        }
        let hub = Arc::new(Hub::new(
            &keys,
            HubSettings {
                history: g.replay_history,
                lag_capacity: g.max_client_lag,
            },
        ));
        let subscribed = Arc::new(AtomicBool::new(false));
        let (listener, subscription) = crate::subscriber::start(
            crate::subscriber::Subscriber {
                redis: config.redis.clone(),
                ping_every: Duration::from_millis(config.gateway.subscription_ping_ms),
                keys: keys.clone(),
                hub: hub.clone(),
                subscribed: subscribed.clone(),
            },
            shutdown.clone(),
        );
        let state = web::Data::new(AppState {
            keys: keys.clone(),
            redis: redis.clone(),
            hub: hub.clone(),
            listener,
            redis_timeout_ms: config.redis.redis_timeout_ms,
            feed_reads: Arc::new(crate::feeds::feed::FeedReads {
                keys: keys.clone(),
                redis: redis.clone(),
            }),
            limits: ConnectionLimits::new(g.max_connections, g.max_connections_per_ip),
            trusted_proxies: TrustedProxies::parse(&config.http.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
            settings: g.clone(),
            shutdown: shutdown.clone(),
        });

        let background = vec![
            subscription,
            tokio::spawn(collect_garbage(hub.clone(), shutdown.clone())),
            tokio::spawn(crate::presence::run(
                hub,
                redis.clone(),
                state.keys.clone(),
                g.gateway_id.clone().unwrap_or_else(|| {
                    format!(
                        "{}-{}",
                        std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into()),
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    )
                }),
                Duration::from_millis(g.presence_interval_ms),
                shutdown.clone(),
            )),
        ];

        let timeout = Duration::from_millis(config.redis.redis_timeout_ms);
        let ops = Ops::new(domain::metrics::install(), shutdown.clone(), move || {
            let (mut redis, subscribed) = (redis.clone(), subscribed.clone());
            Box::pin(async move {
                domain::redis::ping(&mut redis, timeout)
                    .await
                    .map_err(|e| format!("redis: {e:#}"))?;
                if subscribed.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("redis: the pub/sub subscription is not established".to_string())
                }
            })
        });
        let (listener, port) = domain::http::bind(&config.http)?;
        let cors_origins = config.http.cors_origins.clone();
        let body_read_timeout = config.http.body_read_timeout();
        let server_state = state.clone();
        let server = domain::http::serve_with_on_connect(
            move || {
                // The probes and /metrics first: actix tries routes in order, and a route with a
                // path parameter is matched by a regex (25 of them made /healthz cost 15% more).
                let app = domain::http::with_ops(
                    domain::http::app("sse_gateway", Some(&cors_origins), body_read_timeout),
                    ops.clone(),
                )
                .app_data(server_state.clone())
                .service(demo::index)
                .service(dashboard::dashboard_page)
                .service(dashboard::dashboard_script)
                .service(dashboard::dashboard_style)
                .service(demo::app_js)
                .service(demo::style)
                .service(demo::config)
                .service(polls::poll_stream)
                .service(polls::poll_updates)
                .service(sites::site_stream)
                .service(feed::feed_stream)
                .service(stream::multi_stream)
                .service(tracker::tally_js);
                domain::http::with_openapi(
                    app,
                    "sse-gateway",
                    "Live poll tallies, site activity and users' notification feeds over Server-Sent Events (one topic, or many on one connection), a long-polling fallback, presence counts, the demo page and the tracker.",
                    &[],
                )
            },
            listener,
            &config.http,
            shutdown,
            crate::peer::on_connect,
        )?;
        Ok(Self {
            port,
            server,
            state,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The hub (tests look at its topics).
    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Open streams right now (tests).
    pub fn open_streams(&self) -> usize {
        self.state.limits.open()
    }

    /// Serves until the shutdown token is cancelled; streams end with a retry hint.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.state.shutdown.cancel();
        for task in self.background {
            let _ = task.await;
        }
        Ok(served?)
    }
}

async fn collect_garbage(hub: Arc<Hub>, shutdown: CancellationToken) {
    every(Duration::from_secs(10), shutdown, || {
        hub.collect_garbage();
        std::future::ready(())
    })
    .await;
}
