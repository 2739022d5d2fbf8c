//! Pub/sub commands (SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB) and the
//! encoding of what the change feed pushes (`message` / `pmessage`), in Redis 7's RESP2 shapes.
//!
//! A connection holds one feed [`Subscriber`] while it has at least one channel or pattern (that
//! is Redis's "subscribed mode"); the last unsubscribe drops it, which frees its registrations.
//! The connection loop reads the subscriber's queue; these handlers only change the topics.

use nanodb_protocol::cmd;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Flow, Outcome, Reject, Session, is, run};
use crate::auth::Need;
use crate::feed::{Delivery, Subscriber, Topic};
use crate::frontend::Context;
use crate::frontend::resp::encode;
use crate::stats::Protocol;

const DONE: Outcome = Ok(Flow::Continue);

/// Commands a RESP2 connection in subscribed mode may run, as in Redis (`ssubscribe` and
/// `sunsubscribe` are not implemented, so they are unknown commands before this check).
pub const ALLOWED_WHEN_SUBSCRIBED: &[&str] =
    &["ping", "psubscribe", "punsubscribe", "quit", "reset", "subscribe", "unsubscribe"];

/// Channels or patterns: the two kinds of pub/sub topic, and the words Redis confirms them with.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Channel,
    Pattern,
}

impl Kind {
    fn topic(self, b: &Bytes) -> Topic {
        match self {
            Self::Channel => Topic::Channel(b.clone()),
            Self::Pattern => Topic::Pattern(b.clone()),
        }
    }

    fn subscribe_word(self) -> &'static [u8] {
        match self {
            Self::Channel => b"subscribe",
            Self::Pattern => b"psubscribe",
        }
    }

    fn unsubscribe_word(self) -> &'static [u8] {
        match self {
            Self::Channel => b"unsubscribe",
            Self::Pattern => b"punsubscribe",
        }
    }

    /// The subscribe command's name, for stats.
    fn subscribe_name(self) -> &'static str {
        match self {
            Self::Channel => "subscribe",
            Self::Pattern => "psubscribe",
        }
    }

    /// The unsubscribe command's name, for stats.
    fn unsubscribe_name(self) -> &'static str {
        match self {
            Self::Channel => "unsubscribe",
            Self::Pattern => "punsubscribe",
        }
    }

    fn holds(self, topic: &Topic) -> bool {
        matches!((self, topic), (Self::Channel, Topic::Channel(_)) | (Self::Pattern, Topic::Pattern(_)))
    }
}

/// `*3 <word> <name or nil> :<count>`: a (un)subscribe confirmation.
fn confirm(out: &mut BytesMut, word: &[u8], name: Option<&[u8]>, count: usize) {
    encode::array(out, 3);
    encode::bulk(out, word);
    encode::opt_bulk(out, name);
    encode::int(out, count as i64);
}

/// SUBSCRIBE channel [channel ...]
pub fn subscribe(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    add(ctx, session, &args[1..], out, Kind::Channel)
}

/// PSUBSCRIBE pattern [pattern ...]
pub fn psubscribe(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    add(ctx, session, &args[1..], out, Kind::Pattern)
}

/// UNSUBSCRIBE [channel ...]
pub fn unsubscribe(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    remove(ctx, session, &args[1..], out, Kind::Channel)
}

/// PUNSUBSCRIBE [pattern ...]
pub fn punsubscribe(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    remove(ctx, session, &args[1..], out, Kind::Pattern)
}

/// Subscribes to each name in turn, confirming each with the running count. A name the hub
/// refuses (too long, too many topics) ends the command with an error after the confirmations
/// already written; what was subscribed stays subscribed.
fn add(ctx: &Context, session: &mut Session<'_>, names: &[Bytes], out: &mut BytesMut, kind: Kind) -> Outcome {
    let started = Instant::now();
    // Every channel (or pattern) is permitted before any is subscribed, as Redis checks.
    for name in names {
        let need = match kind {
            Kind::Channel => Need::Subscribe(name),
            Kind::Pattern => Need::PSubscribe(name),
        };
        if let Err(e) = ctx.authorize(&session.caller, need) {
            ctx.stats.record(Protocol::Resp, kind.subscribe_name(), false, started.elapsed());
            return Err(Reject::Engine(e));
        }
    }
    let mut result = DONE;
    for name in names {
        let sub = session.sub.get_or_insert_with(|| ctx.feed.subscriber());
        match sub.add(kind.topic(name), false) {
            Ok(_) => confirm(out, kind.subscribe_word(), Some(name), session.subscriptions()),
            Err(e) => {
                result = Err(Reject::Engine(e));
                break;
            }
        }
    }
    if session.subscriptions() == 0 {
        session.sub = None;
    }
    show(session);
    ctx.stats.record(Protocol::Resp, kind.subscribe_name(), result.is_ok(), started.elapsed());
    result
}

