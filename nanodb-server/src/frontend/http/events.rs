//! The JSON form of change-feed deliveries, shared by the SSE routes and the WebSocket: one object
//! per key event, pub/sub message or lagged signal, tagged by `type`.
//!
//! Keys, values, channels and messages are bytes and travel like everywhere else in the REST API
//! ([`encode_bytes`]): as UTF-8 text when they are, else standard base64, with an `*encoding`
//! field saying which.

use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Encoding, encode_bytes};
use crate::feed::{Delivery, EventKind};

/// One delivery as JSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventJson {
    /// A watched key was written.
    Put(KeyEventJson),
    /// A watched key was removed by a client.
    Delete(KeyEventJson),
    /// A watched key's deadline passed.
    Expire(KeyEventJson),
    /// A message published to a subscribed channel (or one matching a subscribed pattern).
    Message(MessageJson),
    /// The subscriber fell behind: `dropped` deliveries were lost, and nothing more follows.
    Lagged(LaggedJson),
}

/// A change to a watched key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyEventJson {
    /// The key (UTF-8 text, or base64 when `key_encoding` says so).
    pub key: String,
    /// How `key` is written.
    pub key_encoding: Encoding,
    /// The new string value, when values were asked for and the change wrote a string; else null.
    pub value: Option<String>,
    /// How `value` is written (absent without a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The key's version after the change.
    pub version: u64,
    /// What the change did, by Redis's event name (`set`, `del`, `expired`, `hset`, `rpush`, ...).
    pub op: &'static str,
}

/// A pub/sub message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageJson {
    /// The channel it was published to.
    pub channel: String,
    /// How `channel` is written.
    pub channel_encoding: Encoding,
    /// The message.
    pub message: String,
    /// How `message` is written.
    pub encoding: Encoding,
    /// The pattern that matched, for pattern subscriptions (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// The lagged signal.
#[derive(Debug, Serialize, ToSchema)]
pub struct LaggedJson {
    /// How many deliveries were dropped.
    pub dropped: u64,
}

impl EventJson {
    /// The JSON form of `d`.
    pub fn new(d: &Delivery) -> Self {
        match d {
            Delivery::Key { event, .. } => {
                let (key, key_encoding) = encode_bytes(&event.key);
                let (value, encoding) = d.value().map(|v| encode_bytes(v)).unzip();
                let e = KeyEventJson {
                    key,
                    key_encoding,
                    value,
                    encoding,
                    version: event.version,
                    op: event.op.redis_name(),
                };
                match event.kind {
                    EventKind::Put => Self::Put(e),
                    EventKind::Delete => Self::Delete(e),
                    EventKind::Expire => Self::Expire(e),
                }
            }
            Delivery::Message { channel, payload, pattern } => {
                let (channel, channel_encoding) = encode_bytes(channel);
                let (message, encoding) = encode_bytes(payload);
                // Patterns are what the client sent; shown as text (lossy only for non-UTF-8 ones).
                let pattern = pattern.as_ref().map(|p| String::from_utf8_lossy(p).into_owned());
                Self::Message(MessageJson { channel, channel_encoding, message, encoding, pattern })
            }
            Delivery::Lagged { dropped } => Self::Lagged(LaggedJson { dropped: *dropped }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::feed::{KeyEvent, RedisEvent};

    fn key_event(
        kind: EventKind,
        op: RedisEvent,
        value: Option<&'static [u8]>,
        with_value: bool,
    ) -> Delivery {
        let event = KeyEvent {
            key: Bytes::from_static(b"k\xff"),
            kind,
            op,
            version: 7,
            value: value.map(Bytes::from_static),
            position: 0,
        };
        Delivery::Key { event: Arc::new(event), with_value }
    }

    fn to_json(d: &Delivery) -> serde_json::Value {
        serde_json::to_value(EventJson::new(d)).expect("serialises")
    }

    #[test]
    fn key_events_encode_bytes_and_show_values_only_when_asked() {
        let d = key_event(EventKind::Put, RedisEvent::Set, Some(b"v"), true);
        assert_eq!(
            to_json(&d),
            json!({"type": "put", "key": "a/8=", "key_encoding": "base64", "value": "v",
                   "encoding": "utf8", "version": 7, "op": "set"})
        );
        // Another subscriber asked for the value; this one did not.
        let d = key_event(EventKind::Put, RedisEvent::Set, Some(b"v"), false);
        assert_eq!(to_json(&d)["value"], serde_json::Value::Null);
        assert!(to_json(&d).get("encoding").is_none());
        let d = key_event(EventKind::Expire, RedisEvent::Expired, None, true);
        assert_eq!(
            (to_json(&d)["type"].clone(), to_json(&d)["op"].clone()),
            (json!("expire"), json!("expired"))
        );
    }

    #[test]
    fn messages_and_lagged() {
        let d = Delivery::Message {
            channel: Bytes::from_static(b"news"),
            payload: Bytes::from_static(b"hi"),
            pattern: Some(Bytes::from_static(b"n*")),
        };
        assert_eq!(
            to_json(&d),
            json!({"type": "message", "channel": "news", "channel_encoding": "utf8",
                   "message": "hi", "encoding": "utf8", "pattern": "n*"})
        );
        assert_eq!(to_json(&Delivery::Lagged { dropped: 3 }), json!({"type": "lagged", "dropped": 3}));
    }
}
