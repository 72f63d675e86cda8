//! `GET /v1/stream?topics=poll:A,site:B`: several topics on one connection (a browser
//! holds six connections per origin over HTTP/1.1; a dashboard watching many polls needs
//! one).
//!
//! Each event is the topic's own (`snapshot`, `tally`, `activity`, `presence`) with its
//! payload wrapped as `{"topic": "poll:A", "data": ...}`. The event id carries every
//! topic's position, `poll:A=12;site:B=1764585600000.3` (topic names percent-encoded), so
//! a browser reconnecting with `Last-Event-ID` resumes every topic where it was: what it
//! missed, or a snapshot. To watch another topic, reconnect with the new list and the last
//! id: topics the id names resume, new ones start with a snapshot.

use super::{acquire, stream_over};
use crate::error::ApiError;
use crate::hub::{Position, Update};
use crate::peer::PeerSocket;
use crate::reader::TopicReader;
use crate::startup::AppState;
use actix_web::{HttpRequest, Responder, get, web};
use actix_web_lab::sse::{self, Sse};
use domain::channel::Channel;
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use std::collections::HashMap;
use std::time::Duration;

/// What an event id's topic names must escape.
const ID_RESERVED: &AsciiSet = &CONTROLS.add(b'%').add(b';').add(b'=').add(b',');

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MultiQuery {
    /// Comma-separated topics: `poll:<poll_id>`, `site:<site_id>`, `feed:<user_id>` (a `,`
    /// inside an id as `%2C`).
    topics: Option<String>,
    /// Comma-separated stream tokens, for the topics that need one (private sites,
    /// `after_vote` polls' counts, every feed); each opens the topic its scope names.
    tokens: Option<String>,
}

/// Parses the `topics` list.
fn parse_topics(list: &str, max: usize) -> Result<Vec<Channel>, ApiError> {
    let mut topics: Vec<Channel> = Vec::new();
    for raw in list.split(',').filter(|t| !t.trim().is_empty()) {
        let name = percent_decode_str(raw.trim()).decode_utf8_lossy();
        let channel = Channel::from_topic(&name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown topic {name:?}: topics are poll:<poll_id>, site:<site_id> or feed:<user_id>"
            ))
        })?;
        if !topics.contains(&channel) {
            topics.push(channel);
        }
    }
    if topics.is_empty() {
        return Err(ApiError::BadRequest(
            "topics must name at least one topic (poll:<id>, site:<id>, feed:<user>)".into(),
        ));
    }
    if topics.len() > max {
        return Err(ApiError::BadRequest(format!(
            "at most {max} topics per stream (MAX_TOPICS_PER_STREAM)"
        )));
    }
    Ok(topics)
}

