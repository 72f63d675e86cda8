//! HTTP handlers, one module per resource, and the event stream they share.

pub mod dashboard;
pub mod demo;
pub mod docs;
pub mod feed;
pub mod polls;
pub mod sites;
pub mod stream;
pub mod tracker;

use crate::error::ApiError;
use crate::hub::Update;
use crate::limits::{Refusal, Slot};
use crate::peer::PeerSocket;
use crate::reader::TopicReader;
use crate::startup::AppState;
use actix_web::HttpRequest;
use actix_web_lab::sse::{self, Sse};
use domain::shutdown::CancellationToken;
use futures_util::Stream;
use std::time::Duration;

/// Takes a connection place for this client.
///
/// # Errors
/// 429 past the per-client cap, 503 when the gateway is full.
pub fn acquire(req: &HttpRequest, state: &AppState) -> Result<Slot, ApiError> {
    let ip = domain::http::client_ip(req, &state.trusted_proxies).map(domain::net::limit_key);
    state.limits.acquire(ip).map_err(|r| {
        metrics::counter!("sse_gateway_streams_refused_total").increment(1);
        match r {
            Refusal::TooManyFromClient => ApiError::TooManyFromClient,
            Refusal::Full => ApiError::Full,
        }
    })
}

/// Waits until `topic`'s channel reaches this gateway, so the state a reader reads next is
/// followed by every update after it.
///
/// # Errors
/// 503 when the subscription cannot be made within `REDIS_TIMEOUT_MS`.
pub async fn listen(state: &AppState, topic: &crate::hub::Topic) -> Result<(), ApiError> {
    let channel = topic.channel.name(&state.keys);
    let timeout = Duration::from_millis(state.redis_timeout_ms);
    if state.listener.listen(channel, timeout).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable(anyhow::anyhow!(
            "the live updates of {} could not be subscribed to",
            topic.channel.topic()
        )))
    }
}

fn to_event(update: &Update, id: String, sees_everything: bool) -> sse::Event {
    sse::Data::new(update.data_for(sees_everything).clone())
        .event(update.event)
        .id(id)
        .into()
}

/// Ends when the gateway shuts down or the client is seen to have hung up.
async fn stream_over(shutdown: CancellationToken, peer: Option<PeerSocket>) {
    match peer {
        Some(peer) => tokio::select! {
            () = shutdown.cancelled() => {}
            () = peer.closed() => {
                metrics::counter!("sse_gateway_clients_hung_up_total").increment(1);
            }
        },
        None => shutdown.cancelled().await,
    }
}

struct StreamState {
    reader: TopicReader,
    over: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    _slot: Slot,
}

/// A browser's event stream of one topic (see [`TopicReader`]). Ends on shutdown (the
/// browser reconnects after the `retry:` delay, to another gateway) and as soon as the
/// browser hangs up.
pub fn event_stream(
    reader: TopicReader,
    slot: Slot,
    req: &HttpRequest,
    state: &AppState,
) -> Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>> + use<>> {
    let st = StreamState {
        reader,
        over: Box::pin(stream_over(
            state.shutdown.clone(),
            req.conn_data::<PeerSocket>().cloned(),
        )),
        _slot: slot,
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        let update = tokio::select! {
            () = &mut st.over => return None,
            u = st.reader.next() => u?,
        };
        metrics::counter!("sse_gateway_events_sent_total").increment(1);
        let event = to_event(
            &update,
            st.reader.last_sent.event_id(),
            st.reader.sees_everything,
        );
        Some((Ok(event), st))
    });
    Sse::from_stream(events)
        .with_keep_alive(Duration::from_secs(state.settings.heartbeat_s))
        .with_retry_duration(Duration::from_millis(state.settings.client_retry_ms))
}