/// Unsubscribes from each name (or, with none, from every held topic of this kind), confirming
/// each with the running count; with nothing to unsubscribe from, one confirmation with a nil
/// name and the count, as Redis replies. Reaching zero leaves subscribed mode: deliveries already
/// queued are written first, then the subscriber is dropped.
fn remove(
    ctx: &Context,
    session: &mut Session<'_>,
    names: &[Bytes],
    out: &mut BytesMut,
    kind: Kind,
) -> Outcome {
    let started = Instant::now();
    let word = kind.unsubscribe_word();
    let topics: Vec<Topic> = if names.is_empty() {
        session
            .sub
            .as_ref()
            .map_or_else(Vec::new, |s| s.topics().filter(|t| kind.holds(t)).cloned().collect())
    } else {
        names.iter().map(|n| kind.topic(n)).collect()
    };
    if topics.is_empty() {
        confirm(out, word, None, session.subscriptions());
    }
    let mut lagged = false;
    for topic in &topics {
        if let Some(sub) = &mut session.sub {
            sub.remove(topic);
        }
        // Messages delivered before the topic was removed are still owed to the client, and go
        // out before its confirmation: none for the topic may follow it, and after a count of 0
        // the client reads everything as replies again.
        if let Some(sub) = &session.sub {
            lagged |= drain(sub, out, usize::MAX).is_err();
        }
        let (Topic::Channel(name) | Topic::Pattern(name) | Topic::Key(name) | Topic::Prefix(name)) = topic;
        confirm(out, word, Some(name), session.subscriptions());
    }
    if session.subscriptions() == 0 {
        // A lag here needs no close: the subscriber is going away and the client asked for that.
        session.sub = None;
        lagged = false;
    }
    show(session);
    ctx.stats.record(Protocol::Resp, kind.unsubscribe_name(), true, started.elapsed());
    if lagged {
        // The lagged signal was consumed here, so the connection loop would never see it: the
        // subscriber would stay registered and silently receive nothing more. Close, as any lag does.
        tracing::warn!(peer = %session.addr, "resp: closing a subscriber that fell behind; deliveries were dropped");
        return Ok(Flow::Close);
    }
    DONE
}

/// Shows the connection's counts in CLIENT LIST.
fn show(session: &Session<'_>) {
    session.clients.set_subscriptions(session.id, session.channels(), session.patterns());
}

/// PUBLISH channel message: through the engine like any command, so its limits are checked once.
pub fn publish(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::Publish { channel: args[1].clone(), message: args[2].clone() })?);
    DONE
}

/// PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | HELP.
pub fn pubsub(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let started = Instant::now();
    let hub = &ctx.feed;
    let (sub, rest) = (&args[1], &args[2..]);
    if is(sub, "CHANNELS") && rest.len() <= 1 {
        let channels = hub.channels(rest.first().map(|p| &p[..]));
        encode::array(out, channels.len());
        channels.iter().for_each(|c| encode::bulk(out, c));
    } else if is(sub, "NUMSUB") {
        encode::array(out, rest.len() * 2);
        for c in rest {
            encode::bulk(out, c);
            encode::int(out, hub.subscriber_count(c) as i64);
        }
    } else if is(sub, "NUMPAT") && rest.is_empty() {
        encode::int(out, hub.pattern_count() as i64);
    } else if is(sub, "HELP") && rest.is_empty() {
        let lines = [
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "HELP",
            "    Print this help.",
        ];
        encode::array(out, lines.len());
        lines.iter().for_each(|l| encode::simple(out, l));
    } else if ["CHANNELS", "NUMSUB", "NUMPAT", "HELP"].iter().any(|w| is(sub, w)) {
        return Err(Reject::Msg(format!(
            "ERR wrong number of arguments for 'pubsub|{}' command",
            String::from_utf8_lossy(sub).to_ascii_lowercase()
        )));
    } else {
        return Err(Reject::Msg(format!(
            "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    ctx.stats.record(Protocol::Resp, "pubsub", true, started.elapsed());
    DONE
}

/// PING in subscribed mode (RESP2): `*2 "pong" <message or "">`, as Redis answers there.
pub fn subscribed_ping(args: &[Bytes], out: &mut BytesMut) {
    encode::array(out, 2);
    encode::bulk(out, b"pong");
    encode::bulk(out, args.get(1).map_or(&b""[..], |m| &m[..]));
}

/// Encodes one delivery as Redis pushes it: `*3 message <channel> <payload>` or
/// `*4 pmessage <pattern> <channel> <payload>`. Key events are not subscribed to over RESP
/// (keyspace notifications arrive as messages), so they encode to nothing.
pub fn encode_delivery(out: &mut BytesMut, d: &Delivery) {
    if let Delivery::Message { channel, payload, pattern } = d {
        match pattern {
            None => {
                encode::array(out, 3);
                encode::bulk(out, b"message");
            }
            Some(p) => {
                encode::array(out, 4);
                encode::bulk(out, b"pmessage");
                encode::bulk(out, p);
            }
        }
        encode::bulk(out, channel);
        encode::bulk(out, payload);
    }
}

/// The subscriber fell behind: `dropped` deliveries were lost, so the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged(pub u64);

/// Encodes up to `max` waiting deliveries into `out` (one write for a batch); `Err` when the
/// lagged signal was among them.
pub fn drain(sub: &Subscriber, out: &mut BytesMut, max: usize) -> Result<usize, Lagged> {
    let mut n = 0;
    while n < max {
        let Some(d) = sub.try_recv() else { break };
        push(out, &d)?;
        n += 1;
    }
    Ok(n)
}

/// Encodes one delivery; `Err` for the lagged signal.
pub fn push(out: &mut BytesMut, d: &Delivery) -> Result<(), Lagged> {
    if let Delivery::Lagged { dropped } = d {
        return Err(Lagged(*dropped));
    }
    encode_delivery(out, d);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_have_redis_shapes() {
        let mut out = BytesMut::new();
        let c = Bytes::from_static(b"ch");
        let m = Bytes::from_static(b"hi");
        encode_delivery(
            &mut out,
            &Delivery::Message { channel: c.clone(), payload: m.clone(), pattern: None },
        );
        encode_delivery(
            &mut out,
            &Delivery::Message { channel: c, payload: m, pattern: Some(Bytes::from_static(b"c*")) },
        );
        assert_eq!(
            &out[..],
            &b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"[..]
        );
        assert_eq!(push(&mut out, &Delivery::Lagged { dropped: 3 }), Err(Lagged(3)));
    }

    /// A message delivered after the connection's last drain but before the unsubscribe (the
    /// connection loop drains before each command, so this is a publish racing the command) is
    /// owed to the client, and must precede the confirmation: after `unsubscribe b` nothing for
    /// `b` may follow, and after a count of 0 the client has left subscribed mode.
    #[test]
    fn messages_queued_before_an_unsubscribe_precede_its_confirmation() {
        use crate::config::Config;
        use crate::frontend::resp::Clients;

        let ctx = Context::for_tests(Config::default());
        let clients = Clients::default();
        let mut session = Session::new(
            1,
            "127.0.0.1:1".parse().expect("addr"),
            &clients,
            crate::auth::Caller::everything(Protocol::Resp),
        );
        let args =
            |w: &[&'static str]| w.iter().map(|s| Bytes::from_static(s.as_bytes())).collect::<Vec<_>>();
        let mut out = BytesMut::new();
        subscribe(&ctx, &mut session, &args(&["subscribe", "a", "b"]), &mut out).expect("subscribes");
        out.clear();
        let hub = &ctx.feed;
        assert_eq!(hub.publish(&Bytes::from_static(b"b"), &Bytes::from_static(b"m1")), 1);
        unsubscribe(&ctx, &mut session, &args(&["unsubscribe", "b"]), &mut out).expect("unsubscribes");
        let mut want = BytesMut::new();
        encode_delivery(
            &mut want,
            &Delivery::Message {
                channel: Bytes::from_static(b"b"),
                payload: Bytes::from_static(b"m1"),
                pattern: None,
            },
        );
        confirm(&mut want, b"unsubscribe", Some(b"b"), 1);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));

        out.clear();
        want.clear();
        assert_eq!(hub.publish(&Bytes::from_static(b"a"), &Bytes::from_static(b"m2")), 1);
        unsubscribe(&ctx, &mut session, &args(&["unsubscribe"]), &mut out).expect("unsubscribes");
        encode_delivery(
            &mut want,
            &Delivery::Message {
                channel: Bytes::from_static(b"a"),
                payload: Bytes::from_static(b"m2"),
                pattern: None,
            },
        );
        confirm(&mut want, b"unsubscribe", Some(b"a"), 0);
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        assert!(!session.subscribed());
    }

    #[test]
    fn confirmations_and_subscribed_ping() {
        let mut out = BytesMut::new();
        confirm(&mut out, b"unsubscribe", None, 0);
        subscribed_ping(&[Bytes::from_static(b"ping")], &mut out);
        subscribed_ping(&[Bytes::from_static(b"ping"), Bytes::from_static(b"x")], &mut out);
        assert_eq!(
            &out[..],
            &b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$1\r\nx\r\n"[..]
        );
    }
}
