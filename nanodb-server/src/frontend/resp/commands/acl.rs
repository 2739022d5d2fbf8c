//! ACL WHOAMI | LIST | USERS | GETUSER | SETUSER | DELUSER | CAT | SAVE | LOAD: Redis's user
//! management over the shared registry (`ctx.auth`). Everything but WHOAMI and CAT needs
//! `+@admin`; changes need authentication to be on.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::Error;

use super::{COMMANDS, Flow, Outcome, Reject, Session, Spec, is};
use crate::auth::Need;
use crate::auth::rules::{Category, User, hex};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

/// The categories ACL CAT lists (`connection` is granted to everyone).
const CATEGORIES: [&str; 5] = ["read", "write", "admin", "pubsub", "connection"];

pub fn acl(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let sub = &args[1];
    let n = args.len();
    let arity = || Reject::Msg(format!("ERR wrong number of arguments for 'acl|{}' command", lower(sub)));
    if is(sub, "WHOAMI") {
        if n != 2 {
            return Err(arity());
        }
        encode::bulk(out, session.caller.user_name().unwrap_or("default").as_bytes());
        return DONE;
    }
    if is(sub, "CAT") {
        return cat(args, out);
    }
    ctx.authorize(&session.caller, Need::Admin("acl"))?;
    let auth = &ctx.auth;
    let needs_auth_on = || {
        Reject::Msg(
            "ERR authentication is off: start the server with --requirepass or --users-file to manage users"
                .into(),
        )
    };
    if is(sub, "LIST") || is(sub, "USERS") {
        if n != 2 {
            return Err(arity());
        }
        let users = auth.users();
        encode::array(out, users.len());
        for u in users {
            if is(sub, "LIST") {
                encode::bulk(out, u.describe().as_bytes());
            } else {
                encode::bulk(out, u.name.as_bytes());
            }
        }
    } else if is(sub, "GETUSER") {
        if n != 3 {
            return Err(arity());
        }
        match auth.principal(&String::from_utf8_lossy(&args[2])) {
            Some(p) => getuser(&p.user(), out),
            None => encode::null(out),
        }
    } else if is(sub, "SETUSER") {
        if n < 3 {
            return Err(arity());
        }
        if !auth.enabled() {
            return Err(needs_auth_on());
        }
        let name = utf8(&args[2])?;
        let rules: Vec<String> = args[3..].iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect();
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        auth.set_user(name, &rules)
            .map_err(|e| Reject::Msg(format!("ERR Error in ACL SETUSER modifier '{}': {}", e.rule, e.why)))?;
        encode::ok(out);
    } else if is(sub, "DELUSER") {
        if n < 3 {
            return Err(arity());
        }
        if !auth.enabled() {
            return Err(needs_auth_on());
        }
        if args[2..].iter().any(|a| &a[..] == b"default") {
            return Err(Reject::Msg("ERR The 'default' user cannot be removed".into()));
        }
        let removed = args[2..].iter().filter(|a| auth.del_user(&String::from_utf8_lossy(a))).count();
        encode::int(out, removed as i64);
    } else if is(sub, "SAVE") || is(sub, "LOAD") {
        if n != 2 {
            return Err(arity());
        }
        if auth.file().is_none() {
            return Err(Reject::Msg(
                "ERR This server is not configured to use a users file: start it with --users-file".into(),
            ));
        }
        let done = if is(sub, "SAVE") { auth.save() } else { auth.load() };
        if let Err(e) = done {
            tracing::warn!(error = %e, "ACL {} failed", lower(sub).to_uppercase());
            return Err(Reject::Msg(format!("ERR {e}")));
        }
        encode::ok(out);
    } else {
        return Err(Reject::Msg(format!(
            "ERR unknown subcommand '{}'. Try ACL HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    DONE
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

fn utf8(b: &[u8]) -> Result<&str, Reject> {
    match std::str::from_utf8(b) {
        Ok(s) if !s.is_empty() && !s.contains(char::is_whitespace) => Ok(s),
        _ => Err(Reject::Engine(Error::InvalidArgument(
            "a user name is non-empty UTF-8 without spaces".into(),
        ))),
    }
}

/// ACL GETUSER's reply, RESP2's flat map: flags, passwords, commands, keys, channels, selectors.
fn getuser(u: &User, out: &mut BytesMut) {
    encode::array(out, 12);
    encode::bulk(out, b"flags");
    let mut flags = vec![if u.enabled { "on" } else { "off" }];
    if u.nopass {
        flags.push("nopass");
    }
    if u.all_channels {
        flags.push("allchannels");
    }
    encode::array(out, flags.len());
    for f in flags {
        encode::bulk(out, f.as_bytes());
    }
    encode::bulk(out, b"passwords");
    encode::array(out, u.passwords.len());
    for p in &u.passwords {
        encode::bulk(out, hex(p).as_bytes());
    }
    encode::bulk(out, b"commands");
    encode::bulk(out, u.category_rules().as_bytes());
    encode::bulk(out, b"keys");
    encode::bulk(out, u.key_rules().trim_start().as_bytes());
    encode::bulk(out, b"channels");
    encode::bulk(out, u.channel_rules().as_bytes());
    encode::bulk(out, b"selectors");
    encode::array(out, 0);
}

/// The category a RESP command belongs to, for ACL CAT.
fn category_of(spec: &Spec) -> &'static str {
    if spec.flags.contains(&"admin") || spec.name.starts_with("flush") {
        Category::Admin.name()
    } else if spec.flags.contains(&"pubsub") {
        Category::PubSub.name()
    } else if spec.flags.contains(&"write") {
        Category::Write.name()
    } else if spec.flags.contains(&"readonly") || spec.keys != (0, 0, 0) {
        Category::Read.name()
    } else {
        "connection"
    }
}

/// ACL CAT: the categories, or the commands in one.
fn cat(args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match args.get(2) {
        None => {
            encode::array(out, CATEGORIES.len());
            for c in CATEGORIES {
                encode::bulk(out, c.as_bytes());
            }
        }
        Some(c) => {
            let c = lower(c);
            if !CATEGORIES.contains(&c.as_str()) {
                return Err(Reject::Msg(format!("ERR Unknown category '{c}'")));
            }
            let names: Vec<&str> = COMMANDS.iter().filter(|s| category_of(s) == c).map(|s| s.name).collect();
            encode::array(out, names.len());
            for n in names {
                encode::bulk(out, n.as_bytes());
            }
        }
    }
    DONE
}
