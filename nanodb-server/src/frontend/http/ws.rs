//! `GET /v1/ws`: one WebSocket per client carrying watch and pub/sub commands as JSON text
//! messages, answered with JSON acks or errors, with the client's key events and messages pushed
//! on the same socket (the JSON of [`EventJson`]).
//!
//! A socket holds one change-feed subscriber for all its topics. The ack to `watch`, `subscribe`
//! and `psubscribe` is the ready signal: it is sent after the topic is registered, so every change
//! applied once the client has it is delivered, and no event of the new topic precedes it (the
//! socket's loop sends the ack before it polls the queue again). Incoming messages are bounded
//! (tungstenite refuses a frame or message over the JSON body limit before reading it); bad JSON
//! or a refused command is an error message, not a closed socket. The server closes with a close
//! frame: 1013 after the `lagged` event, 1001 at shutdown, 1009 for an oversized message.

use nanodb_protocol::cmd;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::SinkExt;
use nanodb_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::Call;
use super::error::{AppError, ErrorBody};
use super::events::EventJson;
use super::extract::{Encoding, decode_bytes};
use crate::feed::{Delivery, Subscriber, Topic};
use crate::stats::Protocol;

/// Most queued deliveries written before the socket is flushed and incoming commands get a turn.
const BATCH: usize = 256;

/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a client may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum WsOp {
    /// Watch a key or a prefix (`key` or `prefix`; `values` to include values).
    Watch,
    /// Stop watching a key or a prefix; neither: every key and prefix.
    Unwatch,
    /// Subscribe to a channel.
    Subscribe,
    /// Subscribe to the channels matching a glob pattern.
    Psubscribe,
    /// Unsubscribe from a channel or a pattern; neither: from every channel and pattern.
    Unsubscribe,
    /// Publish `message` to `channel`.
    Publish,
}

impl WsOp {
    fn name(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::Unwatch => "unwatch",
            Self::Subscribe => "subscribe",
            Self::Psubscribe => "psubscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::Publish => "publish",
        }
    }
}

/// One command, e.g. `{"op":"watch","prefix":"user:","values":true,"id":1}`.
#[derive(Debug, Deserialize)]
struct Request {
    op: WsOp,
    key: Option<String>,
    prefix: Option<String>,
    channel: Option<String>,
    pattern: Option<String>,
    message: Option<String>,
    #[serde(default)]
    values: bool,
    /// How `key`, `prefix`, `channel`, `pattern` and `message` are written.
    #[serde(default)]
    encoding: Encoding,
}

/// The answer to a command, echoing its `id`.
#[derive(Debug, Serialize)]
struct Ack {
    r#type: &'static str,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<serde_json::Value>,
    /// Watch/subscribe: whether the topic is new; unwatch/unsubscribe: whether it was held.
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// Topics this socket holds now.
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<usize>,
    /// Publish: how many subscriptions received the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    receivers: Option<u64>,
}

/// A refused command: the REST error body, plus the command's op and id.
#[derive(Debug, Serialize)]
struct Refusal {
    r#type: &'static str,
    op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<serde_json::Value>,
    #[serde(flatten)]
    body: ErrorBody,
}

/// Upgrades to a WebSocket carrying watch and pub/sub commands as JSON.
#[utoipa::path(get, path = "/v1/ws", tag = "watch",
    responses(
        (status = 101, description = "Switched to a WebSocket: send JSON text messages {\"op\": \"watch\"|\"unwatch\"|\"subscribe\"|\"psubscribe\"|\"unsubscribe\"|\"publish\", ...}; receive acks, errors and events as JSON"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
        (status = 503, description = "Too many open event streams (max_streams)", body = ErrorBody),
    ))]
