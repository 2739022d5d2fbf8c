//! Connection commands: PING, ECHO, QUIT, SELECT, HELLO, AUTH, CLIENT, RESET (which also leaves
//! subscribed mode).

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Error, cmd};

use super::{Flow, Outcome, Reject, Session, int_arg, is, run};
use crate::auth::Caller;
use crate::frontend::Context;
use crate::frontend::resp::encode;
use crate::stats::Protocol;

const DONE: Outcome = Ok(Flow::Continue);

/// The Redis version this frontend answers as (its commands and reply shapes follow Redis 7.2).
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

pub fn ping(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    if session.subscribed() && args.len() <= 2 {
        super::pubsub::subscribed_ping(args, out);
        return DONE;
    }
    match &args[1..] {
        [] => {
            run(ctx, session, cmd::Ping {})?;
            encode::simple(out, "PONG");
        }
        [msg] => encode::bulk(out, msg),
        _ => return Err(Reject::Msg("ERR wrong number of arguments for 'ping' command".into())),
    }
    DONE
}

pub fn echo(_: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::bulk(out, &args[1]);
    DONE
}

pub fn quit(_: &Context, _: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::ok(out);
    Ok(Flow::Close)
}

pub fn select(_: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match int_arg(&args[1])? {
        0 => encode::ok(out),
        _ => return Err(Reject::Msg("ERR DB index is out of range".into())),
    }
    DONE
}

/// AUTH [user] password: as `default` when the user is left out. A failure leaves the
/// connection as it was (as Redis), is counted and logged (without the password).
pub fn auth(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (user, pass) = match &args[1..] {
        [pass] => (&b"default"[..], pass),
        [user, pass] => (&user[..], pass),
        _ => return Err(Reject::Syntax),
    };
    if !ctx.auth.enabled() && args.len() == 2 {
        return Err(Reject::Msg(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
        ));
    }
    authenticate(ctx, session, user, pass)?;
    encode::ok(out);
    DONE
}

