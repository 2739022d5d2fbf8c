//! The change-feed side of the binary TCP protocol (`PROTOCOL.md` section 9): the subscription
//! requests a client sends (WATCH, SUBSCRIBE and their undoings) and the frames a server pushes
//! unasked (EVENT, MESSAGE, LAGGED), with their body layouts.
//!
//! Subscriptions are connection state, not data commands: they never reach the engine as a
//! [`crate::Command`], so they are a [`crate::Request`] variant of their own. Pushes are a
//! [`crate::Response`] variant so one [`crate::ClientCodec`] reads replies and pushes from the same
//! stream; a client tells them apart by kind ([`is_push`]), never by request id.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::wire::{Reader, kind, malformed, put_bytes};

/// A subscription request: changes what this connection is pushed. Each is acknowledged with an
/// INT reply holding how many topics (keys, prefixes, channels, patterns) the connection holds
/// afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Push an EVENT for every change to `key` (or to every key starting with it, when `prefix`).
    Watch {
        /// The key, or the prefix (empty: every key).
        key: Bytes,
        /// Whether `key` is a prefix.
        prefix: bool,
        /// Whether events carry the new value (string writes only).
        with_values: bool,
    },
    /// Stop a [`Subscription::Watch`] with the same key and `prefix`.
    Unwatch {
        /// The key or prefix.
        key: Bytes,
        /// Whether `key` is a prefix.
        prefix: bool,
    },
    /// Push a MESSAGE for everything published to `channel`.
    Subscribe {
        /// The channel.
        channel: Bytes,
    },
    /// Stop a [`Subscription::Subscribe`].
    Unsubscribe {
        /// The channel.
        channel: Bytes,
    },
    /// Push a MESSAGE for everything published to a channel matching a Redis glob `pattern`.
    PSubscribe {
        /// The glob pattern (`*`, `?`, `[...]`, `\` escapes).
        pattern: Bytes,
    },
    /// Stop a [`Subscription::PSubscribe`].
    PUnsubscribe {
        /// The glob pattern.
        pattern: Bytes,
    },
}

impl Subscription {
    /// A short stable name, for statistics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Watch { .. } => "watch",
            Self::Unwatch { .. } => "unwatch",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::PSubscribe { .. } => "psubscribe",
            Self::PUnsubscribe { .. } => "punsubscribe",
        }
    }

    pub(crate) fn kind(&self) -> u8 {
        match self {
            Self::Watch { .. } => kind::WATCH,
            Self::Unwatch { .. } => kind::UNWATCH,
            Self::Subscribe { .. } => kind::SUBSCRIBE,
            Self::Unsubscribe { .. } => kind::UNSUBSCRIBE,
            Self::PSubscribe { .. } => kind::PSUBSCRIBE,
            Self::PUnsubscribe { .. } => kind::PUNSUBSCRIBE,
        }
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        match self {
            Self::Watch { key, prefix, with_values } => {
                put_bytes(dst, key);
                dst.put_u8(u8::from(*prefix));
                dst.put_u8(u8::from(*with_values));
            }
            Self::Unwatch { key, prefix } => {
                put_bytes(dst, key);
                dst.put_u8(u8::from(*prefix));
            }
            Self::Subscribe { channel } | Self::Unsubscribe { channel } => put_bytes(dst, channel),
            Self::PSubscribe { pattern } | Self::PUnsubscribe { pattern } => put_bytes(dst, pattern),
        }
    }

    /// Decodes the body of a subscription kind; `Ok(None)` when `k` is not one.
    pub(crate) fn decode_body(k: u8, r: &mut Reader) -> Result<Option<Self>, Error> {
        Ok(Some(match k {
            kind::WATCH => Self::Watch {
                key: r.bytes("key")?,
                prefix: r.bool("prefix")?,
                with_values: r.bool("values")?,
            },
            kind::UNWATCH => Self::Unwatch { key: r.bytes("key")?, prefix: r.bool("prefix")? },
            kind::SUBSCRIBE => Self::Subscribe { channel: r.bytes("channel")? },
            kind::UNSUBSCRIBE => Self::Unsubscribe { channel: r.bytes("channel")? },
            kind::PSUBSCRIBE => Self::PSubscribe { pattern: r.bytes("pattern")? },
            kind::PUNSUBSCRIBE => Self::PUnsubscribe { pattern: r.bytes("pattern")? },
            _ => return Ok(None),
        }))
    }
}

/// What happened to a watched key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Written (value, TTL, hash field, list element): the key exists after the event.
    Put = 1,
    /// Removed by a client.
    Delete = 2,
    /// Removed because its deadline passed.
    Expire = 3,
}

impl EventType {
    fn from_u8(n: u8) -> Result<Self, Error> {
        match n {
            1 => Ok(Self::Put),
            2 => Ok(Self::Delete),
            3 => Ok(Self::Expire),
            n => Err(malformed(format!("unknown event type {n}"))),
        }
    }
}