pub async fn ws(s: Call, upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(r) => {
            return AppError::with_status(r.status(), ErrorCode::InvalidArgument, r.body_text())
                .into_response();
        }
    };
    let (sub, slot) = match s.open_stream(&s, "ws", []) {
        Ok(opened) => opened,
        Err(e) => return e.into_response(),
    };
    // The upgraded socket is no longer hyper's: the tracker tokens make shutdown wait for its
    // close frame, and keep the event loop it runs on up until then.
    let tracked = (s.ctx.tasks.token(), s.upgraded.token());
    let limit = s.body_limit;
    upgrade.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| async move {
        run(&s, socket, sub).await;
        drop((slot, tracked));
    })
}

/// Serves one socket until the client leaves, the subscriber lags, or the server shuts down.
async fn run(s: &Call, mut socket: WebSocket, mut sub: Subscriber) {
    let shutdown = s.ctx.shutdown.clone();
    let close = loop {
        // Unbiased: a client flooding commands must not starve its events, nor a flood of events
        // its commands (an unwatch must get through).
        tokio::select! {
            () = shutdown.cancelled() => break Some((close_code::AWAY, "server shutting down")),
            incoming = socket.recv() => {
                let text = match incoming {
                    None => break None,
                    Some(Err(e)) => {
                        debug!(error = %e, "http: websocket read failed");
                        break Some((close_code::SIZE, "message too large or malformed"));
                    }
                    Some(Ok(Message::Text(t))) => Bytes::from(t),
                    Some(Ok(Message::Binary(b))) => b,
                    // Pings are answered by tungstenite; a close is answered on the next read.
                    Some(Ok(_)) => continue,
                };
                let reply = handle(s, &mut sub, &text).await;
                let sent = tokio::select! {
                    () = shutdown.cancelled() => break Some((close_code::AWAY, "server shutting down")),
                    r = socket.send(Message::text(reply)) => r,
                };
                if sent.is_err() {
                    break None;
                }
            }
            first = sub.recv() => {
                let (batch, lagged) = drain(&sub, first);
                let sent = tokio::select! {
                    () = shutdown.cancelled() => break Some((close_code::AWAY, "server shutting down")),
                    r = write_all(&mut socket, batch) => r,
                };
                if sent.is_err() {
                    break None;
                }
                if lagged {
                    break Some((close_code::AGAIN, "lagged: events were dropped; resync and reconnect"));
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        // Bounded: a client that stopped reading must not hold shutdown up.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if socket.send(frame).await.is_ok() {
                while let Some(Ok(_)) = socket.recv().await {}
            }
        })
        .await;
    }
}

/// `first` and up to [`BATCH`] more queued deliveries as JSON, and whether the last is `lagged`.
fn drain(sub: &Subscriber, first: Delivery) -> (Vec<String>, bool) {
    let mut batch = Vec::new();
    let mut next = Some(first);
    while let Some(d) = next {
        match serde_json::to_string(&EventJson::new(&d)) {
            Ok(json) => batch.push(json),
            Err(e) => drop(AppError::internal(format!("cannot encode an event: {e}"))),
        }
        if matches!(d, Delivery::Lagged { .. }) {
            return (batch, true);
        }
        next = if batch.len() < BATCH { sub.try_recv() } else { None };
    }
    (batch, false)
}

async fn write_all(socket: &mut WebSocket, batch: Vec<String>) -> Result<(), axum::Error> {
    for json in batch {
        socket.feed(Message::text(json)).await?;
    }
    socket.flush().await
}

