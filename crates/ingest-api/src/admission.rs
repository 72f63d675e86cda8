//! Which events of a request count, and what the connection that sent them adds.
//!
//! In order: the site must be one the registry allows (`SITES_MODE`, and a registered
//! site's domains for browser events). Browser events (a `url`, or a request carrying
//! `Origin`) are dropped when the browser is a bot. Events whose visitor is the connection
//! itself (see `QueuedEvent::from_connection`) get browser, OS, device class, country and,
//! without a `user_id`, a visitor id. A server calling the API for its own users (no
//! `url`, no `Origin`) is trusted: its HTTP library's User-Agent says nothing about them. The client address and the User-Agent string stay here: only what is derived from
//! them is queued. Nothing here talks to Redis (the registry and the salts are held in
//! memory), so a request stays one Redis round trip.

use crate::client::{BotReason, user_agent_info};
use crate::config::SitesMode;
use crate::error::ApiError;
use crate::sites::SiteLookup;
use crate::startup::AppState;
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{ORIGIN, USER_AGENT};
use chrono::DateTime;
use domain::event::QueuedEvent;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Events left out of a request, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped(pub BTreeMap<&'static str, u64>);

impl Dropped {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// The connection a request came over, as far as events care.
struct Connection<'r> {
    ip: IpAddr,
    user_agent: &'r str,
    origin_host: Option<String>,
}

impl<'r> Connection<'r> {
    fn of(req: &'r HttpRequest, state: &AppState) -> Self {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        Self {
            ip: domain::http::client_ip(req, &state.trusted_proxies)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            user_agent: header(USER_AGENT).unwrap_or(""),
            origin_host: header(ORIGIN).and_then(host_of),
        }
    }
}

fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.host_str().map(str::to_owned)
}

/// Checks and enriches `events` in place; the dropped ones are removed and counted.
///
/// # Errors
/// 404 `unknown_site` (registered mode), 403 `domain_not_allowed`, 503 while the registry
/// or the visitor salts are not available: the whole request is refused, nothing queued.
pub fn admit(
    req: &HttpRequest,
    state: &AppState,
    events: &mut Vec<QueuedEvent<'_>>,
) -> Result<Dropped, ApiError> {
    let conn = Connection::of(req, state);
    for e in events.iter() {
        check_site(state, &conn, e)?;
    }
    let mut dropped = Dropped::default();
    let mut err = None;
    let from_browser = conn.origin_host.is_some();
    events.retain_mut(|e| {
        if err.is_some() || !e.from_connection() {
            return true;
        }
        match enrich(state, &conn, e, from_browser || e.url.is_some()) {
            Ok(None) => true,
            Ok(Some(reason)) => {
                *dropped.0.entry(reason.as_str()).or_default() += 1;
                metrics::counter!("ingest_api_events_dropped_total", "reason" => reason.as_str())
                    .increment(1);
                false
            }
            Err(e) => {
                err = Some(e);
                true
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(dropped),
    }
}

fn check_site(
    state: &AppState,
    conn: &Connection<'_>,
    e: &QueuedEvent<'_>,
) -> Result<(), ApiError> {
    let reject = |reason: &'static str, status, details: Vec<String>| {
        metrics::counter!("ingest_api_events_rejected_total", "reason" => reason).increment(1);
        Err(ApiError::coded(status, reason, details))
    };
    match (state.sites.lookup(&e.site_id), state.settings.sites_mode) {
        (SiteLookup::Known(site), _) => {
            if site.domains.is_empty() {
                return Ok(());
            }
            // A browser's Origin cannot be forged by the page's scripts, so it wins; the
            // page's URL says where an event without one comes from.
            let host = conn
                .origin_host
                .clone()
                .or_else(|| e.url.as_deref().and_then(host_of));
            match host {
                Some(host) if !site.allows_host(&host) => reject(
                    "domain_not_allowed",
                    StatusCode::FORBIDDEN,
                    vec![format!(
                        "events from {host} do not count for site {}: the host is not one of its domains",
                        site.site_id
                    )],
                ),
                _ => Ok(()),
            }
        }
        (SiteLookup::Unknown, SitesMode::Registered) => reject(
            "unknown_site",
            StatusCode::NOT_FOUND,
            vec![format!("site {:?} is not registered", e.site_id.as_ref())],
        ),
        (SiteLookup::Restoring, SitesMode::Registered) => Err(ApiError::sites_restoring()),
        (_, SitesMode::Open) => Ok(()),
    }
}

/// Adds what the connection says to `e`, or, for a browser event, says why it is not a
/// person's.
fn enrich(
    state: &AppState,
    conn: &Connection<'_>,
    e: &mut QueuedEvent<'_>,
    browser_event: bool,
) -> Result<Option<BotReason>, ApiError> {
    let ua = user_agent_info(conn.user_agent);
    let bot = if !browser_event {
        None
    } else if e.automated {
        Some(BotReason::Automation)
    } else if ua.bot.is_some() {
        ua.bot
    } else if !state.datacenters.is_empty() && state.datacenters.contains(conn.ip) {
        Some(BotReason::DataCenter)
    } else {
        None
    };
    if bot.is_some() {
        return Ok(bot);
    }
    e.browser = ua.browser.clone().map(Cow::Owned);
    e.os = ua.os.map(Cow::Borrowed);
    e.device = ua.device.map(Cow::Borrowed);
    if state.countries.enabled() {
        e.country = state.countries.country(conn.ip).map(Cow::Owned);
    }
    if e.user_id.is_none() {
        // The day the event arrived, not the client's timestamp: a visitor is one id per
        // salt, and salts follow the server's clock.
        let day = DateTime::from_timestamp_millis(e.received_at_ms)
            .map(|t| t.date_naive())
            .unwrap_or_default();
        let Some(salt) = state.salts.for_day(day) else {
            return Err(ApiError::QueueUnavailable(anyhow::anyhow!(
                "the visitor salt of {day} is not loaded (Redis unreachable?)"
            )));
        };
        e.user_id = Some(Cow::Owned(crate::visitor::visitor_id(
            &salt,
            &e.site_id,
            conn.ip,
            conn.user_agent,
        )));
    }
    Ok(None)
}
