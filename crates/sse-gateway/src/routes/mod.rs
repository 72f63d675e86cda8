//! HTTP handlers, one module per resource, and the event stream they share.

pub mod demo;
pub mod polls;
pub mod sites;
pub mod tracker;

use crate::error::ApiError;
use crate::hub::{Position, SNAPSHOT, Topic, Update};
use crate::limits::{Refusal, Slot};
use crate::startup::AppState;
use actix_web::HttpRequest;
use actix_web_lab::sse::{self, Sse};
use domain::shutdown::CancellationToken;
use futures_util::Stream;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Takes a connection place for this client.
///
/// # Errors
/// 429 past the per-client cap, 503 when the gateway is full.
pub fn acquire(req: &HttpRequest, state: &AppState) -> Result<Slot, ApiError> {
    let ip = domain::http::client_ip(req, &state.trusted_proxies);
    state.limits.acquire(ip).map_err(|r| {
        metrics::counter!("sse_gateway_streams_refused_total").increment(1);
        match r {
            Refusal::TooManyFromClient => ApiError::TooManyFromClient,
            Refusal::Full => ApiError::Full,
        }
    })
}

fn to_event(update: &Update, event: &'static str) -> sse::Event {
    sse::Data::new(update.data.clone())
        .event(event)
        .id(update.position.event_id())
        .into()
}

struct StreamState {
    initial: VecDeque<Arc<Update>>,
    rx: broadcast::Receiver<Arc<Update>>,
    topic: Arc<Topic>,
    last_sent: Position,
    shutdown: CancellationToken,
    _slot: Slot,
}

/// A browser's event stream: `initial` first, then every update of `topic` newer than
/// what was sent (and every snapshot). A browser that fell behind gets the latest state as
/// a snapshot. Ends on shutdown (the browser reconnects after the `retry:` delay, to
/// another gateway).
pub fn event_stream(
    initial: Vec<Arc<Update>>,
    rx: broadcast::Receiver<Arc<Update>>,
    topic: Arc<Topic>,
    last_sent: Position,
    slot: Slot,
    state: &AppState,
) -> Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>> + use<>> {
    let st = StreamState {
        initial: initial.into(),
        rx,
        topic,
        last_sent,
        shutdown: state.shutdown.clone(),
        _slot: slot,
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(u) = st.initial.pop_front() {
            st.last_sent = u.position;
            return Some((Ok(to_event(&u, u.event)), st));
        }
        loop {
            let next = tokio::select! {
                () = st.shutdown.cancelled() => return None,
                r = st.rx.recv() => r,
            };
            match next {
                Ok(u) if u.is_snapshot() || u.position > st.last_sent => {
                    st.last_sent = u.position;
                    metrics::counter!("sse_gateway_events_sent_total").increment(1);
                    return Some((Ok(to_event(&u, u.event)), st));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("sse_gateway_clients_lagged_total").increment(1);
                    tracing::debug!(missed, "a client fell behind; sending a snapshot");
                    if let Some(latest) = st.topic.latest() {
                        st.last_sent = latest.position;
                        return Some((Ok(to_event(&latest, SNAPSHOT)), st));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::from_stream(events)
        .with_keep_alive(Duration::from_secs(state.settings.heartbeat_s))
        .with_retry_duration(Duration::from_millis(state.settings.client_retry_ms))
}
