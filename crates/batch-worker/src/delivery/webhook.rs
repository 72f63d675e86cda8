//! Webhook deliveries: a signed POST (Standard Webhooks headers) to the endpoint's URL;
//! a 2xx within `WEBHOOK_TIMEOUT_MS` delivers, a 410 disables the endpoint, anything else
//! is retried.
//!
//! Webhooks must not become a way into the operator's network: unless
//! `WEBHOOK_ALLOW_INTERNAL` is set, the client's resolver drops loopback, private and
//! link-local addresses ([`domain::notify::webhook::is_internal`]) from every answer, so a
//! host name that resolves (or rebinds) to one is refused at the moment of connecting, and
//! a URL naming such an address is refused before any connection.

use super::records::Loaded;
use super::{Gate, Sender, Verdict};
use crate::notify::directory::EndpointDirectory;
use domain::keys::Keys;
use domain::notify::delivery::Delivery;
use domain::notify::{ChannelKind, endpoints, rate, webhook};
use domain::redis::RedisConn;
use futures_util::future::BoxFuture;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Most of a refusing receiver's answer kept as the delivery's last error.
const ERROR_SNIPPET_BYTES: usize = 256;
/// Most of an answer read (so the connection can be reused); the rest is dropped.
const ANSWER_READ_BYTES: usize = 64 * 1024;

/// A resolver that never hands out internal addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| !webhook::is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                metrics::counter!("batch_worker_webhooks_refused_internal_total").increment(1);
                return Err(format!(
                    "{host} resolves only to loopback, private or link-local addresses, which webhooks may not reach"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook channel.
pub struct WebhookSender {
    client: reqwest::Client,
    directory: Arc<EndpointDirectory>,
    redis: RedisConn,
    keys: Keys,
    allow_internal: bool,
}

impl WebhookSender {
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots).
    pub fn new(
        directory: Arc<EndpointDirectory>,
        redis: RedisConn,
        keys: Keys,
        timeout: Duration,
        allow_internal: bool,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("Tally-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_internal {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            directory,
            redis,
            keys,
            allow_internal,
        })
    }

    async fn endpoint(&self, id: &str) -> Result<Option<endpoints::Endpoint>, String> {
        let all = self
            .directory
            .current(&mut self.redis.clone())
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(all.get(id).cloned())
    }
}

fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

impl Sender for WebhookSender {
    const CHANNEL: ChannelKind = ChannelKind::Webhook;

    fn key<'d>(&self, delivery: &'d Delivery) -> Option<&'d str> {
        Some(&delivery.target)
    }

    fn gate<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Gate> {
        Box::pin(async move {
            let endpoint = match self.endpoint(&delivery.target).await {
                Ok(Some(e)) => e,
                Ok(None) => return Gate::Refuse("the endpoint was deleted".into()),
                Err(_) => return Gate::Later(Duration::from_secs(1), "unavailable"),
            };
            if endpoint.disabled {
                return Gate::Refuse(format!(
                    "the endpoint is disabled ({})",
                    endpoint.disabled_reason.as_deref().unwrap_or("admin")
                ));
            }
            if let Some(per_second) = endpoint.rate_limit_per_s {
                let now = chrono::Utc::now().timestamp_millis();
                match rate::take(
                    &mut self.redis.clone(),
                    &self.keys,
                    &endpoint.endpoint_id,
                    per_second,
                    now,
                )
                .await
                {
                    Ok(None) => {}
                    Ok(Some(wait)) => return Gate::Later(wait, "rate"),
                    Err(_) => return Gate::Later(Duration::from_secs(1), "unavailable"),
                }
            }
            Gate::Go
        })
    }

    fn attempt<'a>(
        &'a self,
        delivery: &'a Delivery,
        notification: &'a Loaded,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let failed = |error: String| Verdict::Failed {
                status: None,
                error,
            };
            let endpoint = match self.endpoint(&delivery.target).await {
                Ok(Some(e)) => e,
                Ok(None) => {
                    return Verdict::Refused {
                        status: None,
                        error: "the endpoint was deleted".into(),
                    };
                }
                Err(e) => return failed(format!("the endpoint could not be read: {e}")),
            };
            let url = match url::Url::parse(&endpoint.url) {
                Ok(u) => u,
                Err(e) => return failed(format!("the endpoint's URL does not parse: {e}")),
            };
            if !self.allow_internal && literal_ip(&url).is_some_and(webhook::is_internal) {
                return failed(format!(
                    "{} is a loopback, private or link-local address, which webhooks may not reach",
                    url.host_str().unwrap_or("")
                ));
            }
            let now = chrono::Utc::now();
            let timestamp = now.timestamp();
            let body = notification.webhook_body.clone();
            // One signature per valid secret (the new one and, after a rotation, the old
            // one for a while), space-separated as the Standard Webhooks header allows.
            let mut signatures = Vec::with_capacity(2);
            for secret in endpoint.signing_secrets(now) {
                let Some(key) = webhook::secret_key(secret) else {
                    return failed("the endpoint's secret is not a whsec_ secret".into());
                };
                signatures.push(webhook::sign(&key, &delivery.delivery_id, timestamp, &body));
            }
            let signature = signatures.join(" ");
            let sent = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &delivery.delivery_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await;
            let mut response = match sent {
                Ok(r) => r,
                Err(e) if e.is_timeout() => {
                    return failed("no answer within WEBHOOK_TIMEOUT_MS".into());
                }
                Err(e) => return failed(error_chain(&e)),
            };
            let status = response.status();
            // Read (a bounded part of) the answer, so the connection goes back to the pool.
            let mut snippet = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                if snippet.len() < ANSWER_READ_BYTES {
                    snippet.extend_from_slice(&chunk);
                } else {
                    break;
                }
            }
            let code = status.as_u16();
            if status.is_success() {
                return Verdict::Delivered { status: Some(code) };
            }
            snippet.truncate(ERROR_SNIPPET_BYTES);
            let error = format!("HTTP {code}: {}", String::from_utf8_lossy(&snippet).trim());
            if code == 410 {
                Verdict::Gone {
                    status: code,
                    error,
                }
            } else {
                Verdict::Failed {
                    status: Some(code),
                    error,
                }
            }
        })
    }

    fn on_gone<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let now = chrono::Utc::now();
            match endpoints::disable(
                &mut self.redis.clone(),
                &self.keys,
                &delivery.target,
                "gone",
                now,
            )
            .await
            {
                Ok(_) => {
                    metrics::counter!("batch_worker_endpoints_disabled_total", "reason" => "gone")
                        .increment(1);
                    tracing::warn!(
                        endpoint_id = delivery.target,
                        "a webhook endpoint answered 410 Gone: disabled"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, endpoint_id = delivery.target, "could not disable an endpoint that answered 410")
                }
            }
            self.directory.invalidate();
        })
    }
}

/// An error with its causes (reqwest's own message hides the reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
