//! The streaming RPCs: `Watch` and `Subscribe` turn a change-feed [`Subscriber`] into a response
//! stream. A stream ends when the client goes away (the subscriber is dropped with it, which
//! unsubscribes), when the server shuts down (so draining is not held up by open streams), or
//! after a final lagged event when the client fell behind. Open streams outlive their request
//! (the in-flight limit counts only until the response headers), so they are bounded apart, by
//! `max_streams`, as the REST event streams are.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::Stream;
use nanodb_protocol::pb;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert::status;
use crate::auth::{Caller, Need};
use crate::feed::{Delivery, EventKind, Subscriber, Topic};
use crate::frontend::Context;

/// A server-streaming response.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The count of open streams, shared by every clone of the service.
#[derive(Debug, Clone, Default)]
pub struct Streams(Arc<AtomicUsize>);

/// One open stream's place among the `max_streams` allowed; given back on drop.
#[derive(Debug)]
struct StreamPlace(Arc<AtomicUsize>);

impl Streams {
    fn take(&self, max: usize) -> Result<StreamPlace, Status> {
        if self.0.fetch_add(1, Ordering::Relaxed) >= max {
            self.0.fetch_sub(1, Ordering::Relaxed);
            return Err(status(&nanodb_protocol::Error::Busy));
        }
        Ok(StreamPlace(self.0.clone()))
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a `Watch` stream: registration happens before the RPC returns, so every change applied
/// after the client receives the response headers is delivered.
pub fn watch(
    ctx: &Context,
    caller: &Caller,
    streams: &Streams,
    req: pb::WatchRequest,
) -> Result<EventStream<pb::WatchEvent>, Status> {
    let topic = if req.prefix { Topic::Prefix(req.key) } else { Topic::Key(req.key) };
    ctx.authorize(caller, Need::of_topic(&topic)).map_err(|e| status(&e))?;
    let place = streams.take(ctx.config.max_streams)?;
    let mut sub = ctx.feed.subscriber();
    sub.add(topic, req.include_values).map_err(|e| status(&e))?;
    Ok(stream(sub, place, ctx.shutdown.clone(), watch_event))
}

/// Starts a `Subscribe` stream over channels and channel patterns.
pub fn subscribe(
    ctx: &Context,
    caller: &Caller,
    streams: &Streams,
    req: pb::SubscribeRequest,
) -> Result<EventStream<pb::SubscribeMessage>, Status> {
    if req.channels.is_empty() && req.patterns.is_empty() {
        return Err(status(&nanodb_protocol::Error::InvalidArgument(
            "subscribe needs at least one channel or pattern".into(),
        )));
    }
    let topics: Vec<Topic> = req
        .channels
        .into_iter()
        .map(Topic::Channel)
        .chain(req.patterns.into_iter().map(Topic::Pattern))
        .collect();
    for topic in &topics {
        ctx.authorize(caller, Need::of_topic(topic)).map_err(|e| status(&e))?;
    }
    let place = streams.take(ctx.config.max_streams)?;
    let mut sub = ctx.feed.subscriber();
    for topic in topics {
        sub.add(topic, false).map_err(|e| status(&e))?;
    }
    Ok(stream(sub, place, ctx.shutdown.clone(), subscribe_message))
}

/// Deliveries as a stream of `T`, ending at shutdown or after the lagged signal. The stream place is
/// held (and released) with the stream.
fn stream<T: Send + 'static>(
    sub: Subscriber,
    place: StreamPlace,
    shutdown: CancellationToken,
    encode: fn(&Delivery) -> Option<T>,
) -> EventStream<T> {
    Box::pin(futures::stream::unfold(Some((sub, place, shutdown)), move |state| async move {
        let (sub, place, shutdown) = state?;
        loop {
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                d = sub.recv() => d,
            };
            let last = matches!(delivery, Delivery::Lagged { .. });
            if let Some(item) = encode(&delivery) {
                let next = if last { None } else { Some((sub, place, shutdown)) };
                return Some((Ok(item), next));
            }
            if last {
                return None;
            }
        }
    }))
}

fn watch_event(d: &Delivery) -> Option<pb::WatchEvent> {
    match d {
        Delivery::Key { event, .. } => {
            let value = d.value();
            let kind = match event.kind {
                EventKind::Put => pb::WatchEventType::Put,
                EventKind::Delete => pb::WatchEventType::Delete,
                EventKind::Expire => pb::WatchEventType::Expire,
            };
            Some(pb::WatchEvent {
                r#type: kind as i32,
                key: event.key.clone(),
                value: value.cloned().unwrap_or_default(),
                has_value: value.is_some(),
                version: event.version,
                op: event.op.redis_name().into(),
                dropped: 0,
            })
        }
        Delivery::Lagged { dropped } => Some(pb::WatchEvent {
            r#type: pb::WatchEventType::Lagged as i32,
            dropped: *dropped,
            ..Default::default()
        }),
        Delivery::Message { .. } => None,
    }
}

fn subscribe_message(d: &Delivery) -> Option<pb::SubscribeMessage> {
    match d {
        Delivery::Message { channel, payload, pattern } => Some(pb::SubscribeMessage {
            channel: channel.clone(),
            message: payload.clone(),
            pattern: pattern.clone().unwrap_or_default(),
            lagged_dropped: 0,
        }),
        Delivery::Lagged { dropped } => {
            Some(pb::SubscribeMessage { lagged_dropped: *dropped, ..Default::default() })
        }
        Delivery::Key { .. } => None,
    }
}