/// A frame the server sends without being asked, always with request id 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A watched key changed.
    Event {
        /// Put, delete or expire.
        kind: EventType,
        /// The finer operation, as Redis names keyspace events (`set`, `hset`, `lpush`, `del`,
        /// `expire`, `persist`, `expired`, ...). ASCII.
        op: Cow<'static, str>,
        /// The key.
        key: Bytes,
        /// The key's version after the change.
        version: u64,
        /// The new value, when the watch asked for values and the change wrote a string.
        value: Option<Bytes>,
    },
    /// A message published to a subscribed channel or a channel matching a subscribed pattern.
    Message {
        /// The channel it was published to.
        channel: Bytes,
        /// The message.
        payload: Bytes,
        /// The pattern that matched, for pattern subscriptions.
        pattern: Option<Bytes>,
    },
    /// The connection fell behind its bounded queue: `dropped` pushes were lost after the ones
    /// already sent. Every subscription of the connection has been cancelled; nothing more is
    /// pushed until the client subscribes again (and re-reads what it watches).
    Lagged {
        /// How many pushes were dropped.
        dropped: u64,
    },
}

/// Whether a frame kind is a push rather than a reply to a request.
pub fn is_push(k: u8) -> bool {
    (kind::P_FIRST..=kind::P_LAST).contains(&k)
}

impl Push {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Self::Event { .. } => kind::P_EVENT,
            Self::Message { .. } => kind::P_MESSAGE,
            Self::Lagged { .. } => kind::P_LAGGED,
        }
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        match self {
            Self::Event { kind, op, key, version, value } => {
                dst.put_u8(*kind as u8);
                put_bytes(dst, op.as_bytes());
                put_bytes(dst, key);
                dst.put_u64(*version);
                put_optional(dst, value.as_ref());
            }
            Self::Message { channel, payload, pattern } => {
                put_bytes(dst, channel);
                put_bytes(dst, payload);
                put_optional(dst, pattern.as_ref());
            }
            Self::Lagged { dropped } => dst.put_u64(*dropped),
        }
    }

    /// Decodes the body of a push kind; `Ok(None)` when `k` is not one.
    pub(crate) fn decode_body(k: u8, r: &mut Reader) -> Result<Option<Self>, Error> {
        Ok(Some(match k {
            kind::P_EVENT => {
                let kind = EventType::from_u8(r.u8("event type")?)?;
                let op = r.bytes("op")?;
                if !op.is_ascii() {
                    return Err(malformed("event op must be ASCII"));
                }
                Self::Event {
                    kind,
                    op: Cow::Owned(String::from_utf8_lossy(&op).into_owned()),
                    key: r.bytes("key")?,
                    version: r.u64("version")?,
                    value: optional(r, "value")?,
                }
            }
            kind::P_MESSAGE => Self::Message {
                channel: r.bytes("channel")?,
                payload: r.bytes("payload")?,
                pattern: optional(r, "pattern")?,
            },
            kind::P_LAGGED => Self::Lagged { dropped: r.u64("dropped")? },
            _ => return Ok(None),
        }))
    }
}

fn put_optional(dst: &mut BytesMut, b: Option<&Bytes>) {
    match b {
        Some(b) => {
            dst.put_u8(1);
            put_bytes(dst, b);
        }
        None => dst.put_u8(0),
    }
}