/// Authenticates the session as `user`, or answers WRONGPASS (counted and logged).
fn authenticate(ctx: &Context, session: &mut Session<'_>, user: &[u8], pass: &[u8]) -> Result<(), Reject> {
    let name = String::from_utf8_lossy(user);
    if !ctx.auth.enabled() {
        // Auth off: everyone is the all-permitted `default`, whatever the password.
        return if name == "default" { Ok(()) } else { Err(Reject::Engine(Error::WrongPass)) };
    }
    match ctx.auth.authenticate(&name, pass) {
        Ok(principal) => {
            session.caller = Caller::user(Protocol::Resp, principal);
            Ok(())
        }
        Err(e) => {
            ctx.auth.record_failure(Protocol::Resp, &name, Some(session.addr));
            Err(Reject::Engine(e.into()))
        }
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: version 2 answers the server's map (as a
/// flat array, RESP2's map); any other version is `-NOPROTO` so clients fall back to RESP2.
pub fn hello(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    if let Some(v) = args.get(1) {
        let v = int_arg(v)
            .map_err(|_| Reject::Msg("ERR Protocol version is not an integer or out of range".into()))?;
        if v != 2 {
            return Err(Reject::Msg("NOPROTO sorry, this protocol version is not supported.".into()));
        }
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        if is(&args[i], "AUTH") && i + 2 < args.len() {
            authenticate(ctx, session, &args[i + 1], &args[i + 2])?;
            i += 3;
        } else if is(&args[i], "SETNAME") && i + 1 < args.len() {
            name = Some(&args[i + 1]);
            i += 2;
        } else {
            return Err(Reject::Msg(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[i])
            )));
        }
    }
    if !session.caller.is_authenticated() {
        return Err(Reject::Msg("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into()));
    }
    if let Some(name) = name {
        set_name(session, name)?;
    }
    encode::array(out, 14);
    encode::bulk(out, b"server");
    encode::bulk(out, b"redis");
    encode::bulk(out, b"version");
    encode::bulk(out, REDIS_COMPAT_VERSION.as_bytes());
    encode::bulk(out, b"proto");
    encode::int(out, 2);
    encode::bulk(out, b"id");
    encode::int(out, session.id as i64);
    encode::bulk(out, b"mode");
    encode::bulk(out, b"standalone");
    encode::bulk(out, b"role");
    encode::bulk(out, b"master");
    encode::bulk(out, b"modules");
    encode::array(out, 0);
    DONE
}

fn set_name(session: &mut Session<'_>, name: &Bytes) -> Result<(), Reject> {
    if name.iter().any(|&c| c <= b' ' || c > b'~') {
        return Err(Reject::Msg(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    session.name = if name.is_empty() { None } else { Some(name.clone()) };
    session.clients.set_name(session.id, session.name.clone());
    Ok(())
}

/// What CLIENT LIST and CLIENT INFO show about one connection.
struct Line<'a> {
    id: u64,
    addr: std::net::SocketAddr,
    name: Option<&'a [u8]>,
    age_s: u64,
    sub: usize,
    psub: usize,
}

fn info_line(l: &Line<'_>) -> String {
    let Line { id, addr, name, age_s, sub, psub } = l;
    // Flag P marks a connection in subscribed mode, as in Redis.
    let flags = if sub + psub > 0 { "P" } else { "N" };
    format!(
        "id={id} addr={addr} laddr= fd=0 name={} age={age_s} idle=0 flags={flags} db=0 sub={sub} psub={psub} ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|list user=default redir=-1 resp=2",
        String::from_utf8_lossy(name.unwrap_or_default())
    )
}

pub fn client(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let sub = &args[1];
    let rest = &args[2..];
    if is(sub, "LIST") {
        // Other connections' addresses and names are for admins, as in Redis.
        ctx.authorize(&session.caller, crate::auth::Need::Admin("client"))?;
    }
    if is(sub, "SETNAME") && rest.len() == 1 {
        set_name(session, &rest[0])?;
        encode::ok(out);
    } else if is(sub, "GETNAME") && rest.is_empty() {
        encode::opt_bulk(out, session.name.as_deref());
    } else if is(sub, "ID") && rest.is_empty() {
        encode::int(out, session.id as i64);
    } else if is(sub, "SETINFO") && rest.len() == 2 {
        if is(&rest[0], "LIB-NAME") {
            session.lib.0 = Some(rest[1].clone());
        } else if is(&rest[0], "LIB-VER") {
            session.lib.1 = Some(rest[1].clone());
        } else {
            return Err(Reject::Msg(format!(
                "ERR Unrecognized option '{}'",
                String::from_utf8_lossy(&rest[0])
            )));
        }
        encode::ok(out);
    } else if is(sub, "INFO") && rest.is_empty() {
        let since = session
            .clients
            .snapshot()
            .into_iter()
            .find(|(id, _)| *id == session.id)
            .map_or(0, |(_, e)| e.since.elapsed().as_secs());
        let line = info_line(&Line {
            id: session.id,
            addr: session.addr,
            name: session.name.as_deref(),
            age_s: since,
            sub: session.channels(),
            psub: session.patterns(),
        }) + "\n";
        encode::bulk(out, line.as_bytes());
    } else if is(sub, "LIST") {
        let mut text = String::new();
        for (id, e) in session.clients.snapshot() {
            text.push_str(&info_line(&Line {
                id,
                addr: e.addr,
                name: e.name.as_deref(),
                age_s: e.since.elapsed().as_secs(),
                sub: e.sub,
                psub: e.psub,
            }));
            text.push('\n');
        }
        encode::bulk(out, text.as_bytes());
    } else {
        return Err(Reject::Msg(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    DONE
}

pub fn reset(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    // As Redis: back to how a new connection starts (`default` when it needs no password).
    session.caller = ctx.auth.new_caller(Protocol::Resp);
    session.name = None;
    session.clients.set_name(session.id, None);
    session.cursors.clear();
    // Discards a transaction being queued and forgets WATCHed keys, as Redis's RESET does.
    session.multi = None;
    session.watched.clear();
    // Leaves subscribed mode without confirmations, as Redis's RESET does.
    session.unsubscribe_all();
    encode::simple(out, "RESET");
    DONE
}