/// The event id of a set of positions.
fn composite_id(topics: &[Channel], positions: &[Position]) -> String {
    topics
        .iter()
        .zip(positions)
        .filter(|(_, p)| **p != Position::START)
        .map(|(t, p)| {
            format!(
                "{}={}",
                utf8_percent_encode(&t.topic(), ID_RESERVED),
                p.event_id()
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The positions a `Last-Event-ID` of [`composite_id`] names, by topic.
fn parse_composite_id(id: &str) -> HashMap<Channel, Position> {
    id.split(';')
        .filter_map(|pair| {
            let (topic, position) = pair.split_once('=')?;
            let topic = percent_decode_str(topic).decode_utf8_lossy();
            Some((
                Channel::from_topic(&topic)?,
                Position::parse_event_id(position)?,
            ))
        })
        .collect()
}

/// Several topics on one stream.
#[utoipa::path(
    tag = "streams",
    params(
        MultiQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume every topic: `topic=position;...` as the last event's id"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: each topic's events (`snapshot`, `tally`, `activity`, `presence`), data `{\"topic\", \"data\"}`, id carrying every topic's position", body = String, content_type = "text/event-stream"),
        (status = 400, description = "No topic, an unknown kind of topic, or more than MAX_TOPICS_PER_STREAM"),
        (status = 401, description = "A private site or a feed and no token (`token_required`)"),
        (status = 403, description = "A token that is malformed, expired or for another stream (`token_refused`)"),
        (status = 404, description = "An unknown poll"),
        (status = 429, description = "Too many streams from this client"),
        (status = 503, description = "Gateway full, a poll being restored, or Redis unavailable"),
    )
)]
#[get("/v1/stream")]
#[tracing::instrument(name = "multi_stream", skip_all)]
pub async fn multi_stream(
    req: HttpRequest,
    q: web::Query<MultiQuery>,
    state: web::Data<AppState>,
) -> Result<impl Responder, ApiError> {
    let topics = parse_topics(
        q.topics.as_deref().unwrap_or(""),
        state.settings.max_topics_per_stream,
    )?;
    let tokens: Vec<&str> = q
        .tokens
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
        .collect();
    let resume_at = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(parse_composite_id)
        .unwrap_or_default();
    let slot = acquire(&req, &state)?;
    let mut readers = Vec::with_capacity(topics.len());
    for channel in &topics {
        let reader = match channel {
            Channel::Poll(id) => {
                let token = tokens
                    .iter()
                    .copied()
                    .find(|t| super::polls::token_opens_results(&state, id, Some(t)));
                super::polls::poll_reader(&state, id, resume_at.get(channel).copied(), token)
                    .await?
            }
            Channel::Feed(user) => {
                let scope = domain::stream_token::feed_scope(user);
                let secret = state.settings.stream_token_secret.expose().as_bytes();
                let now = chrono::Utc::now().timestamp();
                let token = tokens
                    .iter()
                    .copied()
                    .find(|t| domain::stream_token::verify(secret, &scope, t, now).is_ok())
                    .or(tokens.first().copied());
                super::feed::feed_reader(&state, user, resume_at.get(channel).copied(), token)
                    .await?
            }
            Channel::FeedShard(_) => {
                return Err(ApiError::BadRequest("feeds:<shard> is not a topic".into()));
            }
            Channel::Site(id) => {
                // The first token for this site's scope, or the first one for the refusal.
                let scope = domain::stream_token::site_scope(id);
                let secret = state.settings.stream_token_secret.expose().as_bytes();
                let now = chrono::Utc::now().timestamp();
                let token = tokens
                    .iter()
                    .copied()
                    .find(|t| domain::stream_token::verify(secret, &scope, t, now).is_ok())
                    .or(tokens.first().copied());
                super::sites::site_reader(&state, id, token).await?
            }
        };
        readers.push(reader);
    }
    metrics::counter!("sse_gateway_streams_opened_total", "kind" => "multi").increment(1);
    let over = Box::pin(stream_over(
        state.shutdown.clone(),
        req.conn_data::<PeerSocket>().cloned(),
    ));
    Ok(multiplexed(topics, readers, over, slot, &state)
        .customize()
        .insert_header(("x-accel-buffering", "no")))
}

/// One reader's next update: its index, the update, the reader's position after it, and
/// whether the reader sees everything.
type Next = (usize, std::sync::Arc<Update>, Position, bool);

/// The readers' updates merged into one event stream.
fn multiplexed(
    topics: Vec<Channel>,
    readers: Vec<TopicReader>,
    over: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    slot: crate::limits::Slot,
    state: &AppState,
) -> Sse<impl futures_util::Stream<Item = Result<sse::Event, std::convert::Infallible>> + use<>> {
    let positions = vec![Position::START; readers.len()];
    let mut merged: SelectAll<BoxStream<'static, Next>> = SelectAll::new();
    for (i, reader) in readers.into_iter().enumerate() {
        merged.push(
            futures_util::stream::unfold(reader, move |mut r| async move {
                let u = r.next().await?;
                Some(((i, u, r.last_sent, r.sees_everything), r))
            })
            .boxed(),
        );
    }
    let names: Vec<String> = topics.iter().map(Channel::topic).collect();
    let st = (merged, over, slot, topics, names, positions);
    let events = futures_util::stream::unfold(st, move |mut st| async move {
        let (i, update, position, sees) = tokio::select! {
            () = &mut st.1 => return None,
            next = st.0.next() => next?,
        };
        if !update.ephemeral {
            st.5[i] = position;
        }
        metrics::counter!("sse_gateway_events_sent_total").increment(1);
        let data = format!(
            "{{\"topic\":{},\"data\":{}}}",
            serde_json::Value::from(st.4[i].as_str()),
            update.data_for(sees)
        );
        let event = sse::Data::new(data)
            .event(update.event)
            .id(composite_id(&st.3, &st.5))
            .into();
        Some((Ok(event), st))
    });
    Sse::from_stream(events)
        .with_keep_alive(Duration::from_secs(state.settings.heartbeat_s))
        .with_retry_duration(Duration::from_millis(state.settings.client_retry_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_carry_every_topic_and_parse_back() {
        let topics = vec![
            Channel::Poll("p1".into()),
            Channel::Site("a;b=c,d".into()),
            Channel::Poll("p2".into()),
        ];
        let positions = vec![
            Position { epoch: 0, seq: 12 },
            Position {
                epoch: 1_764_585_600_000,
                seq: 3,
            },
            Position::START,
        ];
        let id = composite_id(&topics, &positions);
        assert_eq!(id, "poll:p1=12;site:a%3Bb%3Dc%2Cd=1764585600000.3");
        let back = parse_composite_id(&id);
        assert_eq!(back.get(&topics[0]), Some(&positions[0]));
        assert_eq!(back.get(&topics[1]), Some(&positions[1]));
        assert_eq!(
            back.get(&topics[2]),
            None,
            "a topic not yet sent is not in the id"
        );
        assert!(parse_composite_id("garbage;;x=y").is_empty());
    }

    #[test]
    fn topic_lists_are_checked() {
        assert_eq!(
            parse_topics("poll:a, site:b%2Cc ,poll:a", 5).expect("valid"),
            vec![Channel::Poll("a".into()), Channel::Site("b,c".into())]
        );
        assert!(parse_topics("", 5).is_err());
        assert!(parse_topics("feeds:1", 5).is_err());
        assert_eq!(
            parse_topics("feed:u", 5).expect("a feed"),
            vec![Channel::Feed("u".into())]
        );
        assert!(parse_topics("poll:a,poll:b,poll:c", 2).is_err());
    }
}
