//! One binary-protocol connection's change-feed state: the [`Subscriber`] its WATCH and SUBSCRIBE
//! frames fill, and the translation of its deliveries into pushed frames (`PROTOCOL.md` section 9).
//!
//! A connection holds a subscriber only while it holds topics: the last UNWATCH/UNSUBSCRIBE, a
//! LAGGED signal or the connection's end drops it, which unregisters everything and frees its
//! queue. Order on the wire: the reply to a WATCH/SUBSCRIBE goes out before any push it causes; the
//! pushes already queued when an UNWATCH/UNSUBSCRIBE is applied go out before its reply, so none
//! for that topic follows the acknowledgement; and deliveries are written in queue order, which
//! the hub keeps per key.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use nanodb_protocol::{Error, EventType, Push, Reply, Response, Subscription};

use super::io::Replies;
use crate::feed::{Delivery, EventKind, Hub, Subscriber, Topic};
use crate::frontend::Context;
use crate::stats::Protocol;

/// The subscriptions of one connection.
#[derive(Debug)]
pub(super) struct Feed {
    hub: Arc<Hub>,
    sub: Option<Subscriber>,
}

impl Feed {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Self { hub, sub: None }
    }

    /// Whether the connection watches or subscribes to anything (then it is never idle).
    pub(super) fn is_subscribed(&self) -> bool {
        self.sub.is_some()
    }

    /// The next delivery; never resolves while the connection subscribes to nothing, so the
    /// connection loop can always select on it.
    pub(super) async fn recv(&self) -> Delivery {
        match &self.sub {
            Some(sub) => sub.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Applies one subscription request, records it, and appends its reply (and, for the
    /// undoings, the pushes queued before it) to `out`.
    pub(super) async fn handle<R: Replies>(&mut self, ctx: &Context, id: u32, op: Subscription, out: &mut R) {
        let started = Instant::now();
        let name = op.name();
        let result = self.change(op, out).await;
        ctx.stats.record(Protocol::Tcp, name, result.is_ok(), started.elapsed());
        out.reply(id, Response::from(result), 0);
    }

    async fn change<R: Replies>(&mut self, op: Subscription, out: &mut R) -> Result<Reply, Error> {
        let (topic, with_values, add) = match op {
            Subscription::Watch { key, prefix, with_values } => (watch_topic(key, prefix), with_values, true),
            Subscription::Subscribe { channel } => (Topic::Channel(channel), false, true),
            Subscription::PSubscribe { pattern } => (Topic::Pattern(pattern), false, true),
            Subscription::Unwatch { key, prefix } => (watch_topic(key, prefix), false, false),
            Subscription::Unsubscribe { channel } => (Topic::Channel(channel), false, false),
            Subscription::PUnsubscribe { pattern } => (Topic::Pattern(pattern), false, false),
        };
        let result = if add {
            let hub = &self.hub;
            self.sub.get_or_insert_with(|| hub.subscriber()).add(topic, with_values).map(drop)
        } else {
            if let Some(sub) = &mut self.sub {
                // After `remove` returns, the hub delivers nothing more for the topic: what it
                // delivered before is in the queue (bounded by its limits), and goes out ahead
                // of the acknowledgement.
                sub.remove(&topic);
                self.drain_owed(out).await;
            }
            Ok(())
        };
        if self.sub.as_ref().is_some_and(Subscriber::is_empty) {
            self.sub = None;
        }
        result.map(|()| Reply::Int(self.topics() as i64))
    }

    /// Topics held (the count every subscription reply carries).
    fn topics(&self) -> usize {
        self.sub.as_ref().map_or(0, Subscriber::len)
    }

    /// Appends every delivery queued now to `out` as pushes, then the lagged signal if the queue
    /// overflowed. With persistence on, a key event whose write is not durable yet is waited for
    /// (this batch's replies wait for the log anyway) rather than skipped: skipping it would let
    /// it follow the acknowledgement, or lose it with the subscriber.
    async fn drain_owed<R: Replies>(&mut self, out: &mut R) {
        let queued = self.sub.as_ref().map_or(0, Subscriber::pending);
        for _ in 0..queued {
            let Some(sub) = &self.sub else { break };
            // Resolves: at least `queued - done` deliveries are waiting and nothing else reads them.
            let d = sub.recv().await;
            out.reply(0, self.push(&d), 0);
        }
        self.drain(out, 1);
    }

    /// Appends up to `max` waiting deliveries to `out` as pushes.
    pub(super) fn drain<R: Replies>(&mut self, out: &mut R, max: usize) {
        for _ in 0..max {
            let Some(d) = self.sub.as_ref().and_then(Subscriber::try_recv) else { break };
            out.reply(0, self.push(&d), 0);
        }
    }

    /// The push for one delivery (sent with id 0, waiting for nothing). The lagged signal also
    /// drops the subscriber: every subscription is cancelled and its queue freed, and the
    /// client subscribes again.
    pub(super) fn push(&mut self, d: &Delivery) -> Response {
        if matches!(d, Delivery::Lagged { .. }) {
            self.sub = None;
        }
        Response::Push(to_push(d))
    }
}

fn watch_topic(key: bytes::Bytes, prefix: bool) -> Topic {
    if prefix { Topic::Prefix(key) } else { Topic::Key(key) }
}

fn to_push(d: &Delivery) -> Push {
    match d {
        Delivery::Key { event, .. } => Push::Event {
            kind: match event.kind {
                EventKind::Put => EventType::Put,
                EventKind::Delete => EventType::Delete,
                EventKind::Expire => EventType::Expire,
            },
            op: Cow::Borrowed(event.op.redis_name()),
            key: event.key.clone(),
            version: event.version,
            value: d.value().cloned(),
        },
        Delivery::Message { channel, payload, pattern } => {
            Push::Message { channel: channel.clone(), payload: payload.clone(), pattern: pattern.clone() }
        }
        Delivery::Lagged { dropped } => Push::Lagged { dropped: *dropped },
    }
}
