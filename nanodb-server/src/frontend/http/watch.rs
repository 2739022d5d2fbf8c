//! Watching keys and pub/sub over plain HTTP: `GET /v1/watch` and `GET /v1/subscribe/{channel}`
//! as Server-Sent Events, and `POST /v1/publish/{channel}`.
//!
//! An event stream is registered with the change feed before its response headers are sent, so
//! every change applied after the client sees the headers is delivered; its first line, the
//! comment `: ready`, says so to clients that do not see headers (`curl -N`). It is a long-lived
//! response, not a long request: the guard layer's request timeout and in-flight slot end when
//! the headers are ready, and compression skips `text/event-stream`, so nothing buffers or cuts
//! it. Open streams (SSE and WebSocket) are bounded separately, by `max_streams`. A stream
//! ends when the client goes away (dropping the subscriber unsubscribes), at shutdown, or after a
//! final `lagged` event when the client fell behind.

use nanodb_protocol::cmd;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::RawQuery;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use nanodb_protocol::ErrorCode;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::BinaryBody;
use super::Call;
use super::error::{AppError, ErrorBody, json_response};
use super::events::EventJson;
use super::extract::{Body, Seg, decode_segment};
use super::guard::CountedPlace;
use crate::feed::{Delivery, Subscriber, Topic};
use crate::stats::Protocol;

/// How often an idle event stream sends a comment line, so proxies and clients can tell a quiet
/// stream from a dead connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The first thing every event stream sends, as an SSE comment (`: ready`): the subscription is
/// registered, so every change applied from now on is delivered. `curl -N` users wait for this
/// line before writing. A comment rather than a named event: every SSE client skips comments, so
/// clients that read the first event as a change (or parse every `data:` as a change) keep
/// working; `EventSource` users have `onopen`, which fires on the response headers, and those too
/// are sent only after the subscription is registered.
const READY: &str = "ready";

/// What a publish reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiversJson {
    /// How many subscriptions received the message (channel subscribers plus matching patterns).
    pub receivers: u64,
}

/// A query string's parameters, percent-decoded to bytes (keys are bytes, like path segments).
fn query_params(query: Option<&str>) -> impl Iterator<Item = (&str, Bytes)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(name, value)| (name, decode_segment(value)))
}

fn parse_bool(name: &str, value: &[u8]) -> Result<bool, AppError> {
    match value {
        b"true" | b"1" | b"" => Ok(true),
        b"false" | b"0" => Ok(false),
        _ => Err(AppError::invalid(format!("{name} must be true or false"))),
    }
}

/// `key=K` or `prefix=P` (exactly one), and `values`.
fn watch_topic(query: Option<&str>) -> Result<(Topic, bool), AppError> {
    let (mut topic, mut values) = (None, false);
    for (name, value) in query_params(query) {
        let t = match name {
            "key" => Topic::Key(value),
            "prefix" => Topic::Prefix(value),
            "values" => {
                values = parse_bool(name, &value)?;
                continue;
            }
            _ => return Err(AppError::invalid(format!("unknown query parameter {name:?}"))),
        };
        if topic.replace(t).is_some() {
            return Err(AppError::invalid("give exactly one key= or prefix="));
        }
    }
    let topic = topic.ok_or_else(|| AppError::invalid("give exactly one key= or prefix="))?;
    Ok((topic, values))
}

impl super::Shared {
    /// A subscriber holding `topics`, with its place among the open streams; recorded as `op`.
    /// Every topic is authorized for `caller` before any is subscribed.
    pub(super) fn open_stream(
        &self,
        caller: &Call,
        op: &'static str,
        topics: impl IntoIterator<Item = (Topic, bool)>,
    ) -> Result<(Subscriber, CountedPlace), AppError> {
        let started = Instant::now();
        let topics: Vec<(Topic, bool)> = topics.into_iter().collect();
        let result = topics
            .iter()
            .try_for_each(|(topic, _)| caller.authorize_topic(topic))
            .and_then(|()| self.subscribe_all(topics));
        self.ctx.stats.record(Protocol::Http, op, result.is_ok(), started.elapsed());
        result
    }

    fn subscribe_all(
        &self,
        topics: impl IntoIterator<Item = (Topic, bool)>,
    ) -> Result<(Subscriber, CountedPlace), AppError> {
        let max = self.ctx.config.max_streams;
        let slot = CountedPlace::try_take(&self.streams, max).ok_or_else(|| {
            AppError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                format!("too many open event streams; the limit is {max} (--max-streams)"),
            )
        })?;
        let mut sub = self.ctx.feed.subscriber();
        for (topic, values) in topics {
            sub.add(topic, values)?;
        }
        Ok((sub, slot))
    }
}

/// Streams changes to one key or a prefix as Server-Sent Events.
#[utoipa::path(get, path = "/v1/watch", tag = "watch",
    params(
        ("key" = Option<String>, Query, description = "Watch this exact key (percent-encoded bytes; `+` is a literal plus)"),
        ("prefix" = Option<String>, Query, description = "Watch every key starting with these bytes (percent-encoded; empty for every key)"),
        ("values" = Option<bool>, Query, description = "Include the new value in events for string writes"),
    ),
    responses(
        (status = 200, description = "An endless event stream: first the comment `: ready` (the watch is registered: every later change is delivered), then one `data:` JSON object per change (type put, delete or expire); `event: lagged` ends it when the client fell behind; `:` comment lines keep it alive",
            content_type = "text/event-stream", body = EventJson),
        (status = 400, description = "Not exactly one of key= and prefix=, or an unknown parameter", body = ErrorBody),
        (status = 413, description = "Key or prefix over the topic limit (max_key_len)", body = ErrorBody),
        (status = 503, description = "Too many open event streams (max_streams)", body = ErrorBody),
    ))]