/// Applies one command and returns its JSON answer.
async fn handle(s: &Call, sub: &mut Subscriber, text: &[u8]) -> String {
    let started = Instant::now();
    let (op, id, result) = match serde_json::from_slice::<serde_json::Value>(text) {
        Err(e) => (None, None, Err(AppError::malformed(format!("message is not JSON: {e}")))),
        Ok(mut v) => {
            let id = v.as_object_mut().and_then(|o| o.remove("id"));
            match serde_json::from_value::<Request>(v) {
                Err(e) => {
                    (None, id, Err(AppError::malformed(format!("not a NanoDB WebSocket command: {e}"))))
                }
                Ok(req) => {
                    let op = req.op;
                    let result = run_request(s, sub, req).await;
                    // Publish is recorded by the engine path; the subscription ops here.
                    if op != WsOp::Publish {
                        s.ctx.stats.record(Protocol::Http, op.name(), result.is_ok(), started.elapsed());
                    }
                    (Some(op), id, result)
                }
            }
        }
    };
    let json = match result {
        Ok(mut ack) => {
            ack.id = id;
            serde_json::to_string(&ack)
        }
        Err(e) => {
            serde_json::to_string(&Refusal { r#type: "error", op: op.map(WsOp::name), id, body: e.body() })
        }
    };
    json.unwrap_or_else(|e| {
        drop(AppError::internal(format!("cannot encode an answer: {e}")));
        r#"{"type":"error","error":{"code":"INTERNAL","message":"internal error"}}"#.to_owned()
    })
}

fn ack(op: WsOp) -> Ack {
    Ack { r#type: "ack", op: op.name(), id: None, changed: None, topics: None, receivers: None }
}

async fn run_request(s: &Call, sub: &mut Subscriber, req: Request) -> Result<Ack, AppError> {
    let op = req.op;
    let bytes = |field: &Option<String>, what: &str| -> Result<Option<Bytes>, AppError> {
        field.as_deref().map(|f| decode_bytes(f, req.encoding, what)).transpose()
    };
    let need = |field: &Option<String>, what: &str| -> Result<Bytes, AppError> {
        bytes(field, what)?.ok_or_else(|| AppError::invalid(format!("{} needs {what}", op.name())))
    };
    // At most one of two topic fields.
    let one_of =
        |a: Option<Bytes>, b: Option<Bytes>, ta: fn(Bytes) -> Topic, tb: fn(Bytes) -> Topic| match (a, b) {
            (Some(a), None) => Ok(Some(ta(a))),
            (None, Some(b)) => Ok(Some(tb(b))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(AppError::invalid(format!("{}: give one topic, not two", op.name()))),
        };
    let key_topic =
        || one_of(bytes(&req.key, "key")?, bytes(&req.prefix, "prefix")?, Topic::Key, Topic::Prefix);
    let changed = match op {
        WsOp::Watch => {
            let topic = key_topic()?.ok_or_else(|| AppError::invalid("watch needs key or prefix"))?;
            s.authorize_topic(&topic)?;
            sub.add(topic, req.values)?
        }
        WsOp::Subscribe | WsOp::Psubscribe => {
            let topic = match op {
                WsOp::Subscribe => Topic::Channel(need(&req.channel, "channel")?),
                _ => Topic::Pattern(need(&req.pattern, "pattern")?),
            };
            s.authorize_topic(&topic)?;
            sub.add(topic, false)?
        }
        WsOp::Unwatch => remove(sub, key_topic()?, |t| matches!(t, Topic::Key(_) | Topic::Prefix(_))),
        WsOp::Unsubscribe => {
            let topic = one_of(
                bytes(&req.channel, "channel")?,
                bytes(&req.pattern, "pattern")?,
                Topic::Channel,
                Topic::Pattern,
            )?;
            remove(sub, topic, |t| matches!(t, Topic::Channel(_) | Topic::Pattern(_)))
        }
        WsOp::Publish => {
            let channel = need(&req.channel, "channel")?;
            let message = bytes(&req.message, "message")?.unwrap_or_default();
            let receivers = s.exec(cmd::Publish { channel, message }).await?.max(0).unsigned_abs();
            return Ok(Ack { receivers: Some(receivers), ..ack(op) });
        }
    };
    Ok(Ack { changed: Some(changed), topics: Some(sub.len()), ..ack(op) })
}

/// Removes `topic`, or with none every topic `of_kind`; returns whether anything was held.
fn remove(sub: &mut Subscriber, topic: Option<Topic>, of_kind: fn(&Topic) -> bool) -> bool {
    match topic {
        Some(t) => sub.remove(&t),
        None => {
            let all: Vec<Topic> = sub.topics().filter(|t| of_kind(t)).cloned().collect();
            all.iter().fold(false, |any, t| sub.remove(t) | any)
        }
    }
}