fn optional(r: &mut Reader, what: &str) -> Result<Option<Bytes>, Error> {
    Ok(if r.bool(what)? { Some(r.bytes(what)?) } else { None })
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;
    use crate::wire::{Request, Response, decode_request, decode_response, encode_request, encode_response};
    use crate::{ClientCodec, ServerCodec};

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn subscriptions() -> Vec<Subscription> {
        vec![
            Subscription::Watch { key: b("k"), prefix: false, with_values: true },
            Subscription::Watch { key: Bytes::new(), prefix: true, with_values: false },
            Subscription::Unwatch { key: b("user:"), prefix: true },
            Subscription::Subscribe { channel: b("news") },
            Subscription::Unsubscribe { channel: b("news") },
            Subscription::PSubscribe { pattern: b("n*") },
            Subscription::PUnsubscribe { pattern: b("n*") },
        ]
    }

    fn pushes() -> Vec<Push> {
        vec![
            Push::Event {
                kind: EventType::Put,
                op: Cow::Borrowed("set"),
                key: b("k"),
                version: 7,
                value: Some(Bytes::from_static(b"\x00\xff")),
            },
            Push::Event {
                kind: EventType::Put,
                op: Cow::Borrowed("set"),
                key: b("k"),
                version: 8,
                value: Some(Bytes::new()),
            },
            Push::Event {
                kind: EventType::Delete,
                op: Cow::Borrowed("del"),
                key: b("k"),
                version: 9,
                value: None,
            },
            Push::Event {
                kind: EventType::Expire,
                op: Cow::Borrowed("expired"),
                key: b("k"),
                version: 10,
                value: None,
            },
            Push::Message { channel: b("news"), payload: b("hi"), pattern: None },
            Push::Message { channel: b("news"), payload: Bytes::new(), pattern: Some(b("n*")) },
            Push::Lagged { dropped: u64::MAX },
        ]
    }

    #[test]
    fn every_subscription_round_trips_through_both_codecs() {
        let mut client = ClientCodec::default();
        let mut server = ServerCodec::default();
        let mut buf = BytesMut::new();
        for (i, s) in subscriptions().into_iter().enumerate() {
            client.encode((i as u32, Request::Subscription(s.clone())), &mut buf).expect("encode");
            let (id, got) = server.decode(&mut buf).expect("decode").expect("frame");
            assert_eq!((id, got), (i as u32, Ok(Request::Subscription(s))));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn every_push_round_trips_and_the_client_codec_reads_it() {
        let mut server = ServerCodec::default();
        let mut client = ClientCodec::default();
        let mut buf = BytesMut::new();
        for p in pushes() {
            server.encode((0, Response::Push(p.clone())), &mut buf).expect("encode");
            assert!(is_push(buf[4]), "kind 0x{:02x} is in the push range", buf[4]);
            let (id, got) = client.decode(&mut buf).expect("decode").expect("frame");
            assert_eq!((id, got), (0, Response::Push(p)));
        }
        assert!(!is_push(kind::R_INT) && !is_push(kind::R_ERROR) && !is_push(kind::PUBLISH));
    }

    #[test]
    fn malformed_subscription_bodies_are_clear_errors() {
        let cases: Vec<(u8, &[u8], &str)> = vec![
            (kind::WATCH, b"\x00\x00\x00\x01k\x00", "truncated"),
            (kind::WATCH, b"\x00\x00\x00\x01k\x02\x00", "prefix must be 0 or 1"),
            (kind::UNWATCH, b"\x00\x00\x00\x01k\x00\x00", "trailing"),
            (kind::SUBSCRIBE, b"\x00\x00\x00\x09abc", "truncated"),
            (kind::PSUBSCRIBE, b"", "truncated"),
        ];
        for (k, body, want) in cases {
            match decode_request(k, Bytes::copy_from_slice(body)) {
                Err(Error::Malformed(m)) => assert!(m.contains(want), "0x{k:02x}: {m:?} lacks {want:?}"),
                other => panic!("0x{k:02x} {body:?}: expected Malformed, got {other:?}"),
            }
        }
        // A subscription is connection state: it cannot ride inside a BATCH.
        let mut body = BytesMut::new();
        body.put_u32(1);
        body.put_u8(kind::SUBSCRIBE);
        put_bytes(&mut body, b"c");
        assert!(matches!(decode_request(kind::BATCH, body.freeze()), Err(Error::Malformed(_))));
    }

    #[test]
    fn malformed_push_bodies_are_clear_errors() {
        let mut event = BytesMut::new();
        event.put_u8(4); // no such event type
        put_bytes(&mut event, b"set");
        put_bytes(&mut event, b"k");
        event.put_u64(1);
        event.put_u8(0);
        let err = decode_response(kind::P_EVENT, event.clone().freeze()).expect_err("bad type");
        assert!(err.to_string().contains("unknown event type 4"), "{err}");
        event[0] = 1;
        event[5] = 0xff; // a non-ASCII byte in the op name
        let err = decode_response(kind::P_EVENT, event.freeze()).expect_err("bad op");
        assert!(err.to_string().contains("ASCII"), "{err}");
        let err = decode_response(kind::P_LAGGED, Bytes::from_static(&[0; 7])).expect_err("short");
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut msg = BytesMut::new();
        put_bytes(&mut msg, b"c");
        put_bytes(&mut msg, b"m");
        msg.put_u8(1); // claims a pattern, has none
        assert!(decode_response(kind::P_MESSAGE, msg.freeze()).is_err());
        // A push is never a batch result.
        let mut batch = BytesMut::new();
        batch.put_u32(1);
        batch.put_u8(kind::P_LAGGED);
        batch.put_u64(1);
        assert!(decode_response(kind::R_BATCH, batch.freeze()).is_err());
    }

    #[test]
    fn a_push_between_replies_keeps_each_frame_whole() {
        let mut buf = BytesMut::new();
        encode_response(1, &Response::Reply(crate::Reply::Int(1)), &mut buf);
        encode_response(0, &Response::Push(Push::Lagged { dropped: 3 }), &mut buf);
        encode_request(2, &Request::Subscription(Subscription::Subscribe { channel: b("c") }), &mut buf)
            .expect("encodes");
        let mut client = ClientCodec::default();
        assert_eq!(client.decode(&mut buf).expect("ok"), Some((1, Response::Reply(crate::Reply::Int(1)))));
        assert_eq!(
            client.decode(&mut buf).expect("ok"),
            Some((0, Response::Push(Push::Lagged { dropped: 3 })))
        );
        assert_eq!(buf.get_u32() as usize, buf.remaining());
    }
}