pub async fn watch(s: Call, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let topic = watch_topic(query.as_deref())?;
    let (sub, slot) = s.open_stream(&s, "watch", [topic])?;
    Ok(sse(sub, slot, s.ctx.shutdown.clone()))
}

/// Streams the messages published to one channel (or to channels matching a pattern) as
/// Server-Sent Events.
#[utoipa::path(get, path = "/v1/subscribe/{channel}", tag = "watch",
    params(("channel" = String, Path, description = "The channel (or glob pattern with ?pattern=true), percent-encoded; any bytes"),
        ("pattern" = Option<bool>, Query, description = "The path segment is a glob pattern (`*`, `?`, `[...]`, as Redis PSUBSCRIBE)")),
    responses(
        (status = 200, description = "An endless event stream: first the comment `: ready` (the subscription is registered), then one `data:` JSON object (type message) per message; `event: lagged` ends it when the client fell behind",
            content_type = "text/event-stream", body = EventJson),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 413, description = "Channel over the topic limit (max_key_len)", body = ErrorBody),
        (status = 503, description = "Too many open event streams (max_streams)", body = ErrorBody),
    ))]
pub async fn subscribe(
    s: Call,
    Seg(channel): Seg<3>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let mut pattern = false;
    for (name, value) in query_params(query.as_deref()) {
        match name {
            "pattern" => pattern = parse_bool(name, &value)?,
            _ => return Err(AppError::invalid(format!("unknown query parameter {name:?}"))),
        }
    }
    let topic = if pattern { Topic::Pattern(channel) } else { Topic::Channel(channel) };
    let (sub, slot) = s.open_stream(&s, "subscribe", [(topic, false)])?;
    Ok(sse(sub, slot, s.ctx.shutdown.clone()))
}

/// Publishes the body, byte for byte, to a channel.
#[utoipa::path(post, path = "/v1/publish/{channel}", tag = "watch",
    params(("channel" = String, Path, description = "The channel, percent-encoded; any bytes")),
    request_body(content = BinaryBody, content_type = "application/octet-stream", description = "The message, byte for byte"),
    responses(
        (status = 200, description = "Published", body = ReceiversJson),
        (status = 413, description = "Channel or message over its limit", body = ErrorBody),
    ))]
pub async fn publish(s: Call, Seg(channel): Seg<3>, Body(message): Body) -> Result<Response, AppError> {
    let n = s.exec(cmd::Publish { channel, message }).await?;
    Ok(json_response(StatusCode::OK, &ReceiversJson { receivers: n.max(0).unsigned_abs() }))
}

/// The SSE response over `sub`'s deliveries, opened by the [`READY`] comment.
fn sse(sub: Subscriber, slot: CountedPlace, shutdown: CancellationToken) -> Response {
    let ready = futures::stream::iter([Ok(Event::default().comment(READY))]);
    let mut r = Sse::new(ready.chain(events(sub, slot, shutdown)))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx buffers proxied responses unless told otherwise; events must pass at once.
    r.headers_mut().insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    r
}

/// Deliveries as SSE events, ending at shutdown or after the lagged event. The slot is held
/// (and released) with the stream.
fn events(
    sub: Subscriber,
    slot: CountedPlace,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(Some((sub, slot, shutdown)), |state| async move {
        let (sub, slot, shutdown) = state?;
        let delivery = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            d = sub.recv() => d,
        };
        let event = match Event::default().json_data(EventJson::new(&delivery)) {
            Ok(event) => event,
            Err(e) => {
                // Unreachable with these types; ending the stream tells the client something broke.
                AppError::internal(format!("cannot encode an event: {e}"));
                return None;
            }
        };
        if matches!(delivery, Delivery::Lagged { .. }) {
            return Some((Ok(event.event("lagged")), None));
        }
        Some((Ok(event), Some((sub, slot, shutdown))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_queries_need_exactly_one_topic_and_decode_bytes() {
        let ok = |q: &str| watch_topic(Some(q)).map_err(|e| e.body().error.message);
        assert_eq!(ok("key=a%2Fb%FF"), Ok((Topic::Key(Bytes::from_static(b"a/b\xff")), false)));
        assert_eq!(ok("prefix=user%3A&values=true"), Ok((Topic::Prefix(Bytes::from_static(b"user:")), true)));
        assert_eq!(ok("prefix="), Ok((Topic::Prefix(Bytes::new()), false)));
        assert_eq!(ok("key=a+b"), Ok((Topic::Key(Bytes::from_static(b"a+b")), false)));
        assert!(ok("key=a&prefix=b").is_err());
        assert!(ok("values=true").is_err());
        assert!(ok("key=a&values=maybe").is_err());
        assert!(ok("key=a&colour=red").is_err());
        assert!(watch_topic(None).is_err());
    }
}
